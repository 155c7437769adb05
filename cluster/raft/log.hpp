#pragma once
// RaftLog: the stable log (LogStorage, read-only here) plus the unstable tail the driver has not
// persisted yet (entries and/or a snapshot received from the leader). Internal to the core.
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "cluster/raft/storage.hpp"
#include "cluster/raft/types.hpp"

namespace keel::raft {

class RaftLog {
 public:
  explicit RaftLog(const LogStorage* storage);

  uint64_t first_index() const;
  uint64_t last_index() const;
  uint64_t last_term() const { return *term(last_index()); }
  // Term of `index` for first_index() - 1 <= index <= last_index(), else nullopt.
  std::optional<uint64_t> term(uint64_t index) const;
  bool match_term(uint64_t index, uint64_t t) const {
    auto got = term(index);
    return got && *got == t;
  }
  // §5.4.1: is a log ending at (index, t) at least as up-to-date as ours?
  bool is_up_to_date(uint64_t index, uint64_t t) const {
    return t > last_term() || (t == last_term() && index >= last_index());
  }
  // First entry of `ents` whose term differs from ours (or that we lack); 0 if none.
  uint64_t find_conflict(const std::vector<Entry>& ents) const;
  // Largest j <= index with term(j) <= t: the fast backtracking hint. Returns (j, term(j)),
  // or (j, 0) when the term at j is unknown (compacted).
  std::pair<uint64_t, uint64_t> find_conflict_by_term(uint64_t index, uint64_t t) const;

  // Appends ents[from..] to the unstable tail, truncating any suffix they replace.
  void append(const std::vector<Entry>& ents, size_t from = 0);
  void append_one(Entry e);
  // Copies entries [lo, hi) up to max_bytes (at least one) into *out. False if lo is compacted.
  bool slice(uint64_t lo, uint64_t hi, uint64_t max_bytes, std::vector<Entry>* out) const;

  void commit_to(uint64_t index);
  void applied_to(uint64_t index);
  // Committed entries after `applied`, up to max_bytes (at least one when any).
  bool has_next_committed() const;
  std::vector<Entry> next_committed(uint64_t max_bytes) const;

  // Called when the driver persisted the unstable tail up to (index, t) / the snapshot.
  void stable_to(uint64_t index, uint64_t t);
  void stable_snap_to(uint64_t index);
  // Last index whose entry is persisted and consistent with this log.
  uint64_t stable_last() const { return offset_ - 1; }

  // Replaces the log with a snapshot from the leader (§7).
  void restore(std::shared_ptr<const Snapshot> snap);

  const std::vector<Entry>& unstable_entries() const { return unstable_; }
  const std::shared_ptr<const Snapshot>& unstable_snapshot() const { return unstable_snap_; }
  uint64_t unstable_offset() const { return offset_; }
  const LogStorage* storage() const { return storage_; }

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }
  void set_applied_for_restart(uint64_t index) { applied_ = index; }

 private:
  const LogStorage* storage_;
  std::shared_ptr<const Snapshot> unstable_snap_;
  std::vector<Entry> unstable_;  // unstable_[k].index == offset_ + k
  uint64_t offset_ = 1;
  uint64_t committed_ = 0;
  uint64_t applied_ = 0;
};

}  // namespace keel::raft
