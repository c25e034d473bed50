#!/usr/bin/env bash
# Builds the helm CLI from its Go module source (no downloaded binary) once per version and prints
# the path of the binary. The tests call it; Go's module and build caches make a rebuild quick.
#
#   docker/helm/build-helm.sh            -> var/tools/helm-<version>/helm
#   HELM_VERSION=v3.21.4 HELM_MODULE=helm.sh/helm/v3 docker/helm/build-helm.sh
#
# Settings (environment): GO (default: go on PATH, else /usr/local/go/bin/go), HELM_MODULE
# (helm.sh/helm/v4), HELM_VERSION (v4.3.2), TOOLS_DIR (var/tools under the repository).
# Exit status: 0 and the path on stdout when the binary exists; 1 with the reason on stderr otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
module="${HELM_MODULE:-helm.sh/helm/v4}"
version="${HELM_VERSION:-v4.3.2}"
tools="${TOOLS_DIR:-$repo/var/tools}"
major="${module##*/}"
dest="$tools/helm-$major-$version"
bin="$dest/helm"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

go="${GO:-}"
if [[ -z "$go" ]]; then
  if command -v go >/dev/null 2>&1; then go="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go
  else echo "build-helm: no Go toolchain (set GO=/path/to/go)" >&2; exit 1
  fi
fi

mkdir -p "$dest"
tmp="$(mktemp -d "$dest/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "build-helm: building $module/cmd/helm@$version with $("$go" version)" >&2
# -X: `helm version` says the version built (the source alone says only major.minor)
if ! CGO_ENABLED=0 GOBIN="$tmp" "$go" install -ldflags "-X $module/internal/version.version=$version" \
    "$module/cmd/helm@$version" >&2; then
  echo "build-helm: go install $module/cmd/helm@$version failed" >&2
  exit 1
fi
mv -f "$tmp/helm" "$bin"   # atomic: a concurrent caller sees no binary or the whole one
echo "$bin"
