/*
 * ste-course-feedback-link: the Assignment List's "view feedback" link opens the feedback page.
 *
 * nbgrader 0.9.6's Assignment List (its JupyterLab extension) answers a click on "view feedback"
 * with `app.commands.execute("filebrowser:go-to-path", {path: local_feedback_path})`, which only
 * moves the file browser. Our server side gives that link the page itself
 * (ste_course.classroom.exchange.FeedbackList: `<assignment>/feedback/<timestamp>/<notebook>.html`);
 * this plugin watches for that command on such a path and opens the page in JupyterLab's HTML
 * viewer. The page has no script (ste_course/record/feedback.py: sanitised, maths as MathML,
 * a Content-Security-Policy that forbids scripts), so the viewer's sandbox shows all of it
 * without "Trust HTML". A page already open is read again: Fetch Feedback may have rewritten it.
 *
 * No build step: the plugin imports nothing, so this file is the whole prebuilt extension.
 * JupyterLab 4 loads a prebuilt extension by running the script named in its package.json
 * (jupyterlab._build.load), then calling `window._JUPYTERLAB[name].init(shareScope)` and
 * `.get("./extension")`, a promise of a factory whose module's default export is the plugin
 * (the interface a webpack module-federation container offers; this one shares no module).
 * hub/install.sh copies the folder into the shared venv's share/jupyter/labextensions/.
 */
(function () {
  "use strict";

  var NAME = "ste-course-feedback-link";
  var GO_TO_PATH = "filebrowser:go-to-path";
  // what FeedbackList gives the link: a page under a submission's feedback folder, root-relative
  var FEEDBACK_PAGE = /(^|\/)feedback\/[^/]+\/[^/]+\.html$/;

  function isFeedbackPage(path) {
    return typeof path === "string" && FEEDBACK_PAGE.test(path);
  }

  function openPage(commands, path) {
    return commands.execute("docmanager:open", { path: path, factory: "HTML Viewer" }).then(function (widget) {
      var context = widget && widget.context;
      // ready already: the page was open before this click, and shows what was read back then
      if (context && context.isReady && !context.model.dirty) {
        return context.revert().then(function () { return widget; });
      }
      return widget;
    });
  }

  var plugin = {
    id: NAME + ":plugin",
    description: "Opens the feedback page when the Assignment List's \"view feedback\" link is clicked.",
    autoStart: true,
    activate: function (app) {
      app.commands.commandExecuted.connect(function (_, executed) {
        var path = executed.args && executed.args.path;
        if (executed.id === GO_TO_PATH && isFeedbackPage(path)) {
          openPage(app.commands, path).catch(function (reason) {
            console.error(NAME + ": cannot open " + path, reason);
          });
        }
      });
    }
  };

  var container = {
    init: function () {},
    get: function (module) {
      if (module !== "./extension") {
        return Promise.reject(new Error(NAME + " has no module " + module));
      }
      return Promise.resolve(function () {
        return { __esModule: true, default: plugin, isFeedbackPage: isFeedbackPage };
      });
    }
  };

  var root = typeof window !== "undefined" ? window : globalThis;
  (root._JUPYTERLAB = root._JUPYTERLAB || {})[NAME] = container;
})();
