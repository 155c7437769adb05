#pragma once
// The key-value data model (etcd v3's): requests, responses, replicated commands, limits.
// Plain standard-library types so that every layer (node, primitives, agent, tests) can use
// them without WiredTiger or Cap'n Proto. The agent converts RPC messages to and from these.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cluster/model/result.hpp"

namespace keel::storage {

// Keys and values are arbitrary bytes held in std::string.
struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;  // revision of the put that created the key (since last delete)
  int64_t mod_revision = 0;     // revision of the last put to the key
  int64_t version = 0;          // number of puts since creation; a delete resets it to 0
  int64_t lease = 0;            // 0 = no lease
  bool operator==(const KeyValue&) const = default;
};

enum class SortTarget : uint8_t { key, version, create, mod, value };
enum class SortOrder : uint8_t { none, ascend, descend };

// Key ranges follow etcd: range_end empty = the single key `key`; range_end == "\0" (one
// zero byte) = every key >= key; otherwise the half-open interval [key, range_end).
// A prefix p is [p, prefix_end(p)).
std::string prefix_end(std::string_view prefix);

struct RangeRequest {
  std::string key;
  std::string range_end;
  int64_t revision = 0;  // 0 = current revision
  int64_t limit = 0;     // 0 = no limit
  SortOrder sort_order = SortOrder::none;
  SortTarget sort_target = SortTarget::key;
  bool keys_only = false;        // values are returned empty
  bool count_only = false;       // no kvs, only count
  int64_t min_mod_revision = 0;  // 0 = no filter; filters apply to kvs, not to count
  int64_t max_mod_revision = 0;
  int64_t min_create_revision = 0;
  int64_t max_create_revision = 0;
  bool serializable = false;  // read path choice (local, possibly stale); ignored by the store
  bool operator==(const RangeRequest&) const = default;
};

struct RangeResponse {
  int64_t revision = 0;       // store revision the read was served at
  std::vector<KeyValue> kvs;  // sorted as requested
  bool more = false;          // more keys match than were returned (limit or page size)
  int64_t count = 0;          // keys in the range at that revision, ignoring limit and filters
  // Set when the reply stopped early because it reached the page size (RangeOptions); the
  // caller gets the rest with key = continue_key, the same range_end and revision = revision.
  // Only key-ordered replies (sort none, or key ascending) page; others fail when too large.
  std::string continue_key;
};

struct PutRequest {
  std::string key;
  std::string value;
  int64_t lease = 0;
  bool prev_kv = false;       // return the key-value pair before the put
  bool ignore_value = false;  // keep the current value (key must exist), value must be empty
  bool ignore_lease = false;  // keep the current lease (key must exist), lease must be 0
  bool operator==(const PutRequest&) const = default;
};
struct PutResponse {
  int64_t revision = 0;
  std::optional<KeyValue> prev_kv;
};

struct DeleteRangeRequest {
  std::string key;
  std::string range_end;
  bool prev_kv = false;
  bool operator==(const DeleteRangeRequest&) const = default;
};
struct DeleteRangeResponse {
  int64_t revision = 0;
  int64_t deleted = 0;
  std::vector<KeyValue> prev_kvs;  // with prev_kv: the deleted pairs, in key order
};

enum class CompareTarget : uint8_t { version, create, mod, value, lease };
enum class CompareResult : uint8_t { equal, not_equal, less, greater };

// A compare holds for a range when it holds for every key in the range. A missing key
// compares as version 0, create 0, mod 0, lease 0; a value compare on a missing key is false.
struct Compare {
  CompareResult result = CompareResult::equal;
  CompareTarget target = CompareTarget::version;
  std::string key;
  std::string range_end;
  int64_t number = 0;  // for version, create, mod, lease
  std::string value;   // for value
  bool operator==(const Compare&) const = default;
};

using RequestOp = std::variant<RangeRequest, PutRequest, DeleteRangeRequest>;
using ResponseOp = std::variant<RangeResponse, PutResponse, DeleteRangeResponse>;

// A fencing token presented with a write: the write applies only while `token` is the
// current holder's token of lock `lock` (Chubby's sequencer), else ErrorCode::fenced.
struct Fence {
  std::string lock;
  int64_t token = 0;
  bool operator==(const Fence&) const = default;
};

// All compares ANDed; then `success` or `failure` runs, as one revision (if anything is
// written). Reads inside a txn see the writes made earlier in the same txn.
// fences: checked before the compares; one that fails fails the whole txn (fenced).
struct TxnRequest {
  std::vector<Compare> compare;
  std::vector<RequestOp> success;
  std::vector<RequestOp> failure;
  std::vector<Fence> fences;
  bool operator==(const TxnRequest&) const = default;
};
struct TxnResponse {
  int64_t revision = 0;
  bool succeeded = false;
  std::vector<ResponseOp> responses;
};

// Drops history below `revision` (kept: the newest version <= revision of each live key).
struct CompactRequest {
  int64_t revision = 0;
  bool operator==(const CompactRequest&) const = default;
};
struct CompactResponse {
  int64_t revision = 0;  // store revision when the compaction was applied
};

// ---- coordination primitives (primitives/ decides them; the store only carries them) ----
// Every time below is cluster time (leader-stamped in the log), never a local clock.

