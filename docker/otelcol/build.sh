#!/usr/bin/env bash
# Build the OpenTelemetry Collector of docker/otelcol/builder.yaml once, and print the binary's path.
#
#   bash docker/otelcol/build.sh            # builds if needed; stdout: the binary's path, nothing else
#   bash docker/otelcol/build.sh MANIFEST BUILDER_VERSION [BUILDER_FLAG...]
#                                           # another manifest, with the builder of its release and more of its
#                                           # flags, e.g. --skip-get-modules where the builder's `go mod tidy`
#                                           # would ask for test-only modules the proxy refuses (the compile step
#                                           # resolves what the sources import); bench/peer_servicegraph does so
#
# The build goes into a cache directory outside the clone, keyed by the hash of the manifest, the
# builder's version and the Go version, so a fresh clone (CI) reuses it and a changed manifest builds
# anew:  ${TOPOLOGY_OTELCOL_CACHE:-${XDG_CACHE_HOME:-~/.cache}/service-topology}/otelcol-<hash>/otelcol-topology
#
# Steps: the OpenTelemetry Collector Builder (go install, at the release of the components) generates the
# sources and resolves go.mod (--skip-compilation), then `go build -mod=mod` compiles them. Everything comes
# from the Go module proxy through the go command; nothing else is downloaded. Progress goes to stderr.
# Concurrent runs wait for each other (flock); an interrupted build leaves no binary behind.
set -euo pipefail

BUILDER_VERSION=${2:-v0.165.0}   # go.opentelemetry.io/collector/cmd/builder: the components' core release
here=$(cd "$(dirname "$0")" && pwd)
manifest=$(realpath "${1:-$here/builder.yaml}")
builder_flags=("${@:3}")

go_bin=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if [[ ! -x $go_bin ]] && ! command -v "$go_bin" >/dev/null; then
  echo "build.sh: no Go toolchain (looked for go on PATH and /usr/local/go/bin/go; set GO=...)" >&2
  exit 1
fi
go_version=$("$go_bin" env GOVERSION)

root=${TOPOLOGY_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/service-topology}
key=$( { cat "$manifest"; echo "$BUILDER_VERSION $go_version${builder_flags[*]:+ ${builder_flags[*]}}"; } | sha256sum | cut -c1-16)
dir=$root/otelcol-$key
binary=$dir/otelcol-topology

if [[ -x $binary ]]; then
  echo "$binary"
  exit 0
fi

mkdir -p "$root"
exec 9>"$root/otelcol-$key.lock"
flock 9
if [[ -x $binary ]]; then  # another run built it while this one waited
  echo "$binary"
  exit 0
fi

started=$SECONDS
work=$(mktemp -d "$root/otelcol-$key.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

builder=$root/builder-$BUILDER_VERSION
if [[ ! -x $builder ]]; then
  echo "build.sh: building the Collector Builder $BUILDER_VERSION" >&2
  GOBIN=$work/bin "$go_bin" install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2
  mv "$work/bin/builder" "$builder"
fi

echo "build.sh: generating the Collector sources from $manifest" >&2
# the manifest names no output path: the generated sources go to the work directory
sed "s#^dist:\$#dist:\n  output_path: $work/src#" "$manifest" > "$work/manifest.yaml"
"$builder" --config "$work/manifest.yaml" --skip-compilation "${builder_flags[@]}" > "$work/builder.log" 2>&1 || {
  tail -n 40 "$work/builder.log" >&2
  echo "build.sh: the Collector Builder failed (log above)" >&2
  exit 1
}

echo "build.sh: compiling (a few minutes the first time)" >&2
(cd "$work/src" && CGO_ENABLED=0 "$go_bin" build -mod=mod -trimpath -ldflags="-s -w" -o "$work/otelcol-topology" .) >&2
"$work/otelcol-topology" --version >&2

mkdir -p "$dir"
cp "$work/src/go.mod" "$work/src/go.sum" "$dir/"
mv "$work/otelcol-topology" "$binary"
echo "build.sh: built in $((SECONDS - started)) s" >&2
echo "$binary"
