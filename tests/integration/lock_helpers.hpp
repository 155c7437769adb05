#pragma once
// Helpers shared by the coordination and primitives integration tests: who leads a
// KeelCluster, and which lease a lock's replicated state names.
#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster_harness.hpp"

namespace keel::test {

struct Roles {
  int leader = -1;
  std::vector<int> followers;
};

// The leader (waited for, bounded) and the others; leader -1 when none was elected.
inline Roles roles(KeelCluster& c) {
  Roles r;
  auto l = c.wait_leader();
  if (!l) return r;
  r.leader = *l;
  for (int i = 0; i < c.size(); ++i)
    if (i != *l) r.followers.push_back(i);
  return r;
}

// The leases (other than those in `except`) that hold or wait for lock `name`, as the
// replicated state on `member` says; waits (bounded) until there is one.
inline std::optional<int64_t> wait_lease_on_lock(
    Keeld& member, const std::string& name, const std::set<int64_t>& except,
    std::chrono::milliseconds deadline = std::chrono::seconds(15)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (auto c = member.client()) {
      if (auto ids = c->lease_list()) {
        for (int64_t id : *ids) {
          if (except.count(id)) continue;
          auto info = c->lease_time_to_live(id, false);
          if (!info) continue;
          for (const auto& l : info->locks)
            if (l == name) return id;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

}  // namespace keel::test
