#pragma once
// raft::LogStorage on WiredTiger: the Raft log, hard state, compaction point, latest
// snapshot metadata and the member's cluster identity, in the engine's data directory.
//
// Tables (see wt_internal.hpp):
//   raft_entries  be64(index) -> varint(term) u8(type) data
//   meta          "raft_hardstate" -> varint(term) varint(vote) varint(commit)
//                 "raft_compacted" -> varint(index) varint(term): the compaction point,
//                                     first_index() - 1 and its term
//                 "raft_snapshot"  -> varint(index) varint(term) conf varint(len) data
//                 "raft_identity"  -> varint(cluster id) varint(member id)
//
// Threads: one thread (the node thread) calls everything, reads included. The const reads
// the core makes (hard_state, snapshot, first/last_index, term) are served from memory;
// entries() reads WiredTiger through this object's own session (or its tail cache).
//
// Durability: persist(), set_hard_state(), append(), apply_snapshot(), bootstrap() and
// set_identity() commit one WiredTiger transaction each with sync=on (one fdatasync per
// Ready) -- except a persist() whose Ready changes only the commit index, which is not
// synced (etcd-io/raft's MustSync; see persist()). Only this object's tables (raft_entries,
// meta) are journaled; the applied state is durable at checkpoints only (wt_internal.hpp,
// "Journaling"). create_snapshot() commits without sync, and its index and compact_to must be
// at most Engine::durable_applied().applied_index (the caller's duty; Node does it): after a
// crash the state comes back as of the last completed checkpoint, and the node re-applies the
// log from there, so no entry above that checkpoint's applied index may be dropped, and the
// core, which starts applying above max(Config::applied, snapshot index), must not be told
// that a later state exists.
//
// Errors: a WiredTiger failure on the write path (a failed fsync, a full disk) leaves the
// log in an unknown state and cannot be recovered from in-process. Every write and read
// method therefore prints the failed operation and WiredTiger's message to stderr and
// aborts (KEEL_ASSERT style); the process restarts and recovers from what is durable.
// Misuse by the caller (an append with a gap, an out-of-date snapshot) is a bug and
// aborts too, as it does in raft::MemoryStorage. Only bootstrap() and set_identity() report
// expected refusals as a Status.
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cluster/model/result.hpp"
#include "cluster/raft/raft.hpp"
#include "cluster/raft/storage.hpp"

struct __wt_connection;
struct __wt_session;
struct __wt_cursor;

namespace keel::storage {

class RaftStorage final : public raft::LogStorage {
 public:
  // Opens the storage on `conn` (table:raft_entries and table:meta must exist). Used by
  // open_engine; `syncs` and `appended` count synced commits and appended entries.
  static Result<std::unique_ptr<RaftStorage>> open(__wt_connection* conn,
                                                   std::atomic<uint64_t>* syncs,
                                                   std::atomic<uint64_t>* appended);
  ~RaftStorage() override;
  RaftStorage(const RaftStorage&) = delete;
  RaftStorage& operator=(const RaftStorage&) = delete;

  // ---- raft::LogStorage reads (memory only, except entries()) ---------------------------
  raft::HardState hard_state() const override { return hs_; }
  std::shared_ptr<const raft::Snapshot> snapshot() const override { return snap_; }
  uint64_t first_index() const override { return offset_ + 1; }
  uint64_t last_index() const override { return offset_ + terms_.size() - 1; }
  std::optional<uint64_t> term(uint64_t index) const override;
  void entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
               std::vector<raft::Entry>* out) const override;

  // ---- raft::LogStorage writes (each one synced transaction) ---------------------------
  void set_hard_state(const raft::HardState& hs) override;
  void append(const std::vector<raft::Entry>& entries) override;
  void apply_snapshot(std::shared_ptr<const raft::Snapshot> snap) override;
  // Not synced; see "Durability" above.
  void create_snapshot(uint64_t index, const raft::ConfState& conf, std::string data,
                       uint64_t compact_to) override;

