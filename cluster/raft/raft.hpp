#pragma once
// keel's Raft core: a deterministic state machine with no I/O, no clock and no threads
// (etcd-io/raft RawNode shape). Everything it needs arrives through the calls below; everything
// it wants done leaves through Ready.
//
// The driver's loop (one thread owns the RawNode):
//   feed inputs: tick() every tick interval, step() for each received message, propose(),
//                read_index(), propose_conf_change(), transfer_leadership();
//   while (node.has_ready()) {
//     Ready rd = node.ready();
//     1. persist: storage.apply_snapshot(rd.snapshot), storage.append(rd.entries),
//        storage.set_hard_state(*rd.hard_state) -- then sync (one fsync per Ready);
//     2. send rd.messages (they may promise what step 1 made durable);
//     3. apply: install rd.snapshot, apply rd.committed_entries in order, release rd.read_states
//        once applied >= their index;
//     4. node.advance(rd).
//   }
// ready() and advance() strictly alternate. Inputs may be fed between them.
//
// Expected outcomes are values (ProposeResult, ReadResult, TransferResult); broken invariants
// are KEEL_RAFT_ASSERT failures, on in release builds. A peer message that no correct member
// sends is never an assertion: step() drops it and counts it (DroppedCounts).
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/raft/log.hpp"
#include "cluster/raft/progress.hpp"
#include "cluster/raft/rand.hpp"
#include "cluster/raft/storage.hpp"
#include "cluster/raft/types.hpp"

namespace keel::raft {

struct Config {
  NodeId id = kNoNode;                  // this member, != 0
  const LogStorage* storage = nullptr;  // borrowed; must outlive the RawNode
  uint64_t seed = 0;                    // seeds the randomized election timeout (§5.2)
  int election_tick = 10;               // election timeout in ticks; randomized in [e, 2e)
  int heartbeat_tick = 1;               // leader heartbeat interval in ticks, < election_tick
  uint64_t applied = 0;                 // last index applied before a restart (0 = snapshot index)
  uint64_t max_size_per_msg = 1 << 20;  // batching: bytes of entries per append
  uint64_t max_committed_size_per_ready = 16 << 20;
  uint64_t max_uncommitted_entries_size = 64 << 20;  // 0 = unbounded; see ProposeStatus::dropped
  size_t max_inflight_msgs = 256;                    // pipelining: appends in flight per follower
  uint64_t max_inflight_bytes = 0;                   // 0 = unbounded
  bool pre_vote = true;                              // thesis §9.6
  bool check_quorum = true;                          // thesis §6.2 (and leader leases on votes)
  bool forward_proposals = true;                     // followers forward to their leader
  // Ids the driver's durable record says were removed: never added back (was_removed), even
  // when their removal is older than the log and this core's memory.
  std::vector<NodeId> removed;
};

enum class ProposeStatus : uint8_t {
  ok,                   // appended to the leader's log at (index, term); not yet committed
  forwarded,            // sent to the known leader; outcome unknown (watch the applied log)
  not_leader,           // no leader known (or forwarding disabled): retry elsewhere/later
  dropped,              // leader is transferring leadership, was removed, or the uncommitted
                        // bound (max_uncommitted_entries_size) is reached: retry later
  conf_change_pending,  // another membership change is uncommitted, or the leader has not
                        // committed an entry of its term yet (thesis §4.1 safety rule)
  invalid,              // the membership change changes nothing, leaves no voter, or adds back
                        // a member removed earlier (an id never returns; see README.md)
};
const char* to_string(ProposeStatus s);

struct ProposeResult {
  ProposeStatus status = ProposeStatus::not_leader;
  uint64_t index = 0;  // set when ok
  uint64_t term = 0;   // set when ok; the entry is ours iff (index, term) is applied
  bool ok() const { return status == ProposeStatus::ok; }
};

enum class ReadResult : uint8_t {
  ok,          // leader: a ReadState will be released after a quorum round
  forwarded,   // sent to the leader; a ReadState follows if it answers
  not_leader,  // no leader known: retry
  invalid,     // empty context
};

enum class TransferResult : uint8_t {
  ok,          // transfer started (or already in progress towards this member)
  forwarded,   // sent to the leader
  not_leader,  // no leader known
  invalid,     // target is not a voter, or is this member
};

// Peer messages step() dropped because no correct member sends them, by reason. A dropped
// message changes nothing and is not answered (from_non_member: see there). transport::validate()
// rejects the stateless cases (malformed, *_malformed) before step(); the judgements that need the
// member's state are only made here. Any count other than from_non_member means a buggy or
// corrupting peer: a metric to alert on.
struct DroppedCounts {
  // Type out of range; from 0 or this member; term 0 on a message that needs one, or a term on
  // a forwarded prop/read_index; a read_index without context; a prop entry of unknown type.
  uint64_t malformed = 0;
  // app entries not contiguous from index + 1 (or overflowing), of term 0, above the message
  // term or decreasing (from log_term on); log_term above term; an entry of unknown type or a
  // conf_change entry without a well-formed resulting configuration.
  uint64_t append_malformed = 0;
  // snap without snapshot, with index 0, term 0 or above the message term, or a configuration
  // without voters or not well formed (ids sorted, unique, non-zero; voters and learners
  // disjoint).
  uint64_t snapshot_malformed = 0;
  // app / heartbeat / snap reaching a leader from another "leader" of its own term (§5.2: one
  // leader per term; etcd's stepLeader ignores them too).
  uint64_t same_term_leader = 0;
  // heartbeat whose commit is beyond our last index (a correct leader sends min(match, commit);
  // etcd would panic in commitTo). Nothing is committed from it.
  uint64_t commit_beyond_log = 0;
  // app_resp (accept or reject) whose index is beyond the leader's last index.
  uint64_t ack_beyond_log = 0;
  // app_resp / heartbeat_resp from an id the leader has no progress for; vote or pre-vote
  // response from a non-voter. Ignored after the usual term handling. Also reached by a
  // member's answer arriving just after its removal: not an alarm on its own.
  uint64_t from_non_member = 0;

