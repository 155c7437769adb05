#pragma once
// The relay tree: how committed entries reach learner agents without the leader sending to
// every one of them (ZooKeeper's observers fed with committed proposals; PigPaxos's relays).
//
// A learner agent is not a Raft member: it never votes, never counts for commit, and the
// Raft core never sends to it, so a slow or dead learner cannot slow a commit. Every member
// (voter or learner) runs a RelayHub that feeds at most `fanout` children with entries it
// has APPLIED (so only committed entries travel, and a learner's applied log is always a
// prefix of the committed log). A learner attaches by asking the voters first and, when a
// parent is full, the children it names (breadth first), so the leader feeds the other
// voters and at most `fanout` learners however many learners there are.
//
// Per child: entries go out in order from the child's next index, at most window_bytes
// unacknowledged; the child acknowledges its applied index (which is also its heartbeat) and
// now and then reports its subtree. A child whose next index the parent no longer holds gets
// the parent's state streamed (the snapshot chunks of node.cpp's format), then entries from
// the snapshot's index. A child silent for timeout_ms is let go.
//
// Threading: the node thread only, like the rest of the node.
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/node/wire.hpp"
#include "cluster/raft/types.hpp"
#include "cluster/storage/mvcc_store.hpp"

namespace keel::node {

using RelayClock = std::chrono::steady_clock;

struct RelayOptions {
  size_t fanout = 8;
  // Learners the Raft leader feeds at most (it already sends every entry to the voters);
  // a member that becomes leader with more lets the extra ones go, pointing them at others.
  size_t leader_fanout = 2;
  uint32_t heartbeat_ms = 500;
  uint32_t timeout_ms = 3000;
  size_t batch_bytes = 1 << 20;   // entry bytes per message (at least one entry)
  size_t window_bytes = 8 << 20;  // sent and not acknowledged, per child
  size_t snapshot_chunk_bytes = 1 << 20;
  size_t snapshot_window_chunks = 4;
};

// What the hub needs from the member it runs in.
class RelayFeed {
 public:
  virtual ~RelayFeed() = default;
  // The highest index that may be relayed: the member's applied index.
  virtual uint64_t relay_last() = 0;
  // Appends entries from `from` up to `to` (<= relay_last()), about max_bytes of them (at
  // least one). False when `from` is no longer held (the child needs a snapshot).
  virtual bool relay_entries(uint64_t from, uint64_t to, size_t max_bytes,
                             std::vector<raft::Entry>* out) = 0;
  virtual uint64_t relay_term(uint64_t index) = 0;  // 0 when not known
  virtual Result<std::unique_ptr<storage::SnapshotSource>> relay_snapshot() = 0;
  // The cluster fields of every message (leader, term, commit, cluster_ms, upstream_ok, path
  // with this member first).
  virtual wire::RelayEntries relay_header() = 0;
  virtual bool relay_send(raft::NodeId to, std::string payload) = 0;
  // A child's address is known (dial it) or it is gone (forget it, unless it is needed).
  virtual void relay_peer(raft::NodeId id, const std::string& peer_address, bool known) = 0;
};

class RelayHub {
 public:
  RelayHub(raft::NodeId self, RelayOptions options, RelayFeed& feed);

  // Accepts a learner (and starts feeding it) or names other candidates. A child that asks
  // again (after a gap, or to start over) is fed from its new next index.
  void on_subscribe(raft::NodeId from, const wire::RelaySubscribe& m, RelayClock::time_point now);
  void on_ack(raft::NodeId from, const wire::RelayAck& m, RelayClock::time_point now);
  // False when `from` is not a child with a transfer (the member's own snapshot code may
  // own the acknowledgement).
  bool on_snapshot_ack(raft::NodeId from, const wire::SnapshotAck& a, RelayClock::time_point now);
  bool is_child(raft::NodeId id) const { return children_.count(id) != 0; }
  // Sends each child what it lacks (within its window), and heartbeats that are due.
  void pump(RelayClock::time_point now);
  // Lets go of children silent for timeout_ms, and of those over the fan-out (a member that
  // became leader keeps leader_fanout: the others are redirected); then pump().
  void tick(RelayClock::time_point now);
  // Lets go of every child (they attach elsewhere), e.g. when this member stops.
  void drop_all();

  size_t child_count() const { return children_.size(); }
  // Every learner below this member: each child's last report of its subtree (or the child
  // alone until it reported).
  std::vector<Learner> subtree() const;

