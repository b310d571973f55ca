#!/usr/bin/env bash
# One npm package, fetched with npm's own client, checked against the integrity recorded by the
# caller and unpacked into DIR (as DIR/package/...): book/vendor-mathjax.sh, hub/vendor-mathjax2.sh.
# Usage: scripts/npm-unpack.sh NAME@VERSION INTEGRITY DIR
set -euo pipefail
spec=$1 integrity=$2 dir=$3
if ! command -v npm >/dev/null 2>&1; then
    echo "npm-unpack: npm is missing; install it (make system-deps, or apt-get install npm)" >&2
    exit 1
fi
npm pack --silent --pack-destination "$dir" "$spec" >/dev/null
tarball=$(ls "$dir"/*.tgz)
got=$(node -e 'const c = require("crypto"), fs = require("fs");
  console.log("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$tarball")
if [ "$got" != "$integrity" ]; then
    echo "npm-unpack: $(basename "$tarball") has integrity $got, expected $integrity" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$dir"
rm "$tarball"