  uint64_t total() const {
    return malformed + append_malformed + snapshot_malformed + same_term_leader +
           commit_beyond_log + ack_beyond_log + from_non_member;
  }
  // f(name, count) for each reason, in declaration order (metrics export).
  template <class F>
  void for_each(F&& f) const {
    f("malformed", malformed);
    f("append_malformed", append_malformed);
    f("snapshot_malformed", snapshot_malformed);
    f("same_term_leader", same_term_leader);
    f("commit_beyond_log", commit_beyond_log);
    f("ack_beyond_log", ack_beyond_log);
    f("from_non_member", from_non_member);
  }
};

struct SoftState {
  NodeId lead = kNoNode;
  Role role = Role::follower;
  bool operator==(const SoftState&) const = default;
};

struct Ready {
  std::optional<SoftState> soft_state;       // set when leader or role changed
  std::optional<HardState> hard_state;       // persist when set
  std::shared_ptr<const Snapshot> snapshot;  // persist and install when set (before entries)
  std::vector<Entry> entries;                // persist (append; replaces a conflicting suffix)
  std::vector<Entry> committed_entries;      // apply in order (after the snapshot)
  std::vector<Message> messages;             // send after persisting
  std::vector<ReadState> read_states;        // serve once applied >= index
};

class RawNode {
 public:
  // Restores term, vote, commit, log and configuration from cfg.storage.
  explicit RawNode(const Config& cfg);

  // Advances logical time by one tick: elections (§5.2), heartbeats, check-quorum.
  void tick();
  // Handles a message addressed to this member (m.to == id(): the caller routes). Stale,
  // duplicated and reordered messages are expected and handled; messages no correct member
  // sends are dropped and counted (dropped()).
  void step(Message m);

  // Proposes a command (§5.3). See ProposeStatus.
  ProposeResult propose(std::string data);
  // Proposes a single-server membership change (thesis §4.1, README.md).
  // `context` is carried in the entry, opaque to the core.
  ProposeResult propose_conf_change(const ConfChange& cc, const std::string& context = {});
  // Requests a linearizable read point for `context` (thesis §6.4); the answer arrives as a
  // ReadState with the same context in a later Ready. Contexts should be unique.
  ReadResult read_index(std::string context);
  // Hands leadership to voter `to` (thesis §3.10): brings it up to date, then timeout_now.
  TransferResult transfer_leadership(NodeId to);
  // Starts an election now (tests, bootstrap of a single member).
  void campaign();
  // The driver could not deliver to `to` / a snapshot send finished.
  void report_unreachable(NodeId to);
  void report_snapshot(NodeId to, bool ok);

  bool has_ready() const;
  Ready ready();
  void advance(const Ready& rd);