  struct Stats {
    uint64_t accepted = 0, redirected = 0, dropped = 0, entry_msgs = 0, entry_bytes = 0,
             snapshots = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  // The most children this member takes now: leader_fanout while it leads, else fanout.
  size_t fanout(const wire::RelayEntries& header) const;
  std::string fanout_reason(const wire::RelayEntries& header) const;
  // A redirect naming this member's children (but `from`) as candidates.
  wire::RelayRedirect redirect_to_children(raft::NodeId from, const std::string& reason) const;
  struct Sent {
    uint64_t last;  // index of the message's last entry
    size_t bytes;
  };
  struct Child {
    std::string name;
    std::string peer_address;
    uint64_t next = 1;   // next index to send
    uint64_t acked = 0;  // the child's applied index, as acknowledged
    std::deque<Sent> inflight;
    size_t inflight_bytes = 0;
    RelayClock::time_point heard, sent;
    std::vector<Learner> report;
    // A running snapshot transfer.
    std::unique_ptr<storage::SnapshotSource> snap;
    uint64_t transfer = 0, chunks_sent = 0, chunks_acked = 0;
    bool exhausted = false;
  };
  // feed, start_snapshot and pump_snapshot may drop the child: `c` is not used after them.
  void feed(raft::NodeId id, Child& c, RelayClock::time_point now);
  void start_snapshot(raft::NodeId id, Child& c);
  void pump_snapshot(raft::NodeId id, Child& c);
  void drop(raft::NodeId id, const std::string& why);

  const raft::NodeId self_;
  const RelayOptions opt_;
  RelayFeed& feed_;
  std::map<raft::NodeId, Child> children_;
  uint64_t next_transfer_;
  Stats stats_;
};

// What a learner's RelayChild needs from the learner it runs in.
class RelayUplink {
 public:
  virtual ~RelayUplink() = default;
  virtual uint64_t uplink_applied() = 0;
  virtual std::vector<Member> uplink_voters() = 0;  // asked first, in this order
  virtual bool uplink_send(raft::NodeId to, std::string payload) = 0;
  virtual void uplink_dial(raft::NodeId id, const std::string& peer_address) = 0;
  // Applies committed entries that follow the applied index, in order.
  virtual void uplink_apply(const std::vector<raft::Entry>& entries) = 0;
  // A snapshot streamed from the parent: whether one is being received, and the index of
  // one received whole (staged, not installed). Install it: its index's term is `term`.
  virtual bool uplink_receiving() = 0;
  virtual std::optional<uint64_t> uplink_staged() = 0;
  virtual void uplink_install(uint64_t term) = 0;
  virtual std::vector<Learner> uplink_subtree() = 0;  // the learners this one feeds
};

// A learner's link up the tree: finds a parent (the voters first, then the learners that
// full parents name, breadth first; never one whose path runs through this learner), takes
// its committed entries in order, acknowledges them, reports its subtree about once a
// second, and leaves a parent that is silent, without an upstream of its own, or lagging (this
// learner's applied index stuck below the commit index the parent reports) for timeout_ms,
// or whose connection was lost, to attach elsewhere from its applied index.
class RelayChild {
 public:
  RelayChild(raft::NodeId self, std::string name, std::string peer_address, RelayOptions options,
             RelayUplink& uplink);

  void tick(RelayClock::time_point now);
  void on_accept(raft::NodeId from, std::vector<raft::NodeId> path, RelayClock::time_point now);
  void on_redirect(raft::NodeId from, const wire::RelayRedirect& r, RelayClock::time_point now);
  void on_entries(raft::NodeId from, wire::RelayEntries m, RelayClock::time_point now);
  void on_unreachable(raft::NodeId peer);

  raft::NodeId parent() const { return parent_; }
  raft::NodeId trying() const { return trying_; }
  const std::vector<raft::NodeId>& path() const { return path_; }  // parent first, a voter last
  // The parent's last view of the cluster (its entries dropped).
  const wire::RelayEntries& header() const { return header_; }
  // Attached under a parent that has an upstream of its own.
  bool upstream_ok() const { return parent_ != 0 && header_.upstream_ok; }
  uint64_t reattachments() const { return reattachments_; }

 private:
  void detach(const std::string& why);
  void attach_step(RelayClock::time_point now);
  void subscribe(raft::NodeId to);

  const raft::NodeId self_;
  const std::string name_, peer_address_;
  const RelayOptions opt_;
  RelayUplink& up_;
  raft::NodeId parent_ = 0;
  std::vector<raft::NodeId> path_;
  RelayClock::time_point heard_, not_ok_since_, next_report_, next_round_, resubscribed_;
  RelayClock::time_point progress_;  // applied advanced, or nothing newer was known
  raft::NodeId trying_ = 0;          // asked to be fed, no answer yet
  RelayClock::time_point try_deadline_;
  std::deque<Member> candidates_;
  std::set<raft::NodeId> tried_;
  wire::RelayEntries header_;
  uint64_t reattachments_ = 0;
};

}  // namespace keel::node
