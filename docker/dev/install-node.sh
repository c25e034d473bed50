#!/usr/bin/env bash
# Installs the npm packages the project serves (GraphiQL assets) and tests with (playwright-core,
# the federation gateway), then builds the <service-topology> widget (widget/dist/service-topology.js, served
# at /widget/service-topology.js). Idempotent: npm ci runs only when a lock file changed, the bundle is
# rebuilt only when a source is newer than it.
set -euo pipefail
cd "$(dirname "$0")/../.."
for dir in service/static tests/js widget; do
  [ -f "$dir/package.json" ] || continue
  lock="$dir/package-lock.json"
  stamp="$dir/node_modules/.stamp-$( (cat "$dir/package.json"; cat "$lock" 2>/dev/null) | sha1sum | cut -c1-12)"
  [ -f "$stamp" ] && continue
  if [ -f "$lock" ]; then (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --silent)
  else (cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --silent); fi
  rm -f "$dir"/node_modules/.stamp-*; touch "$stamp"
done
bundle=widget/dist/service-topology.js
if [ ! -f "$bundle" ] || [ -n "$(find widget/src widget/build.mjs widget/package-lock.json -newer "$bundle" -print -quit)" ]; then
  node widget/build.mjs
fi
