#pragma once
// The MVCC key-value store on WiredTiger (etcd's data model).
//
// One data directory = one WiredTiger connection, opened by Engine::open. Engine owns the
// tables; MvccStore and RaftStorage (raft_storage.hpp) borrow the engine and must not
// outlive it.
//
// Threads: apply() and RaftStorage writes are called from one thread (the node thread). Any
// other thread reads through its own Reader (one WiredTiger session each, as WiredTiger
// requires). current_revision()/compact_revision() may be called from any thread.
//
// Durability: the raft log is committed with sync (RaftStorage::persist), so an appended
// entry survives kill -9. It is the only thing WiredTiger journals. The state tables (and the
// rows that describe them: applied index, applied configuration, members) are not journaled:
// apply() commits them to WiredTiger's cache only, and they become durable at checkpoints
// (EngineOptions::checkpoint_*), which hold them at one applied index because apply() stores
// that index in the same WiredTiger transaction as the state it changes (the etcd #13766
// lesson) and a checkpoint is one snapshot transaction. After a crash the state comes back as
// of the last completed checkpoint (Engine::durable_applied()) and the node re-applies the
// log entries above applied_index(); the log prefix is never compacted past
// durable_applied() (Node does it), so those entries are always there.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster/model/kv_types.hpp"
#include "cluster/raft/types.hpp"

namespace keel::raft {
struct Ready;
}

namespace keel::storage {

class StateExtension;

struct EngineOptions {
  std::string dir;  // created if missing
  // The primitives' state machine (leases, locks), applied in the same transaction as the
  // KV changes it causes; null = a store without primitives (their commands fail with
  // invalid_argument). Not owned; must outlive the engine.
  StateExtension* extension = nullptr;
  size_t cache_size_mb = 48;
  size_t log_file_max_mb = 16;  // WiredTiger's own journal file size; no preallocation
  // Checkpoints (the only way the state becomes durable; see "Durability" above): one when
  // this long has passed since the end of the last one, or when checkpoint_log_mb of Raft log
  // has been appended since its start, whichever comes first; 0 disables that trigger (both
  // 0: checkpoints only at install, Engine::checkpoint() and close). A crash re-applies
  // what was applied since the last checkpoint: at most about checkpoint_log_mb of log.
  // WiredTiger removes journal files older than the last checkpoint, so the journal holds
  // about checkpoint_log_mb + 2 * log_file_max_mb (plus what is appended while a checkpoint
  // runs).
  uint32_t checkpoint_interval_ms = 60000;
  size_t checkpoint_log_mb = 64;
  // The Raft log's table keeps the size of its longest log: WiredTiger reuses the space of
  // compacted entries for new ones but does not shrink the file. After a checkpoint, when the
  // file is larger than twice the log it holds plus this slack, the engine's thread runs
  // WiredTiger's compact on it (which moves its pages to the front and truncates the file;
  // it rewrites the live pages, so it is kept for a log that shrank for good: a snapshot
  // install, a smaller raft.log_retain_entries, a burst). 0 = never.
  size_t raft_log_reclaim_slack_mb = 32;
  // Compaction deletes history in chunks of this many rows per WiredTiger transaction, on a
  // background thread, so that reads and writes never wait for a whole compaction.
  size_t compaction_batch_rows = 1000;
  // Page size of ranges inside a txn (apply() has no caller-given one). Part of the
  // replicated state machine: it must be the same on every replica.
  size_t txn_range_max_bytes = 4 * 1024 * 1024;
};

struct EngineStats {
  uint64_t log_syncs = 0;                                  // synced log commits (fsyncs) since open
  uint64_t log_entries = 0;                                // log entries appended since open
  uint64_t applied_batches = 0;                            // apply() calls since open
  uint64_t checkpoints = 0;                                // completed checkpoints since open
  uint64_t checkpoint_ms_last = 0, checkpoint_ms_max = 0;  // their durations
  uint64_t raft_log_compactions = 0;  // WiredTiger compacts of the Raft log's table
};

// The applied state as of the last completed checkpoint: what a crash now would come back to.
struct DurablePoint {
  uint64_t applied_index = 0;
  raft::ConfState conf;  // the applied configuration at applied_index (empty: none recorded)
};

class Engine;
class RaftStorage;  // raft_storage.hpp

// Opens (creating if needed) the data directory. Errors: a directory that cannot be created
// or read, or one locked by another process, give ErrorCode::internal with a message that
// names the directory and the cause.
Result<std::unique_ptr<Engine>> open_engine(const EngineOptions& options);

// A read view for one thread. Every call reads one consistent WiredTiger snapshot.
class Reader {
 public:
  virtual ~Reader() = default;
  // Errors: compacted (revision < compact revision; Error::compact_revision set),
  // future_revision (revision > current), invalid_argument (result not key-ordered and
  // larger than max_response_bytes: the message asks for a limit).
  // Memory stays within about max_response_bytes whatever the size of the range.
  // skip_count: count is not computed (0), so a page can stop as soon as it is full.
  virtual Result<RangeResponse> range(const RangeRequest& request, size_t max_response_bytes,
                                      bool skip_count = false) = 0;

