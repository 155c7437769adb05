#pragma once
// keelctl's `lock NAME -- CMD...` and `lock NAME` (hold): runs a command while a lock is held.
// The command runs in its own process group with KEEL_LOCK_NAME and KEEL_LOCK_TOKEN set; when
// the lock is lost the group gets SIGTERM and, after grace_ms, SIGKILL (consul lock's child
// that ran on for 90 s after its lock moved is the counter-example). keelctl's own death kills
// the child (PR_SET_PDEATHSIG), and the lock passes on at once because the agent sees the
// connection close. SIGINT/SIGTERM to keelctl are passed to the group.
#include <string>
#include <vector>

#include "agent/client.hpp"

namespace keel::client {

struct RunOptions {
  int64_t grace_ms = 5000;
  int64_t poll_ms = 50;  // how often the child and the lock are looked at
};

// Returns the exit status keelctl should exit with: the command's own (128 + signal when a
// signal ended it). An empty `argv` holds the lock until SIGINT/SIGTERM (0) or its loss (1).
int run_locked(LockHandle& lock, const std::vector<std::string>& argv, const RunOptions& options);

}  // namespace keel::client
