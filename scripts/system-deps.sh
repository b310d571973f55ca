#!/usr/bin/env bash
# Install the Debian packages that `make test` needs, if they are missing.
#   bubblewrap: the grader's sandbox (ste-course grade)
#   chromium:   the headless browser of the end-to-end tests (tests/e2e, driven by Playwright)
#   postgresql-15: the server tests/test_postgres.py starts (initdb as the postgres user; --db postgresql://)
# Usage: scripts/system-deps.sh  (idempotent; does nothing when all commands exist)
set -euo pipefail
declare -A need=([bwrap]=bubblewrap [chromium]=chromium)
missing=()
for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# PostgreSQL's server binaries are not on PATH: check version 15's initdb (and its postgres user)
{ [ -x /usr/lib/postgresql/15/bin/initdb ] && id -u postgres >/dev/null 2>&1; } || missing+=(postgresql-15)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "system-deps: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "system-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
