# Two commands on a fresh machine:  `make lab`  and  `make test`.
# Both create .venv (python3 -m venv) and install the pins in requirements.txt once;
# a stamp keyed on the pin file's hash makes the second run skip the install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIN_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(PIN_HASH)
# JupyterLab's student set-up (scripts/lab-config.sh), redone when the venv or the script changes
LAB_STAMP := $(VENV)/.lab-configured
# MathJax for the website (make site), fetched once with npm: book/vendor-mathjax.sh
MATHJAX := book/vendor/mathjax/VERSION
# Token authentication stays on (Jupyter's default); localhost only. Root (containers, CI) needs allow_root.
# The student's view for `make lab`: the chapters and the exercises, not solutions/ (links in .venv)
STUDENT_VIEW := $(VENV)/student-view
LAB_FLAGS := --ServerApp.ip=127.0.0.1 \
	$(if $(filter 0,$(shell id -u)),--ServerApp.allow_root=True)

export TF_CPP_MIN_LOG_LEVEL := 2
export TF_ENABLE_ONEDNN_OPTS := 0
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup system-deps grade-deps shared-venv test lab lab-instructor grade release check similarity bench clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

$(LAB_STAMP): $(STAMP) scripts/lab-config.sh jupyter-config/jupyter_lab_config.json jupyter-config/jupyter_server_config.py \
		jupyter-config/student/labconfig/page_config.json jupyter-config/student/jupyter_server_config.json
	PYTHON=$(BIN)/python scripts/lab-config.sh
	@touch $@

setup: $(STAMP) $(LAB_STAMP)

# Debian packages by need: `make test` all of them (bubblewrap, chromium, PostgreSQL 15),
# `make grade` only the sandbox's bubblewrap.
system-deps:
	@scripts/system-deps.sh test

grade-deps:
	@scripts/system-deps.sh grade

# A copy of the course environment every user can read (/opt/ste-course/venv, Debian's python3.11):
# for JupyterHub users' servers and grading as an unprivileged user.
shared-venv:
	@scripts/shared-venv.sh requirements-hub.txt  # the same pins as hub-deps: no reinstall between them

# The classroom (as root): the shared venv with jupyterhub (requirements-hub.txt), the proxy
# from npm and the feedback link's JupyterLab extension (hub/install.sh); then a JupyterHub for
# ROSTER (a CSV with a student_id column) on 127.0.0.1:8000 with assignment 03_ste published
# (see docs/classroom.md).
ROSTER ?= roster.csv
.PHONY: hub-deps hub hub-stop
hub-deps:
	@hub/install.sh

# The hub runs from the shared venv only (no .venv, so TensorFlow is installed once); from this
# folder, the course root. HUB_FLAGS=--background detaches it (STATE/hub.log, make hub-stop).
SHARED_VENV ?= $(or $(STE_SHARED_VENV),/opt/ste-course/venv)
HUB_FLAGS ?=
hub: hub-deps
	$(SHARED_VENV)/bin/ste-course hub --students $(ROSTER) --publish 03_ste $(HUB_FLAGS)

hub-stop:
	$(SHARED_VENV)/bin/ste-course hub --stop

# Every test: the release is in sync and every solution passes (ste-course check), then pytest
# (ste_utils, grader, adversarial suite, browser tests, and the course chapters via nbval).
test: setup system-deps hub-deps $(MATHJAX)
	$(BIN)/ste-course check --strict
	$(BIN)/python -m pytest

$(STUDENT_VIEW):
	mkdir -p $@ && ln -sfn ../../course $@/course && ln -sfn ../../exercises $@/exercises

# The student's seat: the landing page open (the printed URL opens it too), course/ and exercises/
# (not solutions/), nbgrader's Validate button; no Assignment List (self-study has no exchange:
# jupyter-config/self-study; `make hub` has one).
lab: setup $(STUDENT_VIEW)
	JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter-config/self-study $(BIN)/jupyter lab $(LAB_FLAGS) \
		--ServerApp.root_dir=$(CURDIR)/$(STUDENT_VIEW) --LabApp.default_url=/lab/tree/course/00_start_here.ipynb

# The instructor's seat: formgrader on the course folder `grade` wrote (GRADED, default $(OUT);
# its nbgrader_config.py names the real gradebook), never on the checkout (no stray gradebook.db).
GRADED ?= $(OUT)
lab-instructor: setup
	@test -f $(GRADED)/nbgrader_config.py || { echo "make lab-instructor: no course folder written by \
	ste-course grade in $(GRADED)/ (make grade OUT=$(GRADED) first, or GRADED=FOLDER)" >&2; exit 2; }
	cd $(GRADED) && JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter-config/instructor $(CURDIR)/$(BIN)/jupyter lab \
		$(LAB_FLAGS) --ServerApp.root_dir=$(abspath $(GRADED))

release: setup
	$(BIN)/ste-course release --strict

check: setup
	$(BIN)/ste-course check --strict

# The instructor's commands (the same as `. .venv/bin/activate` and then `ste-course ...`):
# SUBMISSIONS and OUT choose what `make grade` grades (default: the example class).
SUBMISSIONS ?= examples/submissions
OUT ?= graded
grade: setup grade-deps
	$(BIN)/ste-course grade $(SUBMISSIONS) --out $(OUT)

similarity: setup
	$(BIN)/ste-course similarity $(SUBMISSIONS) --out similarity

bench: setup
	$(BIN)/python bench/ste_overhead.py

.PHONY: bench-chapters
bench-chapters: setup
	$(BIN)/python bench/chapter_times.py

# The course as a website (jupyter-book; book/): every chapter executed (cached: a rebuild runs
# only the chapters whose code changed, all of them when ste_utils or a pin changes), the
# exercises as read-only pages with a Binder button, references, search. No network: MathJax is
# fetched once at set-up (book/vendor-mathjax.sh, npm, a pinned version). Open book/_build/html/index.html.
$(MATHJAX): book/vendor-mathjax.sh
	book/vendor-mathjax.sh

# REPOSITORY=https://github.com/ORG/REPO: the repository the Binder buttons open, for this build
# (default: repository.url in book/_config.yml). The GitHub Pages workflow passes its own.
.PHONY: site
site: setup $(MATHJAX)
	$(BIN)/python book/build.py $(if $(REPOSITORY),--repository $(REPOSITORY))

clean:
	rm -rf $(VENV) graded .pytest_cache .hypothesis book/_build book/vendor book/generated
