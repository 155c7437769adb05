#pragma once
// Byte formats the node puts into the Raft log and into opaque peer (app) messages. Every
// decoder validates its input and reports failure as a value: log entries and peer messages
// come from other members and must never crash this one.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/node/node.hpp"

namespace keel::node::wire {

// Who proposed an entry: completions are matched at apply by (origin, nonce, seq). The nonce
// is drawn at every start, so entries of an earlier run never match a new run's requests.
struct Origin {
  uint64_t member = 0;
  uint64_t nonce = 0;
  uint64_t seq = 0;
  bool operator==(const Origin&) const = default;
};

// Normal entry: 'K' version(2) origin(24 bytes) cluster_ms(8 bytes) command bytes. The
// proposer leaves cluster_ms 0; the leader stamps it as it appends the entry (stamp_entry).
// Version 1 (no cluster time) still decodes, with cluster_ms 0.
std::string encode_entry(const Origin& origin, std::string_view command);
// Sets the cluster time of an encoded version-2 entry in place; false if it is not one.
bool stamp_entry(std::string* data, uint64_t cluster_ms);
// False if `data` is not an entry of this format (the command bytes are returned unchecked).
bool decode_entry(std::string_view data, Origin* origin, std::string_view* command,
                  uint64_t* cluster_ms = nullptr);

// Conf-change context: origin, the member's name and peer address.
std::string encode_member_context(const Origin& origin, const Member& member);
bool decode_member_context(std::string_view data, Origin* origin, Member* member);

// The member list as stored with the applied state, and the ids removed so far (a removed id
// never comes back: the core refuses to add it, Config::removed).
std::string encode_members(const std::vector<Member>& members,
                           const std::vector<uint64_t>& removed = {});
bool decode_members(std::string_view data, std::vector<Member>* members,
                    std::vector<uint64_t>* removed = nullptr);

// App messages between nodes.
enum class AppKind : uint8_t {
  status_request = 1,
  status_response = 2,
  removed_notice = 3,
  snapshot_chunk = 4,
  snapshot_ack = 5,
  relay_subscribe = 6,
  relay_accept = 7,
  relay_redirect = 8,
  relay_entries = 9,
  relay_ack = 10,
  relay_propose = 11,
  relay_propose_ack = 12,
  relay_read = 13,
  relay_read_ack = 14,
};
// Sent by a member that applied the removal of `member` to it: a removed member no longer
// receives the log, so it would never apply its own removal.
std::string encode_removed_notice(uint64_t member);
bool decode_removed_notice(std::string_view data, uint64_t* member);
std::string encode_status_request(uint64_t seq);
std::string encode_status_response(uint64_t seq, const NodeStatus& status);
// Streamed snapshots (node.cpp, "Snapshots"): the leader sends the state in chunks numbered
// from 0 within one transfer; the receiver answers each stored chunk with an ack (or a
// refusal that ends the transfer). `last` marks the end of the stream (its data may be empty).
struct SnapshotChunk {
  uint64_t transfer = 0;
  uint64_t seq = 0;
  bool last = false;
  std::string_view data;  // a view into the decoded payload
};
std::string encode_snapshot_chunk(uint64_t transfer, uint64_t seq, bool last,
                                  std::string_view data);
bool decode_snapshot_chunk(std::string_view payload, SnapshotChunk* out);
struct SnapshotAck {
  uint64_t transfer = 0;
  uint64_t seq = 0;
  bool ok = false;
  std::string reason;  // when refused
};
std::string encode_snapshot_ack(const SnapshotAck& ack);
bool decode_snapshot_ack(std::string_view payload, SnapshotAck* out);

// ---- the relay tree (relay.hpp) -------------------------------------------------------
// A learner asks a member (voter or learner) to feed it committed entries from next_index.
struct RelaySubscribe {
  std::string name;
  std::string peer_address;  // where the parent dials back
  uint64_t next_index = 0;   // the learner's applied index + 1
};
std::string encode_relay_subscribe(const RelaySubscribe& m);
bool decode_relay_subscribe(std::string_view data, RelaySubscribe* m);
// Accepted: `path` is the parent and its ancestors up to a voter (the voter last).
std::string encode_relay_accept(const std::vector<uint64_t>& path);
bool decode_relay_accept(std::string_view data, std::vector<uint64_t>* path);
// Not accepted (full, or no upstream of its own): try these instead (the parent's children).
struct RelayRedirect {
  std::vector<Member> candidates;
  std::string reason;
};
std::string encode_relay_redirect(const RelayRedirect& m);
bool decode_relay_redirect(std::string_view data, RelayRedirect* m);
// Committed entries (prev_index + 1 ...; contiguous, checked by the decoder) or, with none, a
// heartbeat. leader/term/commit: what the parent knows of the cluster (a voter's own view; a
// learner passes on its parent's). upstream_ok: the parent knows a leader (voter) or is
// attached (learner). path: as in RelayAccept.
struct RelayEntries {
  uint64_t leader = 0;
  uint64_t term = 0;
  uint64_t commit = 0;
  uint64_t prev_index = 0;
  uint64_t prev_term = 0;
  uint64_t cluster_ms = 0;  // the parent's applied cluster time
  bool upstream_ok = false;
  std::vector<uint64_t> path;
  std::vector<raft::Entry> entries;
};
std::string encode_relay_entries(const RelayEntries& m);
bool decode_relay_entries(std::string_view data, RelayEntries* m);
// The child's applied index (flow control and liveness) and, now and then, its subtree.
struct RelayAck {
  uint64_t applied = 0;
  bool has_report = false;
  std::vector<Learner> subtree;  // the child itself first
};
std::string encode_relay_ack(const RelayAck& m);
bool decode_relay_ack(std::string_view data, RelayAck* m);
// A learner's write for a voter to propose: `data` is an encoded entry (encode_entry) with
// the learner's origin, so the learner completes it when it applies it itself.
struct RelayPropose {
  uint64_t seq = 0;
  std::string peer_address;
  std::string data;
};
std::string encode_relay_propose(const RelayPropose& m);
bool decode_relay_propose(std::string_view data, RelayPropose* m);
// code ok: proposed (appended by the leader of `term`, or forwarded to it; such an entry is
// in term `term` or never); otherwise not proposed, with the reason.
struct RelayProposeAck {
  uint64_t seq = 0;
  ErrorCode code = ErrorCode::ok;
  uint64_t term = 0;
  std::string message;
};
std::string encode_relay_propose_ack(const RelayProposeAck& m);
bool decode_relay_propose_ack(std::string_view data, RelayProposeAck* m);
// A linearizable read point for a learner: the voter's applied index after a ReadIndex round.
struct RelayRead {
  uint64_t seq = 0;
  std::string peer_address;
};
std::string encode_relay_read(const RelayRead& m);
bool decode_relay_read(std::string_view data, RelayRead* m);
struct RelayReadAck {
  uint64_t seq = 0;
  ErrorCode code = ErrorCode::ok;
  uint64_t index = 0;
  std::string message;
};
std::string encode_relay_read_ack(const RelayReadAck& m);
bool decode_relay_read_ack(std::string_view data, RelayReadAck* m);

// Kind of an app message; nullopt if unknown or empty.
std::optional<AppKind> app_kind(std::string_view data);
bool decode_status_request(std::string_view data, uint64_t* seq);
bool decode_status_response(std::string_view data, uint64_t* seq, NodeStatus* status);

}  // namespace keel::node::wire
