#!/usr/bin/env bash
# Builds bulkhead from this source tree and assembles the tree both images ship, in OUT:
#   package.json, package-lock.json, node_modules/ (production dependencies only),
#   dist/ (without tests and benchmarks), proto/bulkhead/ (read for gRPC reflection),
#   native/build/endpoint.bpf.o, native/addon/build/Release/bulkhead.node
# The Dockerfile's build stage runs exactly this; test/deploy.test.ts runs it on a copy of
# the repository. Needs node >= 20 with its headers, clang, bpftool, make, g++, libbpf-dev.
#
# usage: deploy/images/build.sh OUT [--offline]   (--offline: npm from its cache only)
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ -n "$1" ] || die "usage: build.sh OUT [--offline]"
out=$(realpath -m "$1")
npm_flags=(--no-audit --no-fund --loglevel=error)
case "${2:-}" in
  "") ;;
  --offline) npm_flags+=(--offline) ;;
  *) die "unknown option \"$2\" (expected --offline)" ;;
esac

cd "$(dirname "$(readlink -f "$0")")/../.."
case "$out" in "$PWD"|"$PWD"/*) die "OUT ($out) must be outside the source tree ($PWD)";; esac

npm ci "${npm_flags[@]}"
npm run --silent build:proto
make -s -C native/bpf
# node-gyp compiles against the headers of the node that runs it: /usr for Debian's
# layout (package.json's build:addon), /usr/local in the official node images.
nodedir=$(node -p 'require("node:path").resolve(process.execPath, "..", "..")')
[ -f "$nodedir/include/node/node_api.h" ] || die "no Node headers under $nodedir/include/node (node_api.h)"
npx node-gyp rebuild --silent --jobs max --nodedir="$nodedir" --directory native/addon
npm run --silent build:ts
npm run --silent build:ui

rm -rf "$out"
mkdir -p "$out/native/build" "$out/native/addon/build/Release" "$out/proto"
cp package.json package-lock.json "$out/"
cp -r dist "$out/dist"
rm -rf "$out/dist/test" "$out/dist/bench" "$out/dist/cli-package"   # the workstation package is not for images
cp -r proto/bulkhead "$out/proto/bulkhead"
cp native/build/endpoint.bpf.o "$out/native/build/"
cp native/addon/build/Release/bulkhead.node "$out/native/addon/build/Release/"
# Install scripts are for building; the runtime tree is already built.
(cd "$out" && npm ci --omit=dev --ignore-scripts "${npm_flags[@]}")
echo "build.sh: runtime tree in $out"