  // ---- inspection (tests, metrics, the simulator's checkers) ------------------------------
  NodeId id() const { return cfg_.id; }
  Role role() const { return role_; }
  NodeId leader() const { return lead_; }
  uint64_t term() const { return term_; }
  NodeId vote() const { return vote_; }
  uint64_t commit_index() const { return log_.committed(); }
  uint64_t applied_index() const { return log_.applied(); }
  uint64_t first_index() const { return log_.first_index(); }
  uint64_t last_index() const { return log_.last_index(); }
  std::optional<uint64_t> log_term(uint64_t index) const { return log_.term(index); }
  // The configuration in effect: the latest one in the log, committed or not.
  const ConfState& conf_state() const { return conf_; }
  NodeId transferee() const { return lead_transferee_; }
  // Leader only: a follower's progress, or nullptr.
  const Progress* progress(NodeId id) const;
  uint64_t uncommitted_bytes() const { return uncommitted_bytes_; }
  // Peer messages dropped by step(), by reason. Counts since construction (not persisted).
  const DroppedCounts& dropped() const { return dropped_; }

  // Asserts the core's internal invariants. Called after every input when the core is built
  // with KEEL_RAFT_INVARIANTS (Debug builds); callable any time.
  void check_invariants() const;

 private:
  struct ConfPoint {
    uint64_t index;
    ConfState conf;
  };
  struct PendingRead {
    std::string context;
    NodeId from;
    uint64_t index;
    std::vector<NodeId> acks;
  };

  void send(Message m);
  void reset(uint64_t term);
  void become_follower(uint64_t term, NodeId lead);
  void become_pre_candidate();
  void become_candidate();
  void become_leader();
  void hup(bool transfer);
  void start_election(bool pre, bool transfer);
  bool promotable() const;
  int quorum() const { return static_cast<int>(conf_.voters.size() / 2 + 1); }
  bool in_lease() const;

  void tick_election();
  void tick_heartbeat();

  void step_leader(Message& m);
  void step_candidate(Message& m);
  void step_follower(Message& m);
  // The counter of the reason `m` must be dropped for, or nullptr to handle it (see
  // DroppedCounts). Judged against the state before step() changes anything.
  uint64_t DroppedCounts::*refusal(const Message& m) const;
  void handle_vote_request(const Message& m);
  void handle_append(Message& m);
  void handle_heartbeat(const Message& m);
  void handle_snapshot(const Message& m);
  void handle_app_resp(const Message& m);
  void handle_heartbeat_resp(const Message& m);
  void handle_read_index(NodeId from, std::string context);
  TransferResult handle_transfer(NodeId to);
  void tally(const Message& m);

  // Appends on the leader; elsewhere forwards to the leader (or answers not_leader).
  ProposeResult propose_entry(Entry e);
  ProposeResult append_proposal(Entry e);
  bool send_append(NodeId to, bool send_if_empty);
  void send_snapshot(NodeId to, Progress& pr);
  void bcast_append();
  void bcast_heartbeat(const std::string& context);
  void send_timeout_now(NodeId to);
  bool maybe_commit();
  void on_leader_commit();
  void release_read(NodeId from, const std::string& context, uint64_t index);
  bool committed_in_term() const;

  // Configuration tracking (changes take effect when appended, thesis §4.1).
  void log_appended(const std::vector<Entry>& ents, size_t from);
  void log_truncated_from(uint64_t index);
  void set_conf(const ConfState& conf);
  // Ids removed by a committed configuration change that the core has seen (never re-added).
  void note_removals(const ConfState& before, const ConfState& after);
  bool was_removed(NodeId id) const;
  void sync_progress();

  Config cfg_;
  RaftLog log_;
  Rng rng_;

  uint64_t term_ = 0;
  NodeId vote_ = kNoNode;
  NodeId lead_ = kNoNode;
  Role role_ = Role::follower;

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;

  ConfState conf_;
  std::vector<ConfPoint> conf_history_;  // [0] = snapshot's configuration; sorted by index
  // Ids that left the configuration by a committed change, from history points discarded so far
  // (the rest is read from conf_history_). In memory only: see was_removed().
  std::set<NodeId> removed_;

  std::map<NodeId, Progress> prs_;  // leader only; ordered for determinism
  std::map<NodeId, bool> votes_;    // candidate / pre-candidate
  NodeId lead_transferee_ = kNoNode;
  uint64_t noop_index_ = 0;  // leader: index of its first entry of the term

  std::deque<PendingRead> read_queue_;                        // waiting for a quorum
  std::deque<std::pair<NodeId, std::string>> reads_waiting_;  // waiting for commit in term
  std::vector<ReadState> read_states_;

  uint64_t uncommitted_bytes_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> uncommitted_;  // (index, bytes) per entry

  std::vector<Message> msgs_;
  bool bcast_pending_ = false;  // leader: appends to broadcast at the next ready()
  bool ready_outstanding_ = false;
  SoftState prev_soft_;
  HardState prev_hard_;
  std::vector<uint64_t> scratch_;
  DroppedCounts dropped_;
};

}  // namespace keel::raft
