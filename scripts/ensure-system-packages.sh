#!/usr/bin/env bash
# Install the Debian packages image-cicd runs against, when they are missing:
#   docker-registry  the CNCF distribution registry (the local stand-in for ECR)
#   skopeo           the independent oracle in tests and the peer in benchmarks
#   chromium         the real browser for the console and approval-page tests
#   graphviz         `dot`, which lays out the state-machine graph (console, image-cicd graph --svg)
# Usage: scripts/ensure-system-packages.sh [package ...]   (default: all four)
set -euo pipefail
declare -A binary=(
  [docker-registry]=/usr/bin/docker-registry
  [skopeo]=/usr/bin/skopeo
  [chromium]=/usr/bin/chromium
  [graphviz]=/usr/bin/dot
)
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(docker-registry skopeo chromium graphviz)
missing=()
for pkg in "${wanted[@]}"; do
  [ -x "${binary[$pkg]:-/nonexistent}" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
