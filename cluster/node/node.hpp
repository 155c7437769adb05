#pragma once
// The node: the Raft driver of one member. One node thread (an asio event loop) owns the
// RawNode, the Raft log storage, the peer transport and the store's write side. Everything
// else reaches it through the thread-safe calls below, which post work to that thread.
//
// Write path: propose() queues a validated command; the node thread drains the queue into the
// RawNode (many proposals per Ready: group commit), runs the shared Ready loop (persist with
// one fsync per Ready, send, apply, advance) and completes a proposal when the entry that
// carries its (member id, request id) is applied on THIS member, so a client reads its own
// writes from its own agent. Followers forward proposals to the leader (the core's `prop`);
// one that the transport reports it never wrote to a connection (the leader's connection not
// up yet, in reconnect backoff, a bound) waits for a leader and is forwarded again; one that
// may have been delivered is never sent twice.
//
// Outcomes (done runs exactly once, on the node thread; it must be quick and must not call
// back into the node synchronously):
//   the command's result                 applied (the result may itself be a typed error);
//   unavailable                          no leader within options.leader_wait_ms, or the
//                                        leader not reachable within the request timeout:
//                                        not applied;
//   overloaded                           a bound (named in the message) is full: not applied;
//   outcome_unknown                      forwarded, or appended by a leader that then lost its
//                                        term, and not seen applied within the request timeout;
//   shutting_down / removed / internal   as named.
//
// Reads: read_index() completes once this member has applied a linearizable read point
// (ReadIndex, thesis §6.4); concurrent requests share one quorum round.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster/model/kv_types.hpp"
#include "cluster/raft/types.hpp"
#include "cluster/storage/mvcc_store.hpp"

namespace keel::node {

// A member as every member knows it: from the bootstrap configuration or from the
// membership-change entry that added it.
struct Member {
  raft::NodeId id = 0;
  std::string name;
  std::string peer_address;  // host:port the others dial
  bool learner = false;
  bool operator==(const Member&) const = default;
};

// A learner agent (role = learner): not a Raft member; it keeps a replica from committed
// entries relayed down a tree (relay.hpp). As its parent reports it.
struct Learner {
  raft::NodeId id = 0;
  std::string name;
  std::string peer_address;
  raft::NodeId parent = 0;
  uint64_t applied = 0;
  bool operator==(const Learner&) const = default;
};

// Member ids and cluster ids are derived from names (etcd-style), so every member computes
// the same ids from the same --initial-cluster and token.
uint64_t cluster_id_of(const std::string& cluster_token);
raft::NodeId member_id_of(uint64_t cluster_id, const std::string& name);

struct NodeOptions {
  std::string name = "default";
  uint64_t cluster_id = 0;  // cluster_id_of(token)
  raft::NodeId id = 0;      // member_id_of(cluster_id, name)
  // Peer listener ("host:port"); empty = none (a single member with no peers).
  std::string listen_peer;
  // Bootstrap: the initial members (new cluster), or the members this one can reach to join
  // (existing cluster). Ignored once the data directory holds Raft state.
  std::vector<Member> initial_members;
  bool join_existing = false;  // --initial-cluster-state existing

  uint32_t tick_ms = 100;   // Raft tick
  int election_ticks = 10;  // election timeout = election_ticks * tick_ms (randomized to 2x)
  int heartbeat_ticks = 1;  // heartbeat interval in ticks
  uint64_t seed = 0;        // election timeout randomization; 0 = from the member id

  size_t max_batch_entries = 1024;            // proposals moved into the core per drain
  size_t max_pending_proposals = 10000;       // queued + in flight; over it: overloaded
  size_t max_pending_bytes = 64 << 20;        // encoded bytes queued + in flight
  uint64_t max_uncommitted_bytes = 64 << 20;  // the core's uncommitted bound (leader)
  size_t max_peer_frame_bytes = 64 << 20;     // transport frame limit
  uint32_t leader_wait_ms = 3000;             // with no leader: wait this long, then unavailable
  uint32_t request_timeout_ms = 10000;        // forwarded / term-lost writes: then outcome_unknown
  // Applied entries kept before the log prefix is dropped. A member further behind than this
  // needs a snapshot.
  uint64_t log_retain_entries = 100000;
  // Cluster time for leases: while a lease or lock-delay is pending, the leader appends a
  // time entry (no command; about 40 bytes in the log) at most once per this interval, and
  // at once when a deadline has come, so expiries happen on time and a replica's remaining
  // TTLs are at most this stale. One time entry is in flight at a time.
  uint32_t time_entry_interval_ms = 1000;
  // Streamed snapshots (for a member behind the retained log): chunk size, chunks in flight
  // (sent, not yet acknowledged) and how long a transfer may make no progress before it is
  // abandoned (the leader starts a new one later). Memory per transfer: the window's chunks.
  size_t snapshot_chunk_bytes = 1 << 20;
  size_t snapshot_window_chunks = 4;
  uint32_t snapshot_timeout_ms = 10000;

