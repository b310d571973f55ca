"""A written answer cannot run in the instructor's formgrader (issue 21, attack 2).

nbgrader 0.9.6's formgrade template renders a markdown cell with ``markdown2html`` and no
sanitising, on a page that runs scripts with the instructor's session. A student's written
answer carrying ``<script>``, ``onerror=``, ``<svg onload=>``, a ``javascript:`` link and a
script that sets its own manual score through formgrader's API is graded (the real grader, no
sandbox needed: nothing of it runs), then opened in formgrader in Chromium, as the instructor
would: nothing ran, the score is unchanged, and the answer is shown, framed as the student's.
One browser session, one page.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from conftest import ROOT, Lab, _free_port, _log_tail, _stop

from ste_course.authoring.source import load_assignments
from ste_course.grading.run import grade

MARK = "window.__stolen = (window.__stolen || 0) + 1"
SET_SCORE = """
(async () => {
  const base = location.pathname.split('/formgrader/')[0];
  const sub = location.pathname.split('/submissions/')[1].split('/')[0];
  const xsrf = (document.cookie.match(/\\b_xsrf=([^;]*)\\b/) || [])[1];
  const grades = await (await fetch(base + '/formgrader/api/grades?submission_id=' + sub)).json();
  for (const g of grades) {
    if (g.name !== 'why') continue;
    await fetch(base + '/formgrader/api/grade/' + g.id, {method: 'PUT',
      headers: {'X-CSRFToken': xsrf, 'Content-Type': 'application/json'},
      body: JSON.stringify({manual_score: 2, extra_credit: 5})});
  }
  document.title = 'PWNED';
})();
"""
ANSWER = (f"Outside the window the sign is flat.\n\n<script>{MARK};{SET_SCORE}</script>\n"
          f"<img src=x onerror=\"{MARK}\"> <svg onload=\"{MARK}\"><circle r=1 /></svg>\n\n"
          f"[more](javascript:{MARK}) <a href=\"javascript:{MARK}\">also</a>\n\n"
          "<div class=\"text-success\" style=\"color:green\" id=\"score\">2 / 2 points</div>\n")


def _cell(cell_type, source, grade_id, **nbgrader):
    meta = {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3, "solution": False,
            "task": False, **nbgrader}
    cell = {"cell_type": cell_type, "id": grade_id, "metadata": {"nbgrader": meta}, "source": source}
    if cell_type == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _graded(tmp_path: Path) -> Path:
    nb = json.loads((ROOT / "tests" / "adversarial" / "source" / "adv" / "adv.ipynb").read_text())
    nb["cells"][-1:-1] = [_cell("markdown", "Why is the gradient clipped? (2 points)", "why_prompt", locked=True),
                          _cell("markdown", "### BEGIN SOLUTION\nThe window.\n### END SOLUTION", "why",
                                grade=True, solution=True, points=2)]
    (tmp_path / "solutions" / "adv").mkdir(parents=True)
    (tmp_path / "solutions" / "adv" / "adv.ipynb").write_text(json.dumps(nb))
    nb["cells"][-2]["source"] = ANSWER
    (tmp_path / "submitted" / "s1" / "adv").mkdir(parents=True)
    (tmp_path / "submitted" / "s1" / "adv" / "adv.ipynb").write_text(json.dumps(nb))
    out = tmp_path / "graded"
    bindir = str(Path(sys.executable).parent)  # nbgrader's gradebook runs `alembic` by name
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    grade(tmp_path / "submitted", out, load_assignments(tmp_path / "solutions"), "secret", jobs_n=1,
          sandbox=False, progress=False)
    return out


def _formgrader(root: Path, state: Path) -> Lab:
    """A Jupyter server in ``root`` (``graded/``) with nbgrader's formgrader, as the instructor
    runs it (``nbgrader formgrader`` in ``graded/``)."""
    token, port = secrets.token_hex(16), _free_port()
    config = state / "config"
    config.mkdir(parents=True)
    (config / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"nbgrader.server_extensions.formgrader": True}}}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTER_DATA_DIR=str(state / "data"))
    env.pop("JUPYTER_CONFIG_PATH", None)
    command = [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")
    log = state / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, root, log, process)
    deadline = time.monotonic() + 120
    while True:
        try:
            server.api("api/status")
            return server
        except (OSError, urllib.error.URLError):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(server)
                raise RuntimeError(f"the formgrader server did not start:\n{_log_tail(log)}")
            time.sleep(0.5)


def test_a_hostile_written_answer_runs_nothing_in_formgrader(browser, tmp_path):
    from nbgrader.api import Gradebook

    out = _graded(tmp_path)
    db = f"sqlite:///{out / 'gradebook.db'}"
    with Gradebook(db) as gb:
        submission = gb.find_submission_notebook("adv", "adv", "s1").id
        before = gb.find_grade("why", "adv", "adv", "s1").to_dict()
    server = _formgrader(out, tmp_path / "state")
    context = browser.new_context()
    try:
        page = context.new_page()
        console = []
        page.on("console", lambda m: console.append(m.text))
        page.on("pageerror", lambda e: console.append(str(e)))
        page.goto(f"{server.url}/login")  # the instructor's session: a login cookie, as on a hub
        page.fill("input[name=password]", server.token)
        page.locator("[type=submit]").first.click()
        page.wait_for_load_state("networkidle")
        page.goto(f"{server.url}/formgrader/submissions/{submission}/")
        page.wait_for_load_state("networkidle")
        page.locator("text=Outside the window the sign is flat").first.wait_for(timeout=30_000)
        for link in page.locator("a").all():  # a click on every link of the answer runs nothing either
            if "also" == link.inner_text().strip() or "more" == link.inner_text().strip():
                link.click(no_wait_after=True)
        page.wait_for_timeout(1500)
        ran = page.evaluate("window.__stolen || 0")
        title = page.title()
        hrefs = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')")
        framed = page.locator("[title='written by the student']").count()
        imitated = page.locator("#score").count() + page.locator(".text-success:has-text('2 / 2 points')").count()
    finally:
        context.close()
        _stop(server)
    with Gradebook(db) as gb:
        after = gb.find_grade("why", "adv", "adv", "s1").to_dict()
    assert (after["manual_score"], after["extra_credit"], after["needs_manual_grade"]) == \
           (before["manual_score"], before["extra_credit"], before["needs_manual_grade"]) == (None, None, True), (after, console)
    assert ran == 0 and title != "PWNED", (ran, title, console)
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")], hrefs
    assert framed == 1 and imitated == 0, (framed, imitated)
