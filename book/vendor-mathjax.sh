#!/usr/bin/env bash
# MathJax for the site, fetched once at set-up time so that `make site` builds without network.
# npm's own client fetches the pinned release; its tarball is checked against the integrity
# recorded here, and only what the pages load is kept (about 1.7 MB, too big to commit): the
# TeX-to-HTML bundle with every TeX extension built in (nothing loaded on demand) and its fonts.
# Target: book/vendor/mathjax/ (not tracked). Idempotent: does nothing when that version is there.
# Usage: book/vendor-mathjax.sh   (make site and make test run it)
set -euo pipefail
cd "$(dirname "$0")"
VERSION=3.2.2
INTEGRITY=sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==
DEST=vendor/mathjax

if [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
../scripts/npm-unpack.sh "mathjax@$VERSION" "$INTEGRITY" "$tmp"
mkdir -p "$tmp/out/output/chtml/fonts"
mv "$tmp/package/LICENSE" "$tmp/package/es5/tex-chtml-full.js" "$tmp/out/"
mv "$tmp/package/es5/output/chtml/fonts/woff-v2" "$tmp/out/output/chtml/fonts/"
echo "$VERSION" > "$tmp/out/VERSION"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/out" "$DEST"
echo "vendor-mathjax: MathJax $VERSION in book/$DEST"