  // Visits the events of revisions [from_revision, to_revision] (to_revision 0 = current)
  // on keys in [key, range_end) (etcd range rules), in revision order and, within one
  // revision, in the order the txn wrote them. Never splits a revision: it stops at the end
  // of the revision during which the visited events' key+value bytes reached max_bytes.
  // If visit returns false it stops at once. Returns the last revision whose events were all
  // visited (the caller resumes at result+1); from_revision-1 when none was. A revision
  // without matching events counts as fully visited, so the result advances to to_revision
  // (or current) when nothing more matches.
  // prev_kv: fill Event::prev_kv from history (absent if the key did not exist before or
  // that version is compacted). Errors: compacted when from_revision < compact revision
  // (Error::compact_revision set).
  virtual Result<int64_t> events(int64_t from_revision, int64_t to_revision, const std::string& key,
                                 const std::string& range_end, bool prev_kv, size_t max_bytes,
                                 const std::function<bool(const Event&)>& visit) = 0;

  // Visits the rows of the primitives' table (table:ext) with from <= key < to (to empty =
  // no bound) in key order, until visit returns false, in one consistent snapshot. Returns
  // the cluster time of that snapshot (applied_cluster_ms as of its applied index).
  virtual Result<uint64_t> ext_scan(
      std::string_view from, std::string_view to,
      const std::function<bool(std::string_view key, std::string_view value)>& visit) = 0;
};

// What a StateExtension may do inside apply's WiredTiger transaction. Valid only during the
// call it is passed to.
class ApplyTxn {
 public:
  virtual ~ApplyTxn() = default;
  // The extension's own rows (table:ext, carried by snapshots like the KV tables).
  virtual Result<bool> get(std::string_view key, std::string* value) = 0;
  virtual Status put(std::string_view key, std::string_view value) = 0;
  virtual Status del(std::string_view key) = 0;
  // Rows with from <= key < to (to empty = no bound) in key order until visit returns false.
  // visit may not write; collect first, then write.
  virtual Status scan(
      std::string_view from, std::string_view to,
      const std::function<bool(std::string_view key, std::string_view value)>& visit) = 0;
  // Deletes those of `keys` that exist, all in one new revision (watchers see one revision
  // of deletes); no revision when none exists.
  virtual Status delete_keys(const std::vector<std::string>& keys) = 0;
  virtual int64_t revision() const = 0;  // the store's revision so far in this batch
};

// The primitives' deterministic state machine, driven by MvccStore::apply (implemented in
// primitives/, wired by the agent, so storage never names it). Every call runs on the node
// thread inside apply's transaction; none may read a clock: time is the entries' stamps.
// An error from a call that wrote makes apply roll the batch back and re-run it without
// that command (the batch is atomic per command).
class StateExtension {
 public:
  virtual ~StateExtension() = default;
  // Before each stamped entry, with its cluster time (never smaller than the last one):
  // ends what is due at cluster_ms (lease expiry, lock-delay). An error here is internal.
  virtual Status advance(uint64_t cluster_ms, ApplyTxn& tx) = 0;
  // A command for which is_primitive() holds.
  virtual Result<CommandResult> apply(const Command& command, uint64_t cluster_ms,
                                      ApplyTxn& tx) = 0;
  // A put attaches a key to `lease` (> 0): lease_not_found unless it is granted.
  virtual Status check_lease(int64_t lease, ApplyTxn& tx) = 0;
  // A key's lease changed (a put, or a delete: new_lease 0); either may be 0.
  virtual Status key_lease_changed(std::string_view key, int64_t old_lease, int64_t new_lease,
                                   ApplyTxn& tx) = 0;
  // A fenced txn: ok only if fence.token is the current holder's token of fence.lock.
  virtual Status check_fence(const Fence& fence, ApplyTxn& tx) = 0;
  // Last call of a batch, before its commit: the extension prepares what committed() shows.
  virtual Status before_commit(ApplyTxn& tx) = 0;
  // The batch committed, or was rolled back (then forget what the batch did).
  virtual void committed() = 0;
  virtual void rolled_back() = 0;
  // At open and after a snapshot install: rebuild any cache from the tables (read only).
  virtual Status reload(ApplyTxn& tx) = 0;
  // The earliest cluster time at which something is due (UINT64_MAX when nothing is), as
  // of the last committed batch. Any thread.
  virtual uint64_t next_deadline_ms() const = 0;
};

// One entry to apply. command null = an entry that only moves cluster time (the leader's
// time entries) or has no command (no-op, conf change): it yields no result.
struct ApplyEntry {
  uint64_t index = 0;       // raft index; 0 in tests that apply without a log
  uint64_t cluster_ms = 0;  // the entry's stamp; 0 = unstamped (time does not move)
  const Command* command = nullptr;
};

// What a snapshot holds, from the state it copies.
struct SnapshotInfo {
  uint64_t applied_index = 0;
  raft::ConfState conf;  // as of applied_index
  int64_t revision = 0;
  std::string members;  // the applied_members() blob
};

// A consistent read of the whole state machine (one WiredTiger snapshot: the state at one
// applied index) as a stream of chunks, for a member that needs a snapshot. Holds that
// WiredTiger snapshot open until destroyed, so old versions stay pinned while it lives.
// Used by one thread. Memory: one chunk.
class SnapshotSource {
 public:
  virtual ~SnapshotSource() = default;
  virtual const SnapshotInfo& info() const = 0;
  // Replaces *chunk with the next rows, about max_bytes of them (at least one row). Returns
  // false once the stream is exhausted: *chunk is then empty. Errors: internal.
  virtual Result<bool> next(size_t max_bytes, std::string* chunk) = 0;
  virtual uint64_t bytes() const = 0;  // chunk bytes returned so far
};

// Receives a SnapshotSource's chunks, in order, into tables of a new generation that nothing
// reads until MvccStore::install. Destroying a sink that was not installed drops them.
// Used by the thread that installs (the node thread). Memory: one chunk.
class SnapshotSink {
 public:
  virtual ~SnapshotSink() = default;
  // Stores one chunk in one WiredTiger transaction (not synced: install's commit is).
  // Errors: invalid_argument naming what is malformed (the stream must be abandoned: a
  // peer's bytes never reach the tables unchecked), internal.
  virtual Status add(std::string_view chunk) = 0;
  // After the last chunk. Errors: invalid_argument when the stream carried no state row.
  virtual Result<SnapshotInfo> finish() = 0;
  virtual uint64_t bytes() const = 0;  // chunk bytes stored so far
};

// The state meta rows a snapshot install writes.
using MetaRows = std::vector<std::pair<std::string, std::string>>;

class MvccStore {
 public:
  virtual ~MvccStore() = default;

