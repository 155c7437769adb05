#include "agent/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

namespace keel::agent {

std::string Config::effective_socket_path() const {
  return socket_path.empty() ? data_dir + "/keel.sock" : socket_path;
}

size_t Config::effective_server_threads() const {
  if (server_threads != 0) return server_threads;
  // One core is left to the node thread (apply, log writes) and the local clients: on this
  // project's 2-core machine, a second serving thread cut 100-client local reads by ~15%
  // (86-97k/s against 108-116k/s with one, kv_bench on the same cores).
  const size_t cores = std::thread::hardware_concurrency();
  return std::clamp<size_t>(cores > 1 ? cores - 1 : 1, 1, kMaxServerThreads);
}

int64_t Config::effective_min_ttl_ms() const {
  const int64_t election_ms = static_cast<int64_t>(tick_ms) * election_ticks;
  return std::max<int64_t>(lease_min_ttl_ms, 2 * election_ms);
}

namespace {

// host:port with a non-empty host and a port in 1..65535 (0 allowed for listeners in tests).
Status check_address(const std::string& key, const std::string& addr, bool allow_port_zero) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size()) {
    return make_error(ErrorCode::invalid_argument, key + " \"" + addr + "\" is not host:port");
  }
  const std::string port = addr.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
      std::stoul(port) > 65535 || (!allow_port_zero && std::stoul(port) == 0)) {
    return make_error(ErrorCode::invalid_argument,
                      key + " \"" + addr + "\" has no valid port (1-65535)");
  }
  return ok_status();
}

}  // namespace

Result<std::vector<node::Member>> parse_initial_cluster(const std::string& text,
                                                        uint64_t cluster_id) {
  std::vector<node::Member> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    pos = comma + 1;
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return make_error(ErrorCode::invalid_argument,
                        "initial_cluster entry \"" + item + "\" is not name=host:port");
    }
    node::Member m;
    m.name = item.substr(0, eq);
    m.peer_address = item.substr(eq + 1);
    if (auto st = check_address("initial_cluster member " + m.name, m.peer_address, false); !st)
      return std::move(st).error();
    m.id = node::member_id_of(cluster_id, m.name);
    for (const auto& o : out) {
      if (o.name == m.name) {
        return make_error(ErrorCode::invalid_argument,
                          "initial_cluster names member " + m.name + " twice");
      }
    }
    out.push_back(std::move(m));
    if (comma == text.size()) break;
  }
  return out;
}

