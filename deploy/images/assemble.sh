#!/usr/bin/env bash
# Assembles, in OUT, the tree both images ship from a tree scripts/build has built:
#   package.json, package-lock.json, node_modules/ (production dependencies only),
#   dist/ (without tests and benchmarks), proto/bulkhead/ (read for gRPC reflection),
#   native/build/endpoint.bpf.o, native/addon/build/Release/bulkhead.node
# The Dockerfile's build stage runs scripts/build, then exactly this; test/deploy.test.ts
# runs it on the tree ./scripts/setup built (the same scripts/build) and starts the agent
# and control plane from OUT.
#
# usage: deploy/images/assemble.sh OUT [--offline]   (--offline: npm from its cache only)
set -euo pipefail

die() { echo "assemble.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ -n "$1" ] || die "usage: assemble.sh OUT [--offline]"
out=$(realpath -m "$1")
npm_flags=(--no-audit --no-fund --loglevel=error)
case "${2:-}" in
  "") ;;
  --offline) npm_flags+=(--offline) ;;
  *) die "unknown option \"$2\" (expected --offline)" ;;
esac

cd "$(dirname "$(readlink -f "$0")")/../.."
case "$out" in "$PWD"|"$PWD"/*) die "OUT ($out) must be outside the source tree ($PWD)";; esac
for built in dist/cli/main.js dist/ui/index.html native/build/endpoint.bpf.o native/addon/build/Release/bulkhead.node; do
  [ -f "$built" ] || die "$PWD/$built is missing: build first (scripts/build, which ./scripts/setup runs)"
done

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
echo "assemble.sh: runtime tree in $out"
