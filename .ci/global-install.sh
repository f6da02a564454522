#!/bin/bash
# proxy-gate as a user installs it for good (README "Start at login"): "npm publish --dry-run"
# accepts the package, and the "npm pack" tarball installed globally into a temporary prefix runs
# from there: its "service install --dry-run --os linux" names that install's node, dist/cli.js and
# rules. Here and not in the suite: a global install resolves the dependencies' version ranges,
# which needs the registry's metadata (npm ci caches only the tarballs), and the suite runs in a
# network namespace with no way out (test/package.test.ts installs offline into a project folder
# through a lockfile instead). It takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
npm publish --dry-run >"$tmp/publish.log" 2>&1 || { cat "$tmp/publish.log"; echo "npm publish --dry-run failed"; exit 1; }
npm pack --ignore-scripts --pack-destination "$tmp" >/dev/null 2>&1
start=$SECONDS
npm install -g --prefix "$tmp/prefix" --prefer-offline --no-audit --no-fund "$tmp"/proxy-gate-*.tgz >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; echo "npm install -g of the tarball failed"; exit 1; }
echo "# global install of the packed tarball: $((SECONDS - start)) s"
installed="$tmp/prefix/lib/node_modules/proxy-gate"
mkdir "$tmp/home" "$tmp/work"
# the node that runs it first on PATH, so that it is the node the service file names
node="$(node -p process.execPath)"
unit="$(cd "$tmp/work" && env -u XDG_CONFIG_HOME HOME="$tmp/home" PATH="$(dirname "$node"):$PATH" "$tmp/prefix/bin/proxy-gate" service install --dry-run --os linux 2>"$tmp/stderr")" || { cat "$tmp/stderr"; echo "service install --dry-run failed"; exit 1; }
expected="ExecStart=$node $installed/dist/cli.js start --rules $installed/rules.json --dir $tmp/home/.config/proxy-gate/certs"
if ! grep -qxF "$expected" <<<"$unit" || ! grep -qxF "WorkingDirectory=$tmp/work" <<<"$unit" || ! grep -qxF "# would write $tmp/home/.config/systemd/user/proxy-gate.service" "$tmp/stderr"; then
  printf 'the globally installed proxy-gate does not name its own install; expected\n%s\ngot\n%s\n%s\n' "$expected" "$unit" "$(cat "$tmp/stderr")"
  exit 1
fi
echo "# the globally installed proxy-gate names its own install in its service file"
