"""The classroom, end to end: a real JupyterHub (``ste-course hub``), two students and an
instructor, nbgrader's exchange between them, in headless Chromium.

Student A fetches 03_ste in the Assignment List, answers it correctly and submits; student B
submits a wrong answer. The instructor collects (``ste-course collect``), grades sandboxed
(``ste-course grade``) and returns the feedback (``ste-course return-feedback``). Each student
fetches feedback in the Assignment List and reads their own score (A 10/10, B less). Neither
can read the other's files, submission or feedback, nor ``solutions/`` or the grading secret:
checked as those users on the file system and through the hub's URLs. Screenshots of A's
Assignment List and feedback page go to ``docs/screenshots/``.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from hub_fixtures import SAFE_PATH, STE_COURSE, as_user, hub  # noqa: F401 (hub is a fixture)
from test_validate import WRONG_BODY, WRONG_CELL, solution_cells, wrong_answer

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = "03_ste"
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
UI_TIMEOUT = 120_000  # ms: a user's server starts, nbgrader commands take a few seconds each


def login(browser, hub, user: str):
    """A fresh browser context logged in as ``user``, on their JupyterLab's Assignment List."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login?next=%2Fhub%2Fspawn%3Fnext%3D%252Fuser%252F{user}%252Flab")
    page.fill("#username_input", user)
    page.fill("#password_input", hub.passwords[user])
    page.click("#login_submit")
    page.wait_for_url(re.compile(re.escape(hub.url) + rf"/user/{user}/lab.*"), timeout=UI_TIMEOUT)
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Nbgrader").click(timeout=UI_TIMEOUT)
    page.locator(".lm-Menu-item", has_text="Assignment List").click()
    return context, page


def released_row(page):
    return page.locator("#released_assignments_list .list_item", has_text=ASSIGNMENT)


def answer(path: Path, correct: bool) -> None:
    """Write the student's answer into their fetched notebook (the file keeps its owner)."""
    nb = nbformat.read(path, as_version=4)
    answers = solution_cells(ASSIGNMENT)
    if not correct:
        answers = {WRONG_CELL: wrong_answer(ASSIGNMENT, WRONG_CELL, WRONG_BODY)}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and grade_id in answers:
            cell.source = answers[grade_id]
    nbformat.write(nb, path)


def fetch_and_submit(browser, hub, user: str, correct: bool, screenshot: str | None = None):
    context, page = login(browser, hub, user)
    row = released_row(page)
    row.get_by_role("button", name="Fetch").click(timeout=UI_TIMEOUT)
    fetched = page.locator("#fetched_assignments_list .list_item", has_text=ASSIGNMENT)
    fetched.first.wait_for(timeout=UI_TIMEOUT)
    notebook = hub.home(user) / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert notebook.is_file(), f"the Assignment List fetched nothing into {notebook}"
    answer(notebook, correct)
    fetched.first.get_by_role("button", name="Submit").click()
    page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first.wait_for(timeout=UI_TIMEOUT)
    if screenshot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator(".jp-DirListing-item", has_text="exercises").wait_for(timeout=UI_TIMEOUT)  # the home listed
        page.screenshot(path=str(SCREENSHOTS / screenshot))
    return context, page


