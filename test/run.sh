#!/usr/bin/env bash
# Builds, then runs the whole test suite inside a private network namespace that has only a
# loopback interface, with the stand-in addresses the tests need (cloud metadata, private,
# "public") added to it. Nothing a test dials can leave the machine, even if proxy-gate has a bug.
# Without root (or without unshare/ip) the suite runs on the host network and the tests that need
# those addresses report a skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${PROXY_GATE_NETNS:-}" != 1 ]; then
  npm run --silent build
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null; then
    exec unshare --net env PROXY_GATE_NETNS=1 bash "$0" "$@"
  fi
  echo "test/run.sh: not root or no unshare/ip: running on the host network; network-namespace tests will skip" >&2
  exec npx tap "$@"
fi

ip link set lo up
while read -r addr; do
  [ -n "$addr" ] && ip addr add "$addr" dev lo nodad 2>/dev/null || ip addr add "$addr" dev lo
done < test/helpers/netns-addresses.txt
exec npx tap "$@"
