#pragma once
// keelctl's `lock NAME -- CMD...` and `lock NAME` (hold): runs a command while a lock is held.
// The command runs in its own process group with KEEL_LOCK_NAME and KEEL_LOCK_TOKEN set; when
// the lock is lost the group gets SIGTERM and, after grace_ms, SIGKILL (consul lock's child
// that ran on for 90 s after its lock moved is the counter-example). keelctl's own death kills
// the child (PR_SET_PDEATHSIG), and the lock passes on at once because the agent sees the
// connection close. SIGINT/SIGTERM to keelctl are passed to the group.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "agent/client.hpp"

namespace keel::client {

struct RunOptions {
  int64_t grace_ms = 5000;
  int64_t poll_ms = 50;  // how often the child and the lock are looked at
};

// What is held: a lock or a semaphore slot.
struct Holding {
  std::string what;                                           // for messages: "lock 'x' (token 7)"
  std::vector<std::pair<std::string, std::string>> env;       // set in the command's environment
  std::function<Result<bool>(int64_t timeout_ms)> wait_lost;  // true (or an error) = lost
};
Holding holding(LockHandle& lock);
Holding holding(SemHandle& slot);

// Returns the exit status keelctl should exit with: the command's own (128 + signal when a
// signal ended it). An empty `argv` holds until SIGINT/SIGTERM (0) or the loss (1).
int run_locked(const Holding& held, const std::vector<std::string>& argv,
               const RunOptions& options);

}  // namespace keel::client
