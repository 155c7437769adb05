#pragma once
// keeld's configuration: a TOML file (default /etc/keel/keel.toml) whose every key is
// documented in README.md, overridden by command-line flags. Unknown keys are errors, so a
// typo never silently falls back to a default.
#include <cstdint>
#include <string>

#include "cluster/model/kv_types.hpp"
#include "cluster/node/node.hpp"

namespace keel::agent {

inline constexpr size_t kMaxServerThreads = 64;

struct Config {
  std::string data_dir = "./var";
  std::string socket_path;  // empty = <data_dir>/keel.sock
  uint32_t socket_mode = 0660;
  std::string log_level = "info";  // trace, debug, info, warn, error, critical, off

  storage::Limits limits;
  size_t max_connections = 1024;  // limits.max_connections: connections open at once
  // server.threads: event-loop threads serving client connections (each with its own
  // WiredTiger read views and watch state); 0 = one per core but one, at least one.
  size_t server_threads = 0;
  size_t effective_server_threads() const;

  size_t cache_size_mb = 48;
  size_t log_file_max_mb = 16;
  uint32_t checkpoint_interval_ms = 60000;  // storage::EngineOptions
  size_t checkpoint_log_mb = 64;
  size_t compaction_batch_rows = 1000;
  size_t max_batch_entries = 1024;  // proposals per fsync'd log batch

  uint64_t watch_progress_interval_ms = 600000;  // etcd's 10 minutes
  size_t watch_batch_bytes = 256 * 1024;         // event bytes per watcher message

  // [cluster]: etcd-style bootstrap. With none of it set, keeld is a single-member cluster
  // with no peer listener.
  std::string name = "default";
  std::string listen_peer;      // host:port to accept peers on; default = advertise_peer
  std::string advertise_peer;   // host:port the others dial; default = this member's entry
  std::string initial_cluster;  // "name=host:port,..."; empty = "<name>=<advertise_peer>"
  std::string initial_cluster_state = "new";  // new | existing
  std::string initial_cluster_token = "keel-cluster";
  // voter | learner. A learner agent is not a Raft member: initial_cluster names the voters,
  // it attaches under them by itself (the relay tree) and keeps a local replica; it needs
  // its own advertise_peer (or listen_peer) for its parent to dial.
  std::string role = "voter";

  // [relay] (README "Learners"): see node::NodeOptions.
  size_t relay_fanout = 8;
  size_t relay_leader_fanout = 2;  // relay.leader_fanout
  uint32_t relay_heartbeat_ms = 500;
  uint32_t relay_timeout_ms = 3000;
  size_t relay_ring_bytes = 16 << 20;

  // [raft]
  uint32_t tick_ms = 50;
  int election_ticks = 10;
  int heartbeat_ticks = 1;
  uint32_t leader_wait_ms = 3000;
  uint32_t request_timeout_ms = 10000;
  size_t max_pending_proposals = 10000;
  size_t max_pending_bytes = 64 << 20;
  uint64_t max_uncommitted_bytes = 64 << 20;
  uint64_t log_retain_entries = 100000;
  size_t snapshot_chunk_bytes = 1 << 20;
  size_t snapshot_window_chunks = 4;
  uint32_t snapshot_timeout_ms = 10000;
  uint32_t time_entry_interval_ms = 1000;  // while leases are pending (NodeOptions)

  // [lease] and [lock] (README "Leases and locks"). The effective minimum TTL is at least
  // twice the election timeout, so a renewal survives a failover.
  int64_t lease_min_ttl_ms = 2000;
  int64_t lease_max_ttl_ms = 24LL * 3600 * 1000;
  int64_t lease_default_ttl_ms = 10000;  // a lock's own session lease when none is given
  uint32_t lease_renew_tick_ms = 200;    // the agent renews each lease after ttl/3
  size_t max_leases_per_agent = 10000;   // limits.max_leases_per_agent: renewed at once
  int64_t lock_default_delay_ms = 0;     // lock-delay when a lock call gives none (-1)

  int64_t effective_min_ttl_ms() const;

  std::string effective_socket_path() const;
};

// Reads `path` into `config` (keys absent from the file keep their current values).
// A missing file is an error only when `must_exist`. Errors name the file, the key and why.
Status load_config_file(const std::string& path, bool must_exist, Config& config);

// The node's options from [cluster] and [raft]: member and cluster ids, the parsed
// initial cluster, the peer listener. Errors name the key and what is wrong.
Result<node::NodeOptions> node_options(const Config& config);

// Parses "name=host:port,name=host:port". Errors: empty or duplicate names, a missing or bad
// address.
Result<std::vector<node::Member>> parse_initial_cluster(const std::string& text,
                                                        uint64_t cluster_id);

// Parses an octal mode such as "0660". Errors: not octal, or outside 0..0777.
Result<uint32_t> parse_socket_mode(const std::string& text);

}  // namespace keel::agent
