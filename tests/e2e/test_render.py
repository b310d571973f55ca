"""Every chapter and every exercise opens in the browser: cells shown, Markdown rendered, a
live kernel that runs a cell, and no JavaScript error on the way."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL_TIMEOUT = 60_000  # ms


def test_notebook_renders_with_a_live_kernel(lab, page, notebook):
    if notebook is None:
        pytest.fail("no notebooks in course/*.ipynb or exercises/*/*.ipynb", pytrace=False)
    cells = nbformat.read(ROOT / notebook, as_version=4).cells
    page.open_notebook(notebook)

    shown = page.evaluate(
        """() => {
            const w = window.jupyterapp.shell.currentWidget;
            return {
                cells: w.content.widgets.length,
                markdown: w.content.node.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown').length,
                dialogs: document.querySelectorAll('.jp-Dialog').length,
            };
        }"""
    )
    assert shown["cells"] == len(cells), f"{notebook}: {shown['cells']} cells shown of {len(cells)}"
    if any(cell.cell_type == "markdown" for cell in cells):
        assert shown["markdown"] > 0, f"{notebook}: no Markdown cell rendered"
    assert shown["dialogs"] == 0, f"{notebook}: a dialog opened: {page.page.locator('.jp-Dialog').inner_text()}"

    reply = page.page.evaluate(
        """async () => {
            const session = window.jupyterapp.shell.currentWidget.sessionContext;
            const kernel = session.session.kernel;
            const future = kernel.requestExecute({code: '6 * 7', store_history: false});
            let result = null;
            future.onIOPub = msg => {
                if (msg.header.msg_type === 'execute_result') result = msg.content.data['text/plain'];
            };
            const reply = await future.done;
            return {status: reply.content.status, result, kernel: kernel.status};
        }"""
    )
    assert (reply["status"], reply["result"]) == ("ok", "42"), f"{notebook}: kernel {reply}"
    assert reply["kernel"] in ("idle", "busy"), f"{notebook}: kernel {reply['kernel']} after a cell"
    errors = list(page.errors)
    # housekeeping, after the checks: a dozen idle kernels would crowd two cores
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    assert errors == [], f"{notebook}: JavaScript errors:\n" + "\n".join(errors)
