#!/usr/bin/env bash
# build.sh BUILD_DIR [cmake args...]: configure (once) and build keel with Ninja and ccache.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:?usage: build.sh BUILD_DIR [cmake args...]}"
shift
# Cache hits across build directories and clones (STACK.md §8).
export CCACHE_BASEDIR="$src" CCACHE_NOHASHDIR=1
jobs="${KEEL_JOBS:-$(nproc)}"
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S "$src" -B "$dir" -G Ninja "$@" >"$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log" >&2
    exit 1
  }
fi
cmake --build "$dir" -j "$jobs"