  // Learner agents and the relay tree (relay.hpp). relay_learner: this agent is one (never a
  // Raft member; initial_members names the voters it may attach under). Every member and
  // learner feeds at most relay_fanout learners; a parent sends a heartbeat after
  // relay_heartbeat_ms without entries; a child silent for relay_timeout_ms is let go, and a
  // learner whose parent is silent that long attaches elsewhere. A learner keeps its last
  // relay_ring_bytes of applied entries to feed its own children (one further behind gets a
  // snapshot).
  bool relay_learner = false;
  std::string advertise_peer;  // where parents and voters dial a learner (default listen_peer)
  size_t relay_fanout = 8;
  size_t relay_leader_fanout = 2;  // while this member leads (it also feeds the voters)
  uint32_t relay_heartbeat_ms = 500;
  uint32_t relay_timeout_ms = 3000;
  size_t relay_batch_bytes = 1 << 20;
  size_t relay_window_bytes = 8 << 20;
  size_t relay_ring_bytes = 16 << 20;
};

struct NodeStatus {
  uint64_t cluster_id = 0;
  raft::NodeId id = 0;
  std::string name;
  std::string role;  // leader | follower | candidate | pre_candidate | learner | removed
  raft::NodeId leader = 0;
  uint64_t term = 0;
  uint64_t commit_index = 0;
  uint64_t applied_index = 0;
  uint64_t last_index = 0;
  int64_t revision = 0;
  uint64_t cluster_ms = 0;  // cluster time as of applied_index (see NodeOptions)
  std::vector<Member> members;
  // Totals since start.
  uint64_t readies = 0;
  uint64_t proposals = 0;
  uint64_t log_syncs = 0;
  // Peer messages the Raft core refused (no correct member sends them; see
  // raft::DroppedCounts), in total and as "reason=count ..." for the non-zero reasons.
  uint64_t dropped_peer_msgs = 0;
  std::string dropped_by_reason;
  uint64_t time_entries = 0;         // time entries appended as leader (keep_time_moving)
  uint64_t snapshots_sent = 0;       // streams completed as sender
  uint64_t snapshots_installed = 0;  // streams installed as receiver
  uint64_t undelivered_props = 0;    // own forwarded writes the transport never sent (resent)
  // The relay tree: a learner's parent (0 = detached) and its path up to a voter (the
  // parent first), how far it is behind what its parent knows is committed, in entries and
  // in cluster time; every agent's children count and the learners below it.
  raft::NodeId upstream = 0;
  std::vector<raft::NodeId> upstream_path;
  uint64_t lag_entries = 0;
  uint64_t lag_ms = 0;
  uint64_t relay_children = 0;
  std::vector<Learner> learners;
};

// Where this replica stands, for reply headers: cheap to read on any thread.
struct ReplicaPosition {
  raft::NodeId id = 0;
  uint64_t term = 0;
  uint64_t applied_index = 0;
  uint64_t cluster_ms = 0;
  // No current upstream: a learner that is detached (or whose parent has none), a member
  // that knows no leader or was removed. Serializable reads may then be old.
  bool possibly_stale = false;
};

using Completion = std::function<void(Result<storage::CommandResult>)>;

// One member's answer to a cluster status query: who was asked, and what it said.
struct MemberStatus {
  raft::NodeId id = 0;
  std::string name;
  Result<NodeStatus> status;
};

enum class MemberChange : uint8_t { add_learner, promote, remove };

class Node {
 public:
  // Opens the Raft state in `engine` (bootstrapping a fresh data directory from options);
  // refuses a data directory that belongs to another cluster or member. Errors: typed.
  static Result<std::unique_ptr<Node>> open(storage::Engine& engine, NodeOptions options);
  ~Node();  // stop()s

  // Starts the peer listener and the node thread. on_applied(revision) runs on the node
  // thread after every applied batch (watch hubs hook in here); it must not block.
  Status start(std::function<void(int64_t revision)> on_applied);

  void propose(storage::Command command, Completion done);
  // done(ok) once a linearizable read of the local replica may be served; or unavailable,
  // shutting_down, removed.
  void read_index(std::function<void(Status)> done);
  // Membership (single-server changes). done gets the membership after the change is applied
  // on this member.
  void change_member(MemberChange change, const std::string& name, const std::string& peer_address,
                     std::function<void(Result<std::vector<Member>>)> done);
  // This member's status ([0]) and every other member's, asked over the peer connections; a
  // member that does not answer within timeout_ms gets an `unavailable` status.
  void cluster_status(uint32_t timeout_ms, std::function<void(std::vector<MemberStatus>)> done);

  NodeStatus status() const;         // any thread
  ReplicaPosition position() const;  // any thread

  // Stops accepting proposals, waits (bounded) for the ones in flight, hands leadership to
  // the most up-to-date voter if this member leads, then stops the thread. Idempotent.
  void stop();

  struct Impl;

 private:
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::node