Result<node::NodeOptions> node_options(const Config& c) {
  node::NodeOptions o;
  if (c.name.empty()) return make_error(ErrorCode::invalid_argument, "cluster.name is empty");
  if (c.initial_cluster_state != "new" && c.initial_cluster_state != "existing") {
    return make_error(
        ErrorCode::invalid_argument,
        "cluster.initial_cluster_state \"" + c.initial_cluster_state + "\" is not new or existing");
  }
  o.name = c.name;
  o.cluster_id = node::cluster_id_of(c.initial_cluster_token);
  o.id = node::member_id_of(o.cluster_id, c.name);
  o.join_existing = c.initial_cluster_state == "existing";
  std::string initial = c.initial_cluster;
  if (initial.empty()) {
    initial = c.name + "=" + (c.advertise_peer.empty() ? "127.0.0.1:2380" : c.advertise_peer);
  }
  auto members = parse_initial_cluster(initial, o.cluster_id);
  if (!members) return std::move(members).error();
  o.initial_members = std::move(members).value();
  const node::Member* self = nullptr;
  for (const auto& m : o.initial_members) {
    if (m.id == o.id) self = &m;
  }
  if (c.role != "voter" && c.role != "learner") {
    return make_error(ErrorCode::invalid_argument,
                      "cluster.role \"" + c.role + "\" is not voter or learner");
  }
  if (c.role == "learner") {
    // The voters are named by initial_cluster; this agent only needs an address to be fed on.
    if (c.initial_cluster.empty()) {
      return make_error(ErrorCode::invalid_argument,
                        "cluster.role = learner needs cluster.initial_cluster (the voters)");
    }
    if (self) {
      return make_error(ErrorCode::invalid_argument,
                        "cluster.role = learner, but cluster.initial_cluster names this agent (" +
                            c.name + "): it lists the voters only");
    }
    o.relay_learner = true;
    o.advertise_peer = c.advertise_peer.empty() ? c.listen_peer : c.advertise_peer;
    o.listen_peer = c.listen_peer.empty() ? c.advertise_peer : c.listen_peer;
    if (o.listen_peer.empty()) {
      return make_error(ErrorCode::invalid_argument,
                        "cluster.role = learner needs cluster.advertise_peer or "
                        "cluster.listen_peer (its parent in the relay tree dials it)");
    }
    if (auto st = check_address("cluster.listen_peer", o.listen_peer, true); !st)
      return std::move(st).error();
  } else if (!self) {
    return make_error(
        ErrorCode::invalid_argument,
        "cluster.initial_cluster does not name this member (cluster.name = " + c.name + ")");
  }
  if (self && !c.advertise_peer.empty() && c.advertise_peer != self->peer_address) {
    return make_error(ErrorCode::invalid_argument,
                      "cluster.advertise_peer " + c.advertise_peer +
                          " differs from this member's initial_cluster entry " +
                          self->peer_address);
  }
  if (self) o.listen_peer = c.listen_peer;
  // A lone member listens only when asked (a single-node agent needs no TCP port); with
  // peers it listens on its own address unless told otherwise.
  if (self && o.listen_peer.empty() && (o.initial_members.size() > 1 || o.join_existing))
    o.listen_peer = self->peer_address;
  if (!o.listen_peer.empty()) {
    if (auto st = check_address("cluster.listen_peer", o.listen_peer, true); !st)
      return std::move(st).error();
  }
  if (c.heartbeat_ticks >= c.election_ticks) {
    return make_error(ErrorCode::invalid_argument,
                      "raft.heartbeat_ticks must be below raft.election_ticks");
  }
  o.tick_ms = c.tick_ms;
  o.time_entry_interval_ms = c.time_entry_interval_ms;
  o.election_ticks = c.election_ticks;
  o.heartbeat_ticks = c.heartbeat_ticks;
  o.max_batch_entries = c.max_batch_entries;
  o.max_pending_proposals = c.max_pending_proposals;
  o.max_pending_bytes = std::max<size_t>(c.max_pending_bytes, 2 * c.limits.max_request_bytes);
  o.max_uncommitted_bytes = c.max_uncommitted_bytes;
  o.max_peer_frame_bytes = std::max<size_t>(64 << 20, 4 * c.limits.max_request_bytes);
  o.leader_wait_ms = c.leader_wait_ms;
  o.request_timeout_ms = c.request_timeout_ms;
  o.log_retain_entries = c.log_retain_entries;
  if (c.snapshot_chunk_bytes + 1024 > o.max_peer_frame_bytes) {
    return make_error(ErrorCode::invalid_argument,
                      "raft.snapshot_chunk_bytes must be below the peer frame limit (" +
                          std::to_string(o.max_peer_frame_bytes - 1024) + " bytes)");
  }
  o.snapshot_chunk_bytes = c.snapshot_chunk_bytes;
  o.snapshot_window_chunks = c.snapshot_window_chunks;
  o.snapshot_timeout_ms = c.snapshot_timeout_ms;
  o.relay_fanout = c.relay_fanout;
  o.relay_leader_fanout = c.relay_leader_fanout;
  o.relay_heartbeat_ms = c.relay_heartbeat_ms;
  o.relay_timeout_ms = c.relay_timeout_ms;
  o.relay_ring_bytes = c.relay_ring_bytes;
  if (o.relay_heartbeat_ms * 2 > o.relay_timeout_ms) {
    return make_error(ErrorCode::invalid_argument,
                      "relay.heartbeat_ms must be at most half of relay.timeout_ms");
  }
  return o;
}

Result<uint32_t> parse_socket_mode(const std::string& text) {
  if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos) {
    return make_error(ErrorCode::invalid_argument,
                      "socket_mode \"" + text + "\" is not an octal mode such as \"0660\"");
  }
  return static_cast<uint32_t>(std::stoul(text, nullptr, 8));
}

namespace {

using Setter = std::function<Status(const toml::node&)>;

Error key_error(const std::string& key, const std::string& why) {
  return make_error(ErrorCode::invalid_argument, "config key " + key + ": " + why);
}

template <typename T>
Setter size_setter(const std::string& key, T& target, int64_t min) {
  return [key, &target, min](const toml::node& n) -> Status {
    auto v = n.value<int64_t>();
    if (!n.is_integer() || !v) return key_error(key, "must be an integer");
    if (*v < min) return key_error(key, "must be at least " + std::to_string(min));
    target = static_cast<T>(*v);
    return ok_status();
  };
}

Setter string_setter(const std::string& key, std::string& target) {
  return [key, &target](const toml::node& n) -> Status {
    if (!n.is_string()) return key_error(key, "must be a string");
    target = *n.value<std::string>();
    return ok_status();
  };
}

}  // namespace

