#!/usr/bin/env bash
# A course environment every user of this machine can read: /opt/ste-course/venv by default.
#
# The development venv (.venv) is built from whatever python3 is first on PATH, which on the
# development machines lives in root's home directory and cannot be read by other users. Anything
# that runs as another user (a JupyterHub user's server, grading as an unprivileged instructor)
# uses this venv instead: Debian's /usr/bin/python3.11, the pins of requirements.txt (plus any
# extra requirement files given), and this repository's packages installed as a copy (not
# editable), so the checkout itself may stay private.
#
# Usage: scripts/shared-venv.sh [EXTRA_REQUIREMENTS.txt ...]
#   STE_SHARED_VENV=/path  another location (default /opt/ste-course/venv)
#   SHARED_PYTHON=/path    another interpreter (default /usr/bin/python3.11)
# Idempotent: the pins are installed once per hash of the requirement files; the packages are
# reinstalled when their sources change. Prints the venv's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STE_SHARED_VENV:-/opt/ste-course/venv}
PY=${SHARED_PYTHON:-/usr/bin/python3.11}
if [ ! -x "$PY" ]; then
    echo "shared-venv: $PY not found; install Debian's python3.11 and python3.11-venv (apt-get install python3.11 python3.11-venv)" >&2
    exit 1
fi
pins=$(cat requirements.txt "$@" | sha256sum | cut -c1-16)
code=$( { cat pyproject.toml; find ste_utils ste_course -name '*.py' -o -name '*.json' -o -name '*.toml' | LC_ALL=C sort | xargs cat; } | sha256sum | cut -c1-16)
umask 022
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
if [ ! -e "$VENV/.pins-$pins" ]; then
    extra=()
    for f in "$@"; do extra+=(-r "$f"); done
    "$VENV/bin/pip" install --disable-pip-version-check -q -r requirements.txt "${extra[@]}"
    rm -f "$VENV"/.pins-* "$VENV"/.code-*
    touch "$VENV/.pins-$pins"
fi
if [ ! -e "$VENV/.code-$code" ]; then
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    # Build from a copy: setuptools writes build/ and *.egg-info into the source folder.
    cp -r pyproject.toml README.md ste_utils ste_course "$build"/
    "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation --force-reinstall "$build"
    rm -f "$VENV"/.code-*
    touch "$VENV/.code-$code"
fi
chmod -R a+rX "$VENV"
echo "$VENV"
