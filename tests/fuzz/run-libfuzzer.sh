#!/usr/bin/env bash
# run-libfuzzer.sh [SECONDS] [libFuzzer flags...]: builds the libFuzzer target fuzz_request
# with clang (-fsanitize=fuzzer,address,undefined) in its own build directory and runs it for
# SECONDS (default 60) on a working copy of the seed corpus (tests/fuzz/corpus is not
# modified). A crash leaves its input in BUILD_DIR/fuzz-artifacts/; replay it with
#   BUILD_DIR/tests/fuzz/fuzz_request ARTIFACT
#   KEEL_FUZZ_BUILD_DIR  build directory (default ./build-fuzz)
#   KEEL_JOBS            compile jobs (default: all cores)
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
secs="${1:-60}"
shift || true
dir="${KEEL_FUZZ_BUILD_DIR:-$src/build-fuzz}"
export CCACHE_BASEDIR="$src" CCACHE_NOHASHDIR=1
command -v clang++ >/dev/null || { echo "run-libfuzzer.sh: clang++ is not installed" >&2; exit 1; }
if [ ! -f "$dir/build.ninja" ]; then
  mkdir -p "$dir"
  CC=clang CXX=clang++ cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKEEL_FUZZ=ON -DKEEL_BUILD_TESTS=ON >"$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log" >&2
    exit 1
  }
fi
cmake --build "$dir" -j "${KEEL_JOBS:-$(nproc)}" --target fuzz_request
work="$dir/fuzz-corpus"
mkdir -p "$work" "$dir/fuzz-artifacts"
cp -n "$src"/tests/fuzz/corpus/* "$work"/
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
exec "$dir/tests/fuzz/fuzz_request" -max_total_time="$secs" -max_len=4096 \
  -artifact_prefix="$dir/fuzz-artifacts/" -print_final_stats=1 "$@" "$work"
