#pragma once
// Agent-wide counts that every server thread's stack (agent/shard.hpp) shares, so that the
// limits named after the agent (limits.max_connections, limits.max_watchers,
// limits.max_leases_per_agent) bound the agent, not one thread, and `status` reports the
// agent's totals. Each stack adds and removes only its own share.
//
// A limit is checked against the total before a stack adds to it; two threads admitting at
// the same instant may each pass, so a limit can be exceeded by at most (threads - 1).
#include <atomic>
#include <cstdint>

namespace keel::agent {

struct AgentCounts {
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> watchers{0};
  std::atomic<uint64_t> leases_renewing{0};
  std::atomic<uint64_t> renew_messages{0};
  std::atomic<uint64_t> leases_renewed{0};
};

// Keeps one stack's share of an agent-wide total equal to its own count: call after every
// change of the count; the destructor takes the share back.
class CountShare {
 public:
  explicit CountShare(std::atomic<uint64_t>& total) : total_(total) {}
  ~CountShare() { set(0); }
  CountShare(const CountShare&) = delete;
  CountShare& operator=(const CountShare&) = delete;
  void set(uint64_t mine) {
    if (mine >= mine_) {
      total_.fetch_add(mine - mine_);
    } else {
      total_.fetch_sub(mine_ - mine);
    }
    mine_ = mine;
  }
  uint64_t total() const { return total_.load(); }

 private:
  std::atomic<uint64_t>& total_;
  uint64_t mine_ = 0;
};

}  // namespace keel::agent
