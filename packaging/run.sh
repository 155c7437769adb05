#!/usr/bin/env bash
# The README's first command: install what is missing, build, and start a single-node keeld
# on its embedded default (data under ./var, socket ./var/keel.sock) in the foreground.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
"$src/packaging/install-deps.sh"
"$src/packaging/build.sh" "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_BUILD_TESTS=OFF
mkdir -p var
cat <<MSG
keeld is starting (Ctrl-C or SIGTERM stops it). In another shell:
  export KEEL_SOCKET=$PWD/var/keel.sock
  $src/build/agent/keelctl put greeting hello
  $src/build/agent/keelctl get greeting
MSG
exec "$src/build/agent/keeld" "$@"
