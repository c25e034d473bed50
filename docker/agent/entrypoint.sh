#!/bin/sh
# Container entry point of the node agent: bcc compiles against /lib/modules/$(uname -r)/build, so
# the image's Debian headers are linked there for whatever kernel the node runs (the program reads
# only tracepoint fields, and offsets from the running kernel's BTF, so headers of another version
# compile it correctly: make agent-deps does the same on a machine). Then `topology agent "$@"`.
set -eu
mods="/lib/modules/$(uname -r)"
if [ ! -e "$mods/build/include" ]; then
  build="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$build" ]; then
    mkdir -p "$mods"
    ln -sfn "$build" "$mods/build"
    [ -d "${build%-amd64}-common" ] && ln -sfn "${build%-amd64}-common" "$mods/source"
  fi
fi
exec /opt/venv/bin/topology agent "$@"
