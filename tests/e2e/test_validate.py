"""A student's round trip in a real browser: open an exercise, solve it, run it, Validate.

The correct answer is the instructor's own solution (``solutions/``, the ``### BEGIN/END
SOLUTION`` lines dropped); the wrong one is the classic mistake of the course, ``tf.sign``,
whose value at 0 is 0 and whose gradient is 0 everywhere. The failure dialog must show the
check's message first, right below the failing cell and in view as the dialog opens: no
traceback frames of the grading package, no line twice, no line cut at the dialog's edge.
Screenshots of both validation dialogs go to ``docs/screenshots/`` (shown in the README).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]

ASSIGNMENT = "03_ste"
WRONG_CELL = "ste_sign_stop_gradient"
WRONG_BODY = "return tf.sign(x)"
SCREENSHOTS = ROOT / "docs" / "screenshots"
VALIDATE_TIMEOUT = 240_000  # ms: nbgrader runs the whole notebook again, TensorFlow import included
RUN_TIMEOUT = 180_000

# nbgrader 0.9.6's lab extension (validate-assignment): texts and classes of its dialog
SUCCESS_TEXT = "Success! Your notebook passes all the tests."
FAILURE_TEXT = "The following cell failed:"
MESSAGE_TEXT = "Check failed:"  # the first line of a failing check (ste_course.inside.kernel)
LAYOUT_JS = """(body, message) => {
    const view = body.getBoundingClientRect();
    const blocks = [...body.querySelectorAll('pre')];
    const block = blocks.find(b => b.textContent.includes(message));
    const box = block ? block.getBoundingClientRect() : null;
    return {
        message_visible: !!box && box.top >= view.top && box.top + 40 <= view.bottom,
        cut: blocks.filter(b => b.scrollWidth > b.clientWidth + 1).map(b => b.textContent.slice(0, 80)),
    };
}"""

STUDENT_PLUGINS = ["@jupyter/nbgrader:validate-assignment", "@jupyter/nbgrader:assignment-list"]
INSTRUCTOR_PLUGINS = [
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
]


def solution_cells(assignment: str) -> dict[str, str]:
    """grade_id -> the instructor's answer, for every solution cell of ``assignment``."""
    path = ROOT / "solutions" / assignment / f"{assignment}.ipynb"
    answers = {}
    for cell in nbformat.read(path, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            lines = [line for line in cell.source.splitlines()
                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            answers[meta["grade_id"]] = "\n".join(lines)
    return answers


def wrong_answer(assignment: str, grade_id: str, body: str) -> str:
    """The instructor's cell with its solution block replaced by ``body`` (same indent)."""
    path = ROOT / "solutions" / assignment / f"{assignment}.ipynb"
    cell = next(c for c in nbformat.read(path, as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    out, inside = [], False
    for line in cell.source.splitlines():
        if line.strip() == "### BEGIN SOLUTION":
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + body)
        elif line.strip() == "### END SOLUTION":
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def cell_index(page, grade_id: str) -> int:
    index = page.evaluate(
        """id => window.jupyterapp.shell.currentWidget.content.widgets.findIndex(
            c => (c.model.getMetadata('nbgrader') || {}).grade_id === id)""",
        grade_id,
    )
    assert index >= 0, f"no cell with nbgrader grade_id {grade_id!r} in the open notebook"
    return index


def type_into_cell(page, grade_id: str, source: str) -> None:
    """Click into the cell's editor, select its text and type ``source`` over it."""
    index = cell_index(page, grade_id)
    cell = page.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    cell.locator(".jp-InputArea-editor .cm-content").click()
    page.page.keyboard.press("Control+a")
    page.page.keyboard.insert_text(source)  # one input event: no auto-indent, no auto-brackets
    typed = page.evaluate(
        "i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()",
        index,
    )
    assert typed == source, f"the editor of {grade_id} holds {typed!r}, not what was typed"
    page.page.keyboard.press("Escape")  # back to command mode


def run_all_cells(page) -> None:
    """Run > Run All Cells from the menu bar, then wait until the kernel has finished."""
    before = page.evaluate(
        """() => Math.max(0, ...window.jupyterapp.shell.currentWidget.content.widgets
            .filter(c => c.model.type === 'code').map(c => c.model.executionCount || 0))"""
    )
    page.page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    page.page.wait_for_function(
        """before => {
            const w = window.jupyterapp.shell.currentWidget;
            const kernel = w.sessionContext.session.kernel;
            const code = w.content.widgets.filter(c => c.model.type === 'code');
            const counts = code.map(c => c.model.executionCount || 0);
            const busy = code.some(c => c.node.querySelector('.jp-InputPrompt')
                                              .textContent.includes('*'));
            return kernel.status === 'idle' && !busy && Math.max(0, ...counts) > before;
        }""",
        arg=before,
        timeout=RUN_TIMEOUT,
    )


def validate(page, screenshot: str) -> tuple[str | None, str]:
    """Press Validate, wait for nbgrader's result dialog, screenshot it, close it.

    Returns nbgrader's verdict, the body's ``validation-*`` class (``validation-success``,
    ``validation-failed``, ...), the dialog's text and, for a failure, where the check's message
    lies (``message_visible``: inside the dialog body's view as it opens) and the text blocks
    wider than their box (``cut``).
    """
    page.page.locator(".jp-NotebookPanel:visible .validate-button").click()
    dialog = page.page.locator(".jp-Dialog")
    dialog.get_by_text("Validation Results").wait_for(timeout=VALIDATE_TIMEOUT)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=str(SCREENSHOTS / screenshot))
    classes = dialog.locator(".jp-Dialog-body").get_attribute("class").split()
    result = next((c for c in classes if c.startswith("validation-")), None)
    text = dialog.inner_text()
    layout = dialog.locator(".jp-Dialog-body").evaluate(LAYOUT_JS, MESSAGE_TEXT)
    dialog.locator(".jp-mod-accept").click()
    dialog.wait_for(state="detached")
    return result, text, layout


def test_student_solves_and_validates_an_exercise(lab, page):
    source = ROOT / "exercises" / ASSIGNMENT
    if not source.is_dir():
        pytest.fail(f"exercises/{ASSIGNMENT} is missing: run `ste-course release`", pytrace=False)
    answers = solution_cells(ASSIGNMENT)
    assert WRONG_CELL in answers, f"{ASSIGNMENT} has no solution cell {WRONG_CELL!r}"
    workdir = lab.root / "validate" / ASSIGNMENT
    shutil.copytree(source, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    page.open_notebook(workdir.relative_to(lab.root) / f"{ASSIGNMENT}.ipynb")

    # the screenshots show the notebook only (the file browser's "modified ... ago" would make
    # every run's images differ)
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")

    # the student's seat: nbgrader's student tools, none of the instructor's
    plugins = page.evaluate(
        "ids => ids.map(id => window.jupyterapp.isPluginActivated(id))",
        STUDENT_PLUGINS + INSTRUCTOR_PLUGINS,
    )
    assert plugins == [True] * len(STUDENT_PLUGINS) + [False] * len(INSTRUCTOR_PLUGINS), (
        f"plugins {STUDENT_PLUGINS + INSTRUCTOR_PLUGINS} activated: {plugins} "
        "(expected the student's on and the instructor's off: run scripts/lab-config.sh)"
    )

    for grade_id, answer in answers.items():
        type_into_cell(page, grade_id, answer)
    run_all_cells(page)
    result, text, _ = validate(page, "validate-success.png")
    assert (result, SUCCESS_TEXT in text) == ("validation-success", True), text

    type_into_cell(page, WRONG_CELL, wrong_answer(ASSIGNMENT, WRONG_CELL, WRONG_BODY))
    run_all_cells(page)
    result, text, layout = validate(page, "validate-failure.png")
    assert (result, FAILURE_TEXT in text) == ("validation-failed", True), text
    assert WRONG_CELL in text, f"the failure does not name {WRONG_CELL}:\n{text}"
    assert "Traceback" not in text and "ste_course/" not in text, f"the grader's frames are shown:\n{text}"
    for failure in text.split(FAILURE_TEXT)[1:]:  # one block per failing cell: its source, then the error
        lines = [line for line in failure.splitlines() if line.strip()]
        after_source = lines[[i for i, line in enumerate(lines) if "check(" in line][-1] + 1]
        assert after_source.startswith(MESSAGE_TEXT), f"the message is not first below the cell:\n{failure}"
        assert failure.count(MESSAGE_TEXT) == 1, f"the check's message is not shown once:\n{failure}"
        bullets = [line for line in lines if line.startswith("- ")]
        assert len(bullets) == len(set(bullets)) >= 1, f"repeated message lines:\n{failure}"
    assert layout["message_visible"], f"the message is outside the dialog's view: {layout}"
    assert layout["cut"] == [], f"lines cut at the dialog's edge: {layout}"

    assert page.errors == [], "JavaScript errors:\n" + "\n".join(page.errors)
