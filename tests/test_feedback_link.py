"""The Assignment List's feedback link (hub/labextension): the prebuilt JupyterLab extension, run
in Node.js as JupyterLab loads it (its script, then ``_JUPYTERLAB[name].init`` and
``.get("./extension")``), against a stand-in for the application's command registry.

nbgrader 0.9.6's "view feedback" link runs ``filebrowser:go-to-path`` on the submission's
``local_feedback_path``, which FeedbackList makes the page itself. The plugin must open that page
in the HTML viewer (reading again a page already open), and nothing else. The browser end of it is
``tests/e2e/test_hub.py`` (click "view feedback", read the score in the page).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "hub" / "labextension"

# Each step: [command id, its args]; the harness prints what the plugin executed after each one.
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const [pkgPath, steps] = [process.argv[1], JSON.parse(process.argv[2])];
const pkg = JSON.parse(fs.readFileSync(pkgPath, "utf8"));
const window = {};
const context = vm.createContext({ window, console });
const script = require("path").join(require("path").dirname(pkgPath), pkg.jupyterlab._build.load);
vm.runInContext(fs.readFileSync(script, "utf8"), context);
(async () => {
  const container = window._JUPYTERLAB[pkg.name];
  await container.init({});
  const module = (await container.get(pkg.jupyterlab._build.extension))();
  const plugins = [].concat(module.__esModule ? module.default : module);
  const listeners = [], open = new Map();
  let done = [];
  const commands = {
    commandExecuted: { connect: fn => listeners.push(fn) },
    execute: (id, args) => {
      done.push([id, args]);
      if (id !== "docmanager:open") return Promise.resolve();
      let widget = open.get(args.path);
      if (!widget) {  // a new widget: its context reads the file later
        widget = { context: { isReady: false, model: { dirty: false },
                              revert: () => { done.push(["revert", args.path]); return Promise.resolve(); } } };
        open.set(args.path, widget);
        setTimeout(() => { widget.context.isReady = true; }, 0);
      }
      return Promise.resolve(widget);
    },
  };
  for (const plugin of plugins) if (plugin.autoStart) plugin.activate({ commands });
  const out = [];
  for (const [id, args] of steps) {
    done = [];
    for (const fn of listeners) fn(commands, { id, args, result: Promise.resolve() });
    await new Promise(resolve => setTimeout(resolve, 5));
    out.push(done);
  }
  console.log(JSON.stringify({ ids: plugins.map(p => p.id), out }));
})().catch(err => { console.error(err); process.exit(1); });
"""

PAGE = "exercises/03_ste/feedback/2026-12-07 04:09:13.123456 UTC/03_ste.html"


def run(steps: list) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed (make hub-deps installs npm, and with it node)", pytrace=False)
    out = subprocess.run([node, "-e", HARNESS, str(EXTENSION / "package.json"), json.dumps(steps)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_view_feedback_opens_the_page_in_the_html_viewer_and_reads_it_again_when_open():
    got = run([["filebrowser:go-to-path", {"path": PAGE}], ["filebrowser:go-to-path", {"path": PAGE}]])
    assert got["ids"] == ["ste-course-feedback-link:plugin"]
    first, again = got["out"]
    assert first == [["docmanager:open", {"path": PAGE, "factory": "HTML Viewer"}]]
    assert again == [["docmanager:open", {"path": PAGE, "factory": "HTML Viewer"}], ["revert", PAGE]]


@pytest.mark.parametrize("step", [
    ["filebrowser:go-to-path", {"path": "exercises/03_ste/feedback/2026-12-07 04:09:13.123456 UTC"}],  # two pages: the folder
    ["filebrowser:go-to-path", {"path": "course/notes.html"}],
    ["filebrowser:go-to-path", {"path": "exercises/03_ste/feedback/stamp/03_ste.ipynb"}],
    ["filebrowser:go-to-path", {}],
    ["docmanager:open", {"path": PAGE}],
])
def test_anything_else_opens_nothing(step):
    assert run([step])["out"] == [[]]


def test_the_link_the_server_gives_is_one_the_plugin_opens(tmp_path, monkeypatch):
    """FeedbackList's page, made root-relative as nbgrader's handler does, is what the plugin
    recognises (the two halves agree on the path)."""
    import os

    from nbgrader.exchange.default.list import ExchangeList

    from ste_course.classroom.exchange import FeedbackList

    folder = tmp_path / "exercises" / "03_ste" / "feedback" / "2026-12-07 04:09:13.123456 UTC"
    folder.mkdir(parents=True)
    (folder / "03_ste.html").write_text("<p>page</p>")
    listed = [{"submissions": [{"local_feedback_path": str(folder)}]}]
    monkeypatch.setattr(ExchangeList, "parse_assignments", lambda self: listed)
    got = FeedbackList.parse_assignments(object.__new__(FeedbackList))
    link = os.path.relpath(got[0]["submissions"][0]["local_feedback_path"], tmp_path)
    assert run([["filebrowser:go-to-path", {"path": link}]])["out"] == [
        [["docmanager:open", {"path": link, "factory": "HTML Viewer"}]]]
