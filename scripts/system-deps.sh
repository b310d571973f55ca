#!/usr/bin/env bash
# Install the Debian packages a task needs, if they are missing.
#   grade: bubblewrap     the grader's sandbox (ste-course grade, make grade)
#   test:  bubblewrap, chromium (the browser of tests/e2e, driven by Playwright) and
#          postgresql-15 (the server tests/test_postgres.py starts; --db postgresql://)
# Usage: scripts/system-deps.sh [grade|test]   (default: test; idempotent: does nothing when
# everything is there)
set -euo pipefail
task=${1:-test}
declare -A need=([bwrap]=bubblewrap)
case "$task" in
    grade) ;;
    test) need[chromium]=chromium ;;
    *) echo "system-deps: unknown task '$task'; use grade or test" >&2; exit 2 ;;
esac
missing=()
for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# PostgreSQL's server binaries are not on PATH: check version 15's initdb (and its postgres user)
if [ "$task" = test ]; then
    { [ -x /usr/lib/postgresql/15/bin/initdb ] && id -u postgres >/dev/null 2>&1; } || missing+=(postgresql-15)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "system-deps: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "system-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
