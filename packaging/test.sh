#!/usr/bin/env bash
# The README's second command: install what is missing, build, and run the whole test suite.
#   KEEL_BUILD_DIR  build directory (default ./build-test)
#   KEEL_SANITIZE=1 build with AddressSanitizer + UBSan
#   KEEL_WERROR=1   warnings are errors (CI)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
"$src/packaging/install-deps.sh"
dir="${KEEL_BUILD_DIR:-$src/build-test}"
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_WERROR="${KEEL_WERROR:-OFF}")
if [ "${KEEL_SANITIZE:-0}" = 1 ]; then
  args=(-DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON -DKEEL_WERROR="${KEEL_WERROR:-OFF}")
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
fi
"$src/packaging/build.sh" "$dir" "${args[@]}"
cd "$dir"
ctest --output-on-failure -j "${KEEL_TEST_JOBS:-2}" --timeout 600