// Grants lease `id` (> 0, chosen by the proposer: the agent derives it from its member id
// and a counter, so ids never collide) with ttl_ms; it ends ttl_ms after the entry's
// cluster time unless renewed. Granting an id that exists is an error (lease_exists).
struct LeaseGrantRequest {
  int64_t id = 0;
  int64_t ttl_ms = 0;
  bool operator==(const LeaseGrantRequest&) const = default;
};
struct LeaseGrantResponse {
  int64_t id = 0;
  int64_t ttl_ms = 0;
  int64_t revision = 0;
};
// Ends a lease now: its keys are deleted in one revision, its locks pass to the next
// waiter (without lock-delay: this is a clean release).
struct LeaseRevokeRequest {
  int64_t id = 0;
  bool operator==(const LeaseRevokeRequest&) const = default;
};
struct LeaseRevokeResponse {
  int64_t revision = 0;
};
// Renews many leases in one entry (one per agent per interval): each known lease ends
// ttl_ms after this entry's cluster time, never earlier than it already would.
struct LeaseRenewRequest {
  std::vector<int64_t> ids;
  bool operator==(const LeaseRenewRequest&) const = default;
};
struct LeaseRenewResponse {
  std::vector<int64_t> ttl_ms;  // per id: its ttl, or 0 when the lease does not exist
};
// Acquires lock `name` for `lease`, or queues the lease FIFO when `wait` (else the result
// says not acquired). The holder's lease ending passes the lock on; a lease ending by
// expiry (not revoke or unlock) keeps the lock free for the holder's delay_ms first.
// Asking again for a lock the lease holds or waits for changes nothing.
struct LockRequest {
  std::string name;
  int64_t lease = 0;
  bool wait = false;
  int64_t delay_ms = 0;  // lock-delay after this holder's lease expires; 0 = none
  bool operator==(const LockRequest&) const = default;
};
struct LockResponse {
  bool acquired = false;
  int64_t token = 0;  // when acquired: strictly greater than every earlier token of the lock
  int64_t revision = 0;
};
// Releases the lock if `lease` holds it, or leaves the queue if it waits.
// Error lock_not_held when it does neither.
struct UnlockRequest {
  std::string name;
  int64_t lease = 0;
  bool operator==(const UnlockRequest&) const = default;
};
struct UnlockResponse {
  int64_t revision = 0;
};

// Takes a slot of semaphore `name` for `holder_id` with `lease`. The first acquirer sets
// `max` (>= 1) while the semaphore exists; a different max is semaphore_max_mismatch. The
// same holder_id asking again keeps its slot (rebound to this lease; FleetLock's recursive
// acquire). With `wait`, a holder that finds every slot taken queues FIFO. A slot ends with
// its lease, or by release.
struct SemAcquireRequest {
  std::string name;
  int64_t max = 0;
  int64_t lease = 0;
  std::string holder_id;
  std::string metadata;
  bool wait = false;
  bool operator==(const SemAcquireRequest&) const = default;
};
struct SemAcquireResponse {
  bool acquired = false;
  int64_t holders = 0;  // slots taken after this command
  int64_t revision = 0;
};
// Gives up holder_id's slot or place in the queue; lock_not_held when it has neither.
// lease != 0: only if held (or queued) with that lease, so a handle that outlived a rebind
// of its holder id to a newer lease cannot release the newer slot.
struct SemReleaseRequest {
  std::string name;
  std::string holder_id;
  int64_t lease = 0;
  bool operator==(const SemReleaseRequest&) const = default;
};
struct SemReleaseResponse {
  int64_t revision = 0;
};

// A replicated command: what goes into the log and what apply() executes deterministically.
using Command = std::variant<PutRequest, DeleteRangeRequest, TxnRequest, CompactRequest,
                             LeaseGrantRequest, LeaseRevokeRequest, LeaseRenewRequest, LockRequest,
                             UnlockRequest, SemAcquireRequest, SemReleaseRequest>;
using CommandResult =
    std::variant<PutResponse, DeleteRangeResponse, TxnResponse, CompactResponse, LeaseGrantResponse,
                 LeaseRevokeResponse, LeaseRenewResponse, LockResponse, UnlockResponse,
                 SemAcquireResponse, SemReleaseResponse>;
// Commands that the primitives state machine applies (the rest are the KV store's).
inline bool is_primitive(const Command& c) {
  return c.index() >= 4;
}

// Compact, versioned binary encoding of a command (the log entry payload). decode_command
// never trusts its input: any malformed byte string yields ErrorCode::invalid_argument.
std::string encode_command(const Command& command);
Result<Command> decode_command(std::string_view bytes);

// Explicit limits; every one is configurable in keeld's config ([limits] table).
struct Limits {
  size_t max_key_bytes = 4096;
  size_t max_value_bytes = 1024 * 1024;
  size_t max_request_bytes = 1536 * 1024;       // 1.5 MiB, as etcd
  size_t max_txn_ops = 128;                     // success + failure ops, as etcd
  size_t max_response_bytes = 4 * 1024 * 1024;  // page size for ranges
  size_t max_watchers = 10000;                  // per agent
  size_t max_lock_name_bytes = 4096;
  size_t max_renew_ids = 100000;       // lease ids in one renew entry
  size_t max_semaphore_slots = 10000;  // a semaphore's max
  size_t max_holder_id_bytes = 1024;   // a semaphore holder id, and its metadata: value limit
};

// Rejects what the store must never see: empty key, key/value over the limits, range_end
// before key, too many txn ops, a txn branch writing one key twice (puts and deletes over
// overlapping keys), ignore_value with a value, ignore_lease with a lease, negative numbers.
// The message names the field and the limit.
Status validate(const Command& command, const Limits& limits);
Status validate(const RangeRequest& request, const Limits& limits);

enum class EventType : uint8_t { put, del };
// A watch event. For a delete, kv holds the key and mod_revision = the delete's revision.
struct Event {
  EventType type = EventType::put;
  KeyValue kv;
  std::optional<KeyValue> prev_kv;
  bool operator==(const Event&) const = default;
};

}  // namespace keel::storage
