#pragma once
// Wire and storage types of the Raft core. Plain values, no I/O. Section numbers refer to the
// Raft paper (Ongaro & Ousterhout 2014) and Ongaro's thesis (2014), "thesis §x".
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::raft {

using NodeId = uint64_t;  // 0 means "none"
inline constexpr NodeId kNoNode = 0;

enum class EntryType : uint8_t {
  normal,       // application command; empty data = the leader's no-op of a new term
  conf_change,  // data = encode_conf_change(...); takes effect when appended (see README.md)
};

// One log entry (§5.3). index and term are assigned by the leader.
struct Entry {
  uint64_t index = 0;
  uint64_t term = 0;
  EntryType type = EntryType::normal;
  std::string data;
};

// Bytes an entry counts for flow control and the uncommitted bound.
inline uint64_t entry_bytes(const Entry& e) {
  return e.data.size() + 16;
}

// What must be durable before any message of the same Ready is sent (Figure 2, "persistent
// state on all servers"); commit is persisted too so a restart re-applies up to it.
struct HardState {
  uint64_t term = 0;
  NodeId vote = kNoNode;
  uint64_t commit = 0;
  bool operator==(const HardState&) const = default;
};

// A configuration: sorted, disjoint id lists. Learners receive the log but never vote and never
// count towards a quorum.
struct ConfState {
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;
  bool is_voter(NodeId id) const;
  bool is_learner(NodeId id) const;
  bool contains(NodeId id) const { return is_voter(id) || is_learner(id); }
  bool operator==(const ConfState&) const = default;
};

// What the core requires of a configuration it receives (snapshot, conf_change entry): at least
// one voter; each list sorted, without duplicates or 0 (the core binary-searches them); no id
// in both lists.
bool conf_well_formed(const ConfState& conf);

// A single-server membership change (thesis §4.1). Promotion = add_voter of a learner;
// demotion = add_learner of a voter.
enum class ConfChangeType : uint8_t { add_voter, add_learner, remove_node };
struct ConfChange {
  ConfChangeType type = ConfChangeType::add_voter;
  NodeId node = kNoNode;
};

// The configuration after `cc`, or nullopt when `cc` changes nothing or would leave no voter.
std::optional<ConfState> apply_conf_change(const ConfState& conf, const ConfChange& cc);

// Conf-change entry payload: the change and (once the leader appended it) the full resulting
// configuration, so any member can read its configuration from the log alone.
// `context` is opaque to the core and carried in the entry (the driver's member data).
std::string encode_conf_change(const ConfChange& cc, const ConfState* result,
                               const std::string& context = {});
// False if `data` is malformed. `has_result` tells whether `result` was filled.
bool decode_conf_change(const std::string& data, ConfChange* cc, ConfState* result,
                        bool* has_result, std::string* context = nullptr);

struct SnapshotMeta {
  uint64_t index = 0;  // last entry covered
  uint64_t term = 0;   // its term
  ConfState conf;      // configuration as of index
};

struct Snapshot {
  SnapshotMeta meta;
  std::string data;  // application state, opaque to the core
};

enum class MessageType : uint8_t {
  app,              // AppendEntries (§5.3): index/log_term = previous entry, commit
  app_resp,         // index = last matched (accept) or rejected index (reject) + hint
  vote,             // RequestVote (§5.2): index/log_term = candidate's last entry
  vote_resp,        //
  pre_vote,         // thesis §9.6: term = the term the candidate would campaign in
  pre_vote_resp,    //
  heartbeat,        // commit = min(follower match, leader commit); context = ReadIndex ctx
  heartbeat_resp,   // echoes context
  snap,             // InstallSnapshot (§7)
  prop,             // proposal forwarded by a follower to its leader (term 0)
  read_index,       // ReadIndex forwarded by a follower to its leader (term 0)
  read_index_resp,  // index = read index for context
  transfer_leader,  // forwarded transfer request; index = transferee
  timeout_now,      // thesis §3.10: campaign now, skipping pre-vote and leases
};
const char* to_string(MessageType t);

struct Message {
  MessageType type = MessageType::app;
  NodeId from = kNoNode;
  NodeId to = kNoNode;
  uint64_t term = 0;
  uint64_t log_term = 0;
  uint64_t index = 0;
  uint64_t commit = 0;
  uint64_t reject_hint = 0;
  bool reject = false;
  bool transfer = false;  // vote/pre_vote: campaign started by timeout_now (bypasses leases)
  std::vector<Entry> entries;
  std::shared_ptr<const Snapshot> snapshot;
  std::string context;
};

// A released linearizable read: once the state machine applied `index`, reads for `context`
// may be served (§6.4 / thesis §6.4 ReadIndex).
struct ReadState {
  uint64_t index = 0;
  std::string context;
};

enum class Role : uint8_t { follower, pre_candidate, candidate, leader };
const char* to_string(Role r);

}  // namespace keel::raft