def ste_course(*args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{SAFE_PATH}"}
    out = subprocess.run([str(STE_COURSE), *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, f"ste-course {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def view_feedback(page):
    """Click "view feedback" in the Assignment List: the page opens in JupyterLab's HTML viewer
    (hub/labextension), untrusted (no script runs, none is needed); return its frame."""
    page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first \
        .get_by_text("view feedback").click(timeout=UI_TIMEOUT)
    viewer = page.locator(".jp-HTMLViewer iframe")
    viewer.wait_for(timeout=UI_TIMEOUT)
    assert viewer.get_attribute("sandbox") == "allow-same-origin", viewer.get_attribute("sandbox")
    return page.frame_locator(".jp-HTMLViewer iframe")


def fetch_feedback(hub, user: str, page, screenshot: str | None = None) -> str:
    """Fetch Feedback in the Assignment List, then view the fetched page; return its score line."""
    page.locator("#refresh_assignments_list").click()
    submitted = page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first
    submitted.get_by_text("feedback available to fetch").wait_for(timeout=UI_TIMEOUT)
    submitted.get_by_role("button", name="Fetch Feedback").click()
    submitted = page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first
    submitted.get_by_text("view feedback").wait_for(timeout=UI_TIMEOUT)
    pages = sorted((hub.home(user) / "exercises" / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html"))
    assert len(pages) == 1, f"fetched feedback of {user}: {pages}"
    score = view_feedback(page).locator(".score").first.inner_text(timeout=UI_TIMEOUT)
    if screenshot:
        page.screenshot(path=str(SCREENSHOTS / screenshot), full_page=False)
    return score


INSTRUCTOR_TOOLS = {"@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader",
                    "@jupyter/nbgrader:course-list"}
ANNOUNCEMENTS = "@jupyterlab/apputils-extension:announcements"
STUDENT_TOOLS = {"@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment"}
NEWS_POP_UP = "Would you like to get notified about official Jupyter news?"


def disabled_plugins(page) -> set[str]:
    """The plugins the user's server disabled in the page config it sent (jupyter-config-data)."""
    return set(json.loads(page.locator("#jupyter-config-data").text_content())["disabledExtensions"])


def switch_tools_on_in_own_config(user: str, home: Path) -> None:
    """What a student may write in their own ~/.jupyter (as JupyterLab's Plugin Manager does at the
    user level): the instructor's tools and the news back on."""
    page_config = json.dumps({"disabledExtensions": dict.fromkeys(INSTRUCTOR_TOOLS | {ANNOUNCEMENTS}, False)})
    labconfig = home / ".jupyter" / "labconfig"
    made = as_user(user, "mkdir", "-p", str(labconfig))
    assert made.returncode == 0, made.stderr
    written = subprocess.run(["runuser", "-u", user, "--", "tee", str(labconfig / "page_config.json")],
                             input=page_config, capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr


def status(page, url: str) -> tuple[int, str]:
    response = page.request.get(url, max_redirects=0)
    return response.status, response.text()[:2000]


def test_a_class_on_the_hub(hub, browser, tmp_path):
    a, b = hub.students
    switch_tools_on_in_own_config(b, hub.home(b))
    ctx_a, page_a = fetch_and_submit(browser, hub, a, correct=True, screenshot="hub-assignment-list.png")
    ctx_b, page_b = fetch_and_submit(browser, hub, b, correct=False)
    try:
        # a student's lab: the Assignment List and Validate, no instructor's tools nor news pop-up
        # (seconds after start-up, when the pop-up shows), B's own ~/.jupyter notwithstanding
        for user, page in ((a, page_a), (b, page_b)):
            disabled = disabled_plugins(page)
            assert INSTRUCTOR_TOOLS | {ANNOUNCEMENTS} <= disabled and not STUDENT_TOOLS & disabled, (user, sorted(disabled))
            assert page.get_by_text("Create Assignment").count() == 0, f"{user} has the Create Assignment panel"
            assert page.get_by_text(NEWS_POP_UP).count() == 0, f"{user} is asked about Jupyter news"

        # what students see: the chapters and their fetched assignment, never solutions/
        home = hub.home(a)
        assert (home / "course" / "00_start_here.ipynb").is_file()
        assert not (home / "solutions").exists()
        assert status(page_a, f"{hub.url}/user/{a}/api/contents/solutions")[0] == 404

        # the exchange keeps submissions apart: B cannot list inbound nor read A's submission
        inbound = hub.exchange / hub.course / "inbound"
        mine = [p for p in inbound.iterdir() if p.name.startswith(f"{a}+")]
        assert len(mine) == 1, mine
        assert as_user(b, "ls", str(inbound)).returncode != 0
        assert as_user(b, "cat", str(mine[0] / f"{ASSIGNMENT}.ipynb")).returncode != 0
        assert as_user(b, "cat", str(mine[0] / "submission_secret.txt")).returncode != 0
        assert as_user(a, "cat", str(mine[0] / f"{ASSIGNMENT}.ipynb")).returncode == 0  # their own
        assert as_user(hub.instructor, "cat", str(mine[0] / f"{ASSIGNMENT}.ipynb")).returncode == 0
        # nor A's home, the repository's solutions or the grading secret
        assert as_user(b, "ls", str(home)).returncode != 0
        secret = tmp_path / "secret"
        for path in (home / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", secret,
                     ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"):
            assert as_user(b, "cat", str(path)).returncode != 0, f"{b} can read {path}"
        # nor the solutions through the checkout's history, nor rename A's submission away (sticky)
        history = as_user(b, "git", "-c", "safe.directory=*", "-C", str(ROOT), "show",
                          f"HEAD:solutions/{ASSIGNMENT}/{ASSIGNMENT}.ipynb")
        assert history.returncode != 0 and "ste_sign" not in history.stdout, history.stdout[:300]
        assert as_user(b, "mv", str(mine[0]), f"{mine[0]}x").returncode != 0 and mine[0].is_dir()

        # the instructor's loop: collect (timestamps kept), grade sandboxed, return feedback
        submitted, graded = tmp_path / "submitted", hub.base / "graded-by-root"  # a folder students may enter
        exchange = ["--exchange", str(hub.exchange), "--course", hub.course]
        out = ste_course("collect", "--out", str(submitted), *exchange)
        assert "2 submission(s) collected" in out, out
        for student in (a, b):
            stamp = (submitted / student / ASSIGNMENT / "timestamp.txt").read_text()
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", stamp), stamp
        ste_course("grade", str(submitted), "--out", str(graded), "--secret-file", str(secret),
                   "--assignment", ASSIGNMENT, "--jobs", "1")
        with (graded / "grades.csv").open(encoding="utf-8") as fh:
            scores = {r["student_id"]: (float(r["score"]), float(r["max_score"])) for r in csv.DictReader(fh)}
        assert scores[a] == (10.0, 10.0), scores
        assert scores[b][0] < scores[b][1] == 10.0, scores
        out = ste_course("return-feedback", "--graded", str(graded), "--submissions", str(submitted), *exchange)
        assert "2 feedback page(s) returned" in out, out
        # what the grader wrote (gradebook, its WAL, feedback, results, grades.csv) is not B's to read
        paths = [graded, *graded.rglob("*")]
        listed = as_user(b, "ls", *[str(p) for p in paths if p.is_dir()])
        read = as_user(b, "cat", *[str(p) for p in paths if p.is_file()])
        assert listed.stdout == "" and read.stdout == "", (listed.stdout[:300], read.stdout[:300])

        # each student fetches and reads their own score
        assert fetch_feedback(hub, a, page_a, screenshot="hub-feedback.png") == "Score: 10 / 10"
        score_b = fetch_feedback(hub, b, page_b)
        assert re.fullmatch(r"Score: \d+(\.\d+)? / 10", score_b) and score_b != "Score: 10 / 10", score_b

        # feedback files belong to their student only; the hub's URLs keep users apart
        uid_b = pwd.getpwnam(b).pw_uid
        for page in (hub.exchange / hub.course / "feedback").glob("*.html"):
            readable = as_user(b, "cat", str(page)).returncode == 0
            assert readable == (page.stat().st_uid == uid_b), f"{b} reads {page}: {readable}"
        code, body = status(page_b, f"{hub.url}/user/{a}/files/exercises/{ASSIGNMENT}/{ASSIGNMENT}.ipynb")
        assert code in (302, 403, 404) and "ste_sign" not in body, (code, body[:300])
        code, body = status(page_b, f"{hub.url}/user/{a}/api/contents/exercises/{ASSIGNMENT}")
        assert code in (302, 403, 404) and ASSIGNMENT + ".ipynb" not in body, (code, body[:300])
    finally:
        ctx_a.close()
        ctx_b.close()


def as_instructor(hub, *args: str, timeout: int = 900, cwd: Path | None = None) -> str:
    """``ste-course ARGS`` as the hub's instructor from the shared venv, in their home (what a
    terminal of the instructor's server runs): no root."""
    venv = "/opt/ste-course/venv/bin"
    home = hub.home(hub.instructor)
    out = subprocess.run(["runuser", "-u", hub.instructor, "--", "env", f"PATH={venv}:{SAFE_PATH}", f"HOME={home}",
                          "TF_CPP_MIN_LOG_LEVEL=2", f"{venv}/ste-course", *args],
                         capture_output=True, text=True, timeout=timeout, cwd=cwd or home)
    assert out.returncode == 0, f"ste-course {' '.join(args)} as {hub.instructor} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_a_hand_grade_in_formgrader_on_the_hub_reaches_the_student(hub, browser):
    """The instructor grades in their server's terminal into ``~/graded`` (the course folder
    ``ste-course hub --graded`` gave them), opens formgrader through the hub, sets a manual score
    and a comment on A's submission; ``return-feedback`` renders A's page again from that
    gradebook and A fetches it: both are there. Reuses the submissions of the test above."""
    from nbgrader.api import Gradebook

    a = hub.students[0]
    graded, home = hub.base / "graded", hub.home(hub.instructor)
    assert os.readlink(home / "graded") == str(graded)
    exchange = ["--exchange", str(hub.exchange), "--course", hub.course]
    if not [p for p in (hub.exchange / hub.course / "inbound").iterdir() if p.name.startswith(f"{a}+")]:
        context, _page = fetch_and_submit(browser, hub, a, correct=True)  # this test run alone
        context.close()
    # the instructor's terminal on the hub, no root: publish again (the graders write outbound),
    # collect (the graders' group reads inbound, secrets included) and grade (the unprivileged
    # sandbox) into ~/graded
    release = hub.base / "exercises"  # the instructor's copy (the checkout may sit where only root enters)
    if not (release / ASSIGNMENT).exists():
        shutil.copytree(ROOT / "exercises" / ASSIGNMENT, release / ASSIGNMENT)
    out = as_instructor(hub, "publish", ASSIGNMENT, "--exercises", str(release), *exchange)
    assert f"published {ASSIGNMENT}" in out, out
    submitted = home / "submitted"
    as_instructor(hub, "collect", "--out", str(submitted), "--student", a, *exchange)
    as_instructor(hub, "grade", str(submitted), "--out", str(home / "graded"), "--assignment", ASSIGNMENT,
                  "--jobs", "1", cwd=hub.base / "state" / "course")  # the course copy the hub gave the graders
    db = f"sqlite:///{graded}/gradebook.db"
    with Gradebook(db) as gb:
        notebook = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, a)
        submission, grade_id = notebook.id, sorted(g.name for g in notebook.grades)[0]
        max_score = gb.find_grade(grade_id, ASSIGNMENT, ASSIGNMENT, a).max_score

    comment = f"Hand comment {os.getpid()}: look at the clip window again."
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{hub.url}/hub/login?next=%2Fhub%2Fspawn%3Fnext%3D%252Fuser%252F{hub.instructor}%252Flab")
        page.fill("#username_input", hub.instructor)
        page.fill("#password_input", hub.passwords[hub.instructor])
        page.click("#login_submit")
        page.wait_for_url(re.compile(re.escape(hub.url) + rf"/user/{hub.instructor}/lab.*"), timeout=UI_TIMEOUT)
        disabled = disabled_plugins(page)  # the instructor's tools on in the instructor's lab
        assert not (INSTRUCTOR_TOOLS | STUDENT_TOOLS) & disabled and ANNOUNCEMENTS in disabled, sorted(disabled)
        page.get_by_text("Create Assignment").first.wait_for(timeout=UI_TIMEOUT)  # the panel a student has not
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{hub.url}/user/{hub.instructor}/formgrader/submissions/{submission}/")
        score = page.locator(f"input.score#{grade_id}")
        score.wait_for(timeout=UI_TIMEOUT)
        # the notebook's maths ($+1$, ...) typeset by the MathJax 2 the instructor's server serves
        page.locator(".MathJax_CHTML").first.wait_for(timeout=UI_TIMEOUT)
        assert not [e for e in errors if "MathJax" in e], errors
        page.wait_for_load_state("networkidle")  # formgrader's views are bound to the inputs
        score.fill("1")
        score.press("Tab")  # formgrader saves on change
        box = page.locator(f"textarea#{grade_id}-comment")
        if box.count() == 0:
            box = page.locator("textarea.comment").first
        box.fill(comment)
        box.press("Tab")
        deadline = time.monotonic() + 30
        while True:  # formgrader saves each change with a request of its own
            with Gradebook(db) as gb:
                notebook = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, a)
                manual = {g.name: g.manual_score for g in notebook.grades}
                comments = [c.manual_comment for c in notebook.comments if c.manual_comment]
            if (manual[grade_id] is not None and comments) or time.monotonic() > deadline:
                break
            page.wait_for_timeout(500)
    finally:
        context.close()
    assert manual[grade_id] == 1.0 != max_score, (manual, errors)
    assert comments == [comment], (comments, errors)

    # return-feedback from the instructor's terminal too (the graders write feedback/)
    out = as_instructor(hub, "return-feedback", "--graded", str(home / "graded"), "--submissions", str(submitted),
                        "--student", a, *exchange)
    assert "1 feedback page(s) returned" in out, out
    context, page = login(browser, hub, a)
    try:
        page.locator("#refresh_assignments_list").click()
        submitted_row = page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT).first
        submitted_row.get_by_role("button", name="Fetch Feedback").click(timeout=UI_TIMEOUT)
        submitted_row.get_by_text("view feedback").wait_for(timeout=UI_TIMEOUT)
        # the page opens (read again if JupyterLab restored it from the first test, before this fetch)
        body = view_feedback(page).locator("body")
        body.get_by_text(comment).wait_for(timeout=UI_TIMEOUT)
        text = body.inner_text()
    finally:
        context.close()
    assert comment in text, text[:2000]
    assert f"1 / {max_score:g} (by hand)" in text, text[:2000]