Status load_config_file(const std::string& path, bool must_exist, Config& c) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (must_exist) {
      return make_error(ErrorCode::invalid_argument, "config file " + path + " does not exist");
    }
    return ok_status();
  }
  toml::table root;
  try {
    root = toml::parse_file(std::string_view(path));
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return make_error(ErrorCode::invalid_argument,
                      "config file " + path + ":" + std::to_string(where.line) + ":" +
                          std::to_string(where.column) + ": " + std::string(e.description()));
  }

  std::map<std::string, Setter> setters = {
      {"data_dir", string_setter("data_dir", c.data_dir)},
      {"socket_path", string_setter("socket_path", c.socket_path)},
      {"socket_mode",
       [&c](const toml::node& n) -> Status {
         if (!n.is_string()) return key_error("socket_mode", "must be a string such as \"0660\"");
         auto mode = parse_socket_mode(*n.value<std::string>());
         if (!mode) return std::move(mode).error();
         c.socket_mode = *mode;
         return ok_status();
       }},
      {"log_level", string_setter("log_level", c.log_level)},
      {"limits.max_key_bytes", size_setter("limits.max_key_bytes", c.limits.max_key_bytes, 1)},
      {"limits.max_value_bytes",
       size_setter("limits.max_value_bytes", c.limits.max_value_bytes, 0)},
      {"limits.max_request_bytes",
       size_setter("limits.max_request_bytes", c.limits.max_request_bytes, 1024)},
      {"limits.max_txn_ops", size_setter("limits.max_txn_ops", c.limits.max_txn_ops, 1)},
      {"limits.max_response_bytes",
       size_setter("limits.max_response_bytes", c.limits.max_response_bytes, 4096)},
      {"limits.max_watchers", size_setter("limits.max_watchers", c.limits.max_watchers, 0)},
      {"limits.max_connections", size_setter("limits.max_connections", c.max_connections, 1)},
      {"server.threads",
       [&c](const toml::node& n) -> Status {
         if (auto st = size_setter("server.threads", c.server_threads, 0)(n); !st) return st;
         if (c.server_threads > kMaxServerThreads) {
           return key_error("server.threads",
                            "must be at most " + std::to_string(kMaxServerThreads));
         }
         return ok_status();
       }},
      {"storage.cache_size_mb", size_setter("storage.cache_size_mb", c.cache_size_mb, 1)},
      {"storage.log_file_max_mb", size_setter("storage.log_file_max_mb", c.log_file_max_mb, 1)},
      {"storage.checkpoint_interval_ms",
       size_setter("storage.checkpoint_interval_ms", c.checkpoint_interval_ms, 0)},
      {"storage.checkpoint_log_mb",
       size_setter("storage.checkpoint_log_mb", c.checkpoint_log_mb, 0)},
      {"storage.compaction_batch_rows",
       size_setter("storage.compaction_batch_rows", c.compaction_batch_rows, 1)},
      {"storage.max_batch_entries",
       size_setter("storage.max_batch_entries", c.max_batch_entries, 1)},
      {"watch.progress_interval_ms",
       size_setter("watch.progress_interval_ms", c.watch_progress_interval_ms, 0)},
      {"watch.batch_bytes", size_setter("watch.batch_bytes", c.watch_batch_bytes, 1024)},
      {"cluster.name", string_setter("cluster.name", c.name)},
      {"cluster.listen_peer", string_setter("cluster.listen_peer", c.listen_peer)},
      {"cluster.advertise_peer", string_setter("cluster.advertise_peer", c.advertise_peer)},
      {"cluster.initial_cluster", string_setter("cluster.initial_cluster", c.initial_cluster)},
      {"cluster.initial_cluster_state",
       string_setter("cluster.initial_cluster_state", c.initial_cluster_state)},
      {"cluster.role", string_setter("cluster.role", c.role)},
      {"relay.fanout", size_setter("relay.fanout", c.relay_fanout, 1)},
      {"relay.leader_fanout", size_setter("relay.leader_fanout", c.relay_leader_fanout, 1)},
      {"relay.heartbeat_ms", size_setter("relay.heartbeat_ms", c.relay_heartbeat_ms, 10)},
      {"relay.timeout_ms", size_setter("relay.timeout_ms", c.relay_timeout_ms, 100)},
      {"relay.ring_bytes", size_setter("relay.ring_bytes", c.relay_ring_bytes, 0)},
      {"cluster.initial_cluster_token",
       string_setter("cluster.initial_cluster_token", c.initial_cluster_token)},
      {"raft.tick_ms", size_setter("raft.tick_ms", c.tick_ms, 1)},
      {"raft.election_ticks", size_setter("raft.election_ticks", c.election_ticks, 2)},
      {"raft.heartbeat_ticks", size_setter("raft.heartbeat_ticks", c.heartbeat_ticks, 1)},
      {"raft.leader_wait_ms", size_setter("raft.leader_wait_ms", c.leader_wait_ms, 0)},
      {"raft.request_timeout_ms", size_setter("raft.request_timeout_ms", c.request_timeout_ms, 1)},
      {"raft.max_pending_proposals",
       size_setter("raft.max_pending_proposals", c.max_pending_proposals, 1)},
      {"raft.max_pending_bytes", size_setter("raft.max_pending_bytes", c.max_pending_bytes, 1024)},
      {"raft.max_uncommitted_bytes",
       size_setter("raft.max_uncommitted_bytes", c.max_uncommitted_bytes, 0)},
      {"raft.log_retain_entries", size_setter("raft.log_retain_entries", c.log_retain_entries, 1)},
      {"raft.snapshot_chunk_bytes",
       size_setter("raft.snapshot_chunk_bytes", c.snapshot_chunk_bytes, 4096)},
      {"raft.snapshot_window_chunks",
       size_setter("raft.snapshot_window_chunks", c.snapshot_window_chunks, 1)},
      {"raft.snapshot_timeout_ms",
       size_setter("raft.snapshot_timeout_ms", c.snapshot_timeout_ms, 100)},
      {"raft.time_entry_interval_ms",
       size_setter("raft.time_entry_interval_ms", c.time_entry_interval_ms, 10)},
      {"lease.min_ttl_ms", size_setter("lease.min_ttl_ms", c.lease_min_ttl_ms, 1)},
      {"lease.max_ttl_ms", size_setter("lease.max_ttl_ms", c.lease_max_ttl_ms, 1)},
      {"lease.default_ttl_ms", size_setter("lease.default_ttl_ms", c.lease_default_ttl_ms, 1)},
      {"lease.renew_tick_ms", size_setter("lease.renew_tick_ms", c.lease_renew_tick_ms, 10)},
      {"limits.max_leases_per_agent",
       size_setter("limits.max_leases_per_agent", c.max_leases_per_agent, 1)},
      {"limits.max_lock_name_bytes",
       size_setter("limits.max_lock_name_bytes", c.limits.max_lock_name_bytes, 1)},
      {"lock.default_delay_ms", size_setter("lock.default_delay_ms", c.lock_default_delay_ms, 0)},
  };
  const std::map<std::string, bool> tables = {
      {"limits", true}, {"storage", true}, {"watch", true}, {"cluster", true}, {"raft", true},
      {"lease", true},  {"relay", true},   {"lock", true},  {"server", true}};

  for (const auto& [k, node] : root) {
    std::string key(k.str());
    if (node.is_table()) {
      if (!tables.count(key)) {
        return make_error(ErrorCode::invalid_argument,
                          "config file " + path + ": unknown table [" + key + "]");
      }
      for (const auto& [sub, value] : *node.as_table()) {
        std::string full = key + "." + std::string(sub.str());
        auto it = setters.find(full);
        if (it == setters.end()) {
          return make_error(ErrorCode::invalid_argument,
                            "config file " + path + ": unknown key " + full);
        }
        if (auto st = it->second(value); !st) {
          return make_error(ErrorCode::invalid_argument,
                            "config file " + path + ": " + st.error().message);
        }
      }
      continue;
    }
    auto it = setters.find(key);
    if (it == setters.end() || key.find('.') != std::string::npos) {
      return make_error(ErrorCode::invalid_argument,
                        "config file " + path + ": unknown key " + key);
    }
    if (auto st = it->second(node); !st) {
      return make_error(ErrorCode::invalid_argument,
                        "config file " + path + ": " + st.error().message);
    }
  }
  return ok_status();
}

}  // namespace keel::agent