  // What one Ready asks to persist, in ONE transaction: rd.snapshot (replaces the whole
  // log), then rd.entries (truncate-and-append), then rd.hard_state. Committed with sync=on
  // unless only the commit index changed.
  // Does nothing if the Ready carries none of them.
  void persist(const raft::Ready& rd);
  // The same, also writing `meta_rows` to table:meta (journaled) in that transaction.
  void persist(const raft::Ready& rd,
               const std::vector<std::pair<std::string, std::string>>& meta_rows);

  // ---- life cycle -------------------------------------------------------------------------
  // True once bootstrap() ran or anything was persisted (a joining member that received a
  // snapshot is initialized too).
  bool initialized() const { return initialized_; }
  // A fresh member: a snapshot at index 0 whose configuration is `initial` (empty for a
  // member that will be added later). Synced. Error (invalid_argument) if initialized().
  Status bootstrap(const raft::ConfState& initial);

  // The cluster this data directory belongs to and this member's id in it, so that keeld
  // refuses a data directory of another cluster. Synced. Setting the same identity again is
  // a no-op; a different one is refused (invalid_argument) and changes nothing.
  Status set_identity(uint64_t cluster_id, uint64_t member_id);
  std::optional<std::pair<uint64_t, uint64_t>> identity() const { return identity_; }

  // Bytes held by the tail cache of recently appended entries (tests, metrics).
  uint64_t tail_cache_bytes() const { return tail_bytes_; }
  // Key + value bytes of the entries appended since open (the journal's main load; the
  // engine checkpoints after EngineOptions::checkpoint_log_mb of them). Any thread.
  uint64_t appended_bytes() const { return appended_bytes_.load(std::memory_order_relaxed); }
  // Entries in the log (last_index() - compaction point) as of the last commit. Any thread.
  uint64_t live_entries() const { return live_entries_.load(std::memory_order_relaxed); }

 private:
  RaftStorage(std::atomic<uint64_t>* syncs, std::atomic<uint64_t>* appended);

  // The three steps of a write, inside an open transaction; the in-memory state is updated
  // as they go (the commit that follows either succeeds or aborts the process).
  void write_snapshot(const raft::Snapshot& snap);
  void write_entries(const std::vector<raft::Entry>& entries);
  void write_hard_state(const raft::HardState& hs);
  void write_snapshot_row(const raft::Snapshot& snap);
  void write_compacted_row();
  void remove_entries(uint64_t lo, uint64_t hi);  // [lo, hi)
  void begin();
  void commit(bool sync);
  void mark_initialized();

  void tail_push(const raft::Entry& e);
  void tail_truncate_from(uint64_t index);
  void tail_drop_below(uint64_t index);

  std::atomic<uint64_t>* syncs_;
  std::atomic<uint64_t>* appended_;
  std::atomic<uint64_t> appended_bytes_{0};
  std::atomic<uint64_t> live_entries_{0};
  __wt_session* session_ = nullptr;
  mutable __wt_cursor* entries_cursor_ = nullptr;  // reads and writes (node thread only)
  __wt_cursor* meta_cursor_ = nullptr;

  raft::HardState hs_;
  std::shared_ptr<const raft::Snapshot> snap_;
  uint64_t offset_ = 0;         // the compaction point: first_index() - 1
  std::deque<uint64_t> terms_;  // terms of [offset_, last_index()]; terms_[0] = its term
  bool initialized_ = false;
  std::optional<std::pair<uint64_t, uint64_t>> identity_;

  // The most recently appended entries, [last_index() - tail_.size() + 1, last_index()].
  std::deque<raft::Entry> tail_;
  uint64_t tail_bytes_ = 0;
  static constexpr uint64_t kTailMaxBytes = 4 << 20;
  static constexpr size_t kTailMaxEntries = 4096;
};

}  // namespace keel::storage
