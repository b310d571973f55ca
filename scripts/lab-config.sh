#!/usr/bin/env bash
# Configure the course's JupyterLab for students, at the level of the Python environment
# (sys-prefix), so that every `jupyter lab` started from it behaves the same (make lab, Binder):
#   - nbgrader's student tools stay on: the Validate button, the Assignment List;
#   - the instructor's tools are off: formgrader, the create-assignment panel, the course list
#     (front-end plugins and server extensions); `make lab-instructor` turns them back on for
#     one launch with JUPYTER_CONFIG_PATH=jupyter-config/instructor;
#   - nothing is fetched at start-up: the announcements plugin (news feed, update check, and
#     its "get notified about news?" pop-up) is off, and on the server side there is no news
#     feed, no update check and no online extension search (jupyter-config/jupyter_lab_config.json);
#   - reading changes nothing: the server saves a notebook's language_info as committed, so
#     opening a chapter never leaves it modified in git (jupyter-config/jupyter_server_config.py).
# Disabled plugins are also locked, so that the Plugin Manager cannot switch them back on.
# Usage: PYTHON=.venv/bin/python scripts/lab-config.sh   (idempotent; make setup runs it once)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
# The lists are jupyter-config/student's, the set-up `ste-course hub` also gives its students
# (JUPYTER_CONFIG_PATH, above any user's own ~/.jupyter): what it turns off is turned off here.
off() {  # the names a JSON file of jupyter-config/student maps to false/true under its keys
    "$PYTHON" -c 'import functools, json, sys
data = functools.reduce(dict.get, sys.argv[2:-1], json.load(open(sys.argv[1])))
print(" ".join(k for k, v in data.items() if v == (sys.argv[-1] == "true")))' "jupyter-config/student/$1" "${@:2}"
}
read -ra plugins <<< "$(off labconfig/page_config.json disabledExtensions true)"
read -ra server_extensions <<< "$(off jupyter_server_config.json ServerApp jpserver_extensions false)"
"$PYTHON" -m jupyter labextension disable --level=sys_prefix "${plugins[@]}"
"$PYTHON" -m jupyter labextension lock --level=sys_prefix "${plugins[@]}"
"$PYTHON" -m jupyter server extension disable --sys-prefix "${server_extensions[@]}"
prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
install -D -m 644 jupyter-config/jupyter_lab_config.json "$prefix/etc/jupyter/jupyter_lab_config.json"
install -D -m 644 jupyter-config/jupyter_server_config.py "$prefix/etc/jupyter/jupyter_server_config.py"
echo "lab-config: student set-up of JupyterLab in $prefix (instructor tools and announcements off)"
