#pragma once
// A cluster of real keeld processes on 127.0.0.1: one data dir, socket and peer port each,
// bootstrapped with --initial-cluster. Every process is stopped by PID when the harness goes.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace keel::test {

// The value of `key` read through `c` (linearizable unless `serializable`); nullopt if the
// key is absent or the read failed.
std::optional<std::string> get_value(client::Client& c, const std::string& key,
                                     bool serializable = false);

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t free_port();

// Where the members live on the network. Default: 127.0.0.1 with a free port each, in the
// test's own network namespace. With `hosts` (one per member) every member listens on
// hosts[i]:port; with `netns` (one per member) member i runs in that network namespace.
// Members get hosts[i] and netns[i] in order of creation: founders first, then added joiners
// and learners (an added member past the lists' ends runs on 127.0.0.1).
struct ClusterNet {
  std::vector<std::string> hosts;
  std::vector<std::string> netns;
  uint16_t port = 2380;
};

class KeelCluster {
 public:
  // `config_toml` is given to every member (e.g. a faster [raft] tick for tests).
  KeelCluster(const std::string& root, int members, std::string config_toml = kFastRaft,
              const ClusterNet& net = {});
  static constexpr const char* kFastRaft =
      "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
      "request_timeout_ms = 5000\n[storage]\ncache_size_mb = 32\n";

  int size() const { return static_cast<int>(members_.size()); }
  Keeld& member(int i) { return *members_[i]; }
  const std::string& name(int i) const { return names_[i]; }
  const std::string& peer(int i) const { return peers_[i]; }

  // Starts member i (new: part of the initial cluster; restart: same flags).
  bool start(int i);
  bool start_all();
  // Adds a member that will join with --initial-cluster-state existing (not started).
  int add_joiner(const std::string& name);
  // Adds a learner agent (--role learner; --initial-cluster names the voters; not started).
  int add_learner(const std::string& name);
  bool is_learner(int i) const { return learner_[i]; }

  // Index of the member that every running member names as leader, within the deadline;
  // nullopt if they do not agree in time.
  std::optional<int> wait_leader(std::chrono::milliseconds deadline = std::chrono::seconds(20));
  // The same among the members listed in `among` only (e.g. the majority side of a
  // partition); the leader must be one of them.
  std::optional<int> wait_leader_among(const std::vector<int>& among,
                                       std::chrono::milliseconds deadline);
  // keelctl status of member i as seen by itself (nullopt if it does not answer).
  std::optional<client::StatusInfo> status(int i);
  std::vector<bool> running;

 private:
  std::vector<std::string> args(int i) const;
  std::string root_, config_;
  ClusterNet net_;  // entries past the founders are for added members, in order
  std::vector<std::string> names_, peers_;
  std::vector<bool> joiner_, learner_;
  std::vector<std::unique_ptr<Keeld>> members_;
};

}  // namespace keel::test
