"""Reading changes nothing: a student who opens a chapter and an exercise in JupyterLab, lets
the kernel start, waits past an autosave (and even presses Save) and closes them finds
`git status` clean, so pulling the next course update never conflicts with files only read.

JupyterLab marks a notebook modified when its kernel reports ``language_info`` (version,
mimetype, ...) and autosave then writes it; the server's pre-save hook
(jupyter-config/jupyter_server_config.py, installed by scripts/lab-config.sh) keeps only the
language's name, which is what the committed notebooks hold.
"""

from __future__ import annotations

import time

READ = ["course/03_straight_through_estimator.ipynb", "exercises/03_ste/03_ste.ipynb"]


def test_opening_and_closing_notebooks_leaves_git_status_clean(clone_page, clone_git, autosave_seconds):
    page = clone_page
    for notebook in READ:
        page.open_notebook(notebook)
        time.sleep(3 * autosave_seconds)  # the kernel's language_info has arrived; autosave ran
        page.page.keyboard.press("Control+s")
        time.sleep(1)
        assert page.page.locator(".jp-Dialog").count() == 0, f"{notebook}: a dialog opened"
        page.evaluate("() => window.jupyterapp.commands.execute('application:close-all')")
        page.page.wait_for_function("() => !window.jupyterapp.shell.currentWidget"
                                    " || !window.jupyterapp.shell.currentWidget.context")
    status = clone_git("status", "--porcelain", "--untracked-files=all")
    diff = clone_git("diff")
    assert status == "", f"reading changed the student's clone:\n{status}\n{diff[:3000]}"
    assert page.errors == [], "JavaScript errors:\n" + "\n".join(page.errors)