  // Applies committed commands in order, as one WiredTiger transaction (not synced), and
  // records the batch's raft position in the same transaction, so that state, applied index
  // and applied configuration can never disagree after a crash:
  //   applied_index: the raft index of the batch's last entry, command or not (the leader's
  //     empty no-op and conf changes are entries too). 0 = the last non-zero command index
  //     (or unchanged if there is none). When non-zero it must be >= every command's index
  //     and >= applied_index() (asserted).
  //   conf: when not null, the configuration as of applied_index (pass it when a conf
  //     change is in the batch); becomes applied_conf().
  //   members: when not null, an opaque blob (the node's member names and addresses as of
  //     applied_index), stored in the same transaction; becomes applied_members().
  //   cluster_ms: the cluster time of the batch (leader-stamped in the log); 0 = unchanged.
  //     Never goes back: a smaller value leaves it as it was. Becomes applied_cluster_ms().
  // `commands` may be empty (a batch of no-ops/conf changes only).
  // Per-entry time (apply_entries): before each stamped entry the extension's
  // advance() runs with its stamp, so expiries fall between the same entries on every
  // replica however the entries are batched. Results: one per entry with a command.
  // Each command either fully applies or has no effect and yields its error (key_not_found
  // for ignore_value/ignore_lease on a missing key, future_revision/compacted for Compact,
  // invalid_argument for a command that fails validation against the store's current
  // state). Deterministic: no clocks, no randomness; the same commands on the same state
  // give the same results on every replica. Index 0 commands are allowed (they do not move
  // applied_index()).
  virtual std::vector<Result<CommandResult>> apply_entries(
      const std::vector<ApplyEntry>& entries, uint64_t applied_index, const raft::ConfState* conf,
      const std::string* members = nullptr) = 0;
  // The same with one stamp for every command (cluster_ms 0 = unstamped).
  std::vector<Result<CommandResult>> apply(
      const std::vector<std::pair<uint64_t, const Command*>>& commands, uint64_t applied_index,
      const raft::ConfState* conf, const std::string* members = nullptr, uint64_t cluster_ms = 0) {
    std::vector<ApplyEntry> entries;
    entries.reserve(commands.size());
    for (const auto& [index, command] : commands)
      entries.push_back(ApplyEntry{index, cluster_ms, command});
    if (entries.empty() && cluster_ms != 0) entries.push_back(ApplyEntry{0, cluster_ms, nullptr});
    return apply_entries(entries, applied_index, conf, members);
  }
  // The same, with applied_index() = the last non-zero command index, conf unchanged.
  std::vector<Result<CommandResult>> apply(
      const std::vector<std::pair<uint64_t, const Command*>>& entries) {
    return apply(entries, 0, nullptr);
  }

