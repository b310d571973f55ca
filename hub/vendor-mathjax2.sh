#!/usr/bin/env bash
# MathJax 2 for the instructor's formgrader on the hub (its pages call the MathJax 2 API), fetched
# once at set-up time like book/vendor-mathjax.sh fetches MathJax 3: npm's own client, the tarball
# checked against the integrity recorded here, only what TeX-AMS_CHTML-full loads kept.
# Target: $STE_STATIC_DIR/mathjax2 (default /opt/ste-course/static/mathjax2), served by the
# instructor's server as static/mathjax2/ (ste_course/classroom/hub.py). Idempotent.
# Usage: hub/vendor-mathjax2.sh   (hub/install.sh, i.e. make hub-deps, runs it)
set -euo pipefail
VERSION=2.7.9
INTEGRITY=sha512-NOGEDTIM9+MrsqnjPEjVGNx4q0GQxqm61yQwSK+/5S59i26wId5IC5gNu9/bu8+CCVl5p9G2IHcAl/wJa+5+BQ==
DEST=${STE_STATIC_DIR:-/opt/ste-course/static}/mathjax2
KEEP=(LICENSE MathJax.js config/TeX-AMS_CHTML-full.js config/Safe.js extensions jax/input/TeX jax/element
      jax/output/CommonHTML fonts/HTML-CSS/TeX/woff localization/en)

if [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$(dirname "$0")/../scripts/npm-unpack.sh" "mathjax@$VERSION" "$INTEGRITY" "$tmp"
mkdir -p "$tmp/out"
for part in "${KEEP[@]}"; do
    if [ -e "$tmp/package/$part" ]; then
        mkdir -p "$tmp/out/$(dirname "$part")"
        cp -r "$tmp/package/$part" "$tmp/out/$part"
    fi
done
echo "$VERSION" > "$tmp/out/VERSION"
umask 022
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/out" "$DEST"
chmod -R a+rX "$DEST"
echo "vendor-mathjax2: MathJax $VERSION in $DEST"
