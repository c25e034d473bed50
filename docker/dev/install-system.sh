#!/usr/bin/env bash
# Installs the Debian packages the real components need (Java for Kafka and JanusGraph, Maven to
# fetch their jars, Chromium for browser tests, Graphviz to render the DOT export in its tests).
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
command -v dot >/dev/null || need+=(graphviz)
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "missing system packages: ${need[*]} (install them as root)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