  virtual uint64_t applied_index() const = 0;
  // The extension's next_deadline_ms() (UINT64_MAX without one). Any thread.
  virtual uint64_t next_deadline_ms() const = 0;
  // Cluster time as of applied_index() (0 before any stamped entry).
  virtual uint64_t applied_cluster_ms() const = 0;
  // The raft configuration as of applied_index() (empty until an apply() passed one).
  virtual raft::ConfState applied_conf() const = 0;
  // The blob last passed as `members` (empty if none).
  virtual std::string applied_members() const = 0;
  virtual int64_t current_revision() const = 0;  // 1 on a new store (etcd starts at 1)
  virtual int64_t compact_revision() const = 0;  // 0 when never compacted

  // A new read view for the calling thread (its own WiredTiger session).
  virtual std::unique_ptr<Reader> reader() = 0;

  // Blocks until physical deletion of compacted history has caught up with
  // compact_revision() (tests and shutdown use it).
  virtual void wait_compaction_idle() = 0;
  // Whether wait_compaction_idle() would return at once. Never blocks (the agent checks it
  // on its event loop instead of parking a thread in wait_compaction_idle()).
  virtual bool compaction_idle() = 0;

  // ---- snapshots (streamed; see SnapshotSource / SnapshotSink) ---------------------------
  virtual Result<std::unique_ptr<SnapshotSource>> snapshot_source() = 0;
  // A new sink; at most one lives at a time (destroy the old one first).
  virtual Result<std::unique_ptr<SnapshotSink>> snapshot_sink() = 0;
  // Makes a finished sink's state the store's, crash-safe at every step:
  //   1. the switch: the sink's state, members and compaction rows, and `installed` (the
  //      Raft snapshot record the state comes from) in one transaction (not journaled);
  //   2. durable(): Engine::install_snapshot checkpoints (the new state is durable) and then
  //      persists the Raft log's snapshot record, synced.
  // A crash before the checkpoint completes leaves the old state and the old log; a crash
  // after it, before the log's commit, leaves the new state ahead of the log, which
  // open_engine completes from the `installed` row (the log takes that snapshot record), as
  // receiving the snapshot again would. Readers on other threads move to the new state at
  // their next call. Node thread only; no apply() runs concurrently.
  virtual Status install(SnapshotSink& sink, const std::string& installed,
                         const std::function<void()>& durable) = 0;
  // Drops the tables of replaced generations that a reader held at install time (each
  // reader lets go at its next call). Cheap when there are none; the node calls it now
  // and then. Returns the number of generations still waiting.
  virtual size_t drop_retired() = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual MvccStore& store() = 0;
  // The raft::LogStorage of this member (raft_storage.hpp).
  virtual RaftStorage& raft() = 0;
  // Installs a finished sink whose SnapshotInfo matches rd.snapshot (asserted) and persists
  // rd (RaftStorage::persist, synced): the switch of state, a checkpoint, then rd (see
  // MvccStore::install for why this order is crash-safe). Returns once all are durable.
  virtual Status install_snapshot(SnapshotSink& sink, const raft::Ready& rd) = 0;
  virtual EngineStats stats() const = 0;
  virtual const std::string& dir() const = 0;
  // The state a crash would come back to (see "Durability" above). The log must not be
  // compacted (RaftStorage::create_snapshot) past its applied_index. Any thread.
  virtual DurablePoint durable_applied() const = 0;
  // Runs a checkpoint now (the periodic ones run on the engine's own thread); returns when
  // it is complete and durable_applied() moved. Errors: internal. Any thread.
  virtual Status checkpoint() = 0;
  // Asks the engine's thread for a checkpoint as soon as it can, without waiting (the node
  // asks when it would compact its log but durable_applied() is too old). Any thread.
  virtual void request_checkpoint() = 0;
};

}  // namespace keel::storage
