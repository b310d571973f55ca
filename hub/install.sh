#!/usr/bin/env bash
# What the course's JupyterHub needs on this machine (make hub-deps; run as root, idempotent):
#   - the shared course venv (/opt/ste-course/venv) with requirements-hub.txt (jupyterhub) beside
#     the pins, configured for students like `make lab` (scripts/lab-config.sh);
#   - configurable-http-proxy from npm, at the version locked in hub/proxy/package-lock.json,
#     into /opt/ste-course/proxy (never a global install);
#   - MathJax 2 for the instructor's formgrader in /opt/ste-course/static (hub/vendor-mathjax2.sh);
#   - the Assignment List's feedback link (hub/labextension, a prebuilt JupyterLab extension that
#     needs no build) in the shared venv's share/jupyter/labextensions.
# Usage: hub/install.sh        (STE_SHARED_VENV, STE_PROXY_DIR to choose other folders)
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY_DIR=${STE_PROXY_DIR:-/opt/ste-course/proxy}
venv=$(scripts/shared-venv.sh requirements-hub.txt | tail -n 1)
PYTHON="$venv/bin/python" scripts/lab-config.sh
labext="$venv/share/jupyter/labextensions/ste-course-feedback-link"
rm -rf "$labext" && mkdir -p "$labext" && cp -r hub/labextension/. "$labext"/ && chmod -R a+rX,go-w "$labext"
if ! command -v npm >/dev/null; then
    echo "hub/install.sh: npm is missing: apt-get install npm (Node.js 20 or newer)" >&2
    exit 1
fi
lock=$(cat hub/proxy/package.json hub/proxy/package-lock.json | sha256sum | cut -c1-16)
if [ ! -e "$PROXY_DIR/.lock-$lock" ]; then
    umask 022
    mkdir -p "$PROXY_DIR"
    cp hub/proxy/package.json hub/proxy/package-lock.json "$PROXY_DIR"/
    (cd "$PROXY_DIR" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
    rm -f "$PROXY_DIR"/.lock-*
    touch "$PROXY_DIR/.lock-$lock"
fi
chmod -R a+rX "$PROXY_DIR"
hub/vendor-mathjax2.sh  # formgrader's maths offline
"$PROXY_DIR/node_modules/.bin/configurable-http-proxy" --version >/dev/null
echo "hub/install.sh: jupyterhub in $venv, configurable-http-proxy in $PROXY_DIR"
