#!/usr/bin/env bash
# Prepares this machine to load the agent's BPF program (docs: ../../README.md "Agent").
# Idempotent; every step checks before it acts. As root:
#   1. Debian's bcc (python3-bpfcc) and kernel headers (linux-headers-amd64), if missing;
#   2. /lib/modules/$(uname -r)/build and /source pointing at the installed headers (bcc looks there;
#      the running kernel has no headers package of its own);
#   3. tracefs mounted at /sys/kernel/tracing (bcc reads tracepoint formats there);
#   4. Debian's bcc importable from the venv: a .pth file naming a folder that holds only a `bcc`
#      symlink (PyPI's `bcc` is an unrelated package; Debian's bindings are pure Python over libbcc).
set -euo pipefail
VENV="${1:-.venv}"
if [ "$(id -u)" -ne 0 ]; then
  echo "make agent-deps needs root (apt-get, /lib/modules, mount): run it as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
need=()
dpkg-query -W -f='${Status}' python3-bpfcc 2>/dev/null | grep -q "ok installed" || need+=(python3-bpfcc)
dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "ok installed" || need+=(linux-headers-amd64)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The newest installed Debian headers: linux-headers-<ver>-amd64 (build) and -common (source).
build="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$build" ]; then
  echo "no /usr/src/linux-headers-*-amd64 after installing linux-headers-amd64" >&2
  exit 1
fi
source_dir="${build%-amd64}-common"
mods="/lib/modules/$(uname -r)"
mkdir -p "$mods"
[ "$(readlink "$mods/build" 2>/dev/null)" = "$build" ] || ln -sfn "$build" "$mods/build"
if [ -d "$source_dir" ]; then
  [ "$(readlink "$mods/source" 2>/dev/null)" = "$source_dir" ] || ln -sfn "$source_dir" "$mods/source"
fi

if [ ! -e /sys/kernel/tracing/events/sock ]; then
  mkdir -p /sys/kernel/tracing
  mount -t tracefs nodev /sys/kernel/tracing
fi

if [ -x "$VENV/bin/python" ]; then
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  shim="$(cd "$VENV" && pwd)/bcc-dist"
  mkdir -p "$shim"
  [ "$(readlink "$shim/bcc" 2>/dev/null)" = /usr/lib/python3/dist-packages/bcc ] \
    || ln -sfn /usr/lib/python3/dist-packages/bcc "$shim/bcc"
  echo "$shim" > "$site/debian-bcc.pth"
fi
echo "agent dependencies ready: bcc, headers ($build), tracefs"
