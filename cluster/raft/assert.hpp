#pragma once
// Assertions for our own bugs. They stay on in release builds (TigerBeetle / KJ_ASSERT style):
// a broken Raft invariant must stop the process, never continue with a corrupted log.
#include <cstdio>
#include <cstdlib>

namespace keel::raft {

[[noreturn]] inline void raft_assert_fail(const char* expr, const char* file, int line,
                                          const char* msg) {
  std::fprintf(stderr, "keel raft: assertion failed: %s at %s:%d%s%s\n", expr, file, line,
               msg[0] ? ": " : "", msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace keel::raft

#define KEEL_RAFT_ASSERT(cond, ...) \
  ((cond) ? (void)0 : ::keel::raft::raft_assert_fail(#cond, __FILE__, __LINE__, "" __VA_ARGS__))
