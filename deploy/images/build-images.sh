#!/usr/bin/env bash
# Builds both images from the repository root into your registry:
#   REGISTRY/bulkhead/agent:TAG and REGISTRY/bulkhead/controlplane:TAG
# (Dockerfile targets `agent` and `controlplane`), pushes them with --push, and prints the
# kustomize `images:` override that points an overlay at them (deploy/README.md,
# "Build the images into your registry").
#
# usage: deploy/images/build-images.sh --registry REGISTRY [--tag TAG] [--push] [--engine docker|podman] [--dry-run]
#   REGISTRY  host[:port][/path], e.g. registry.example.com/platform or localhost:5000 (no scheme)
#   TAG       default: package.json's version
#   --dry-run print the commands instead of running them
set -euo pipefail

die() { echo "build-images.sh: $*" >&2; exit 2; }
usage="usage: deploy/images/build-images.sh --registry REGISTRY [--tag TAG] [--push] [--engine docker|podman] [--dry-run]"

cd "$(dirname "$(readlink -f "$0")")/../.."
registry="" tag="" push=0 engine=docker dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) [ $# -ge 2 ] || die "--registry needs a value"; registry=$2; shift 2 ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift 2 ;;
    --engine) [ $# -ge 2 ] || die "--engine needs a value"; engine=$2; shift 2 ;;
    --push) push=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) die "unknown argument \"$1\" ($usage)" ;;
  esac
done
[ -n "$registry" ] || die "--registry is required ($usage)"
case "$registry" in
  *://*) die "--registry \"$registry\": no scheme, e.g. registry.example.com/platform" ;;
esac
# A reference's name part: host[:port] then lower-case path components (the distribution spec's grammar, simplified).
[[ "$registry" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$ ]] ||
  die "--registry \"$registry\": expected host[:port][/path] (path in lower case), e.g. registry.example.com/platform"
[ -n "$tag" ] || tag=$(node -p 'require("./package.json").version')
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
  die "--tag \"$tag\": expected up to 128 letters, digits, '_', '.', '-', not starting with '.' or '-'"
case "$engine" in docker|podman) ;; *) die "--engine \"$engine\": expected docker or podman" ;; esac

run() {
  if [ "$dry" = 1 ]; then echo "$*"; else "$@"; fi
}
for target in agent controlplane; do
  run "$engine" build -f deploy/images/Dockerfile --target "$target" -t "$registry/bulkhead/$target:$tag" .
done
if [ "$push" = 1 ]; then
  for target in agent controlplane; do run "$engine" push "$registry/bulkhead/$target:$tag"; done
fi
cat <<YAML
# kustomization.yaml of your overlay (deploy/README.md):
images:
  - name: bulkhead/agent
    newName: $registry/bulkhead/agent
    newTag: "$tag"
  - name: bulkhead/controlplane
    newName: $registry/bulkhead/controlplane
    newTag: "$tag"
YAML
