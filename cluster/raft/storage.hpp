#pragma once
// The log + hard state storage boundary. The core only reads (the const methods); the driver
// writes what a Ready asks for, syncs, and only then sends that Ready's messages.
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "cluster/raft/types.hpp"

namespace keel::raft {

class LogStorage {
 public:
  virtual ~LogStorage() = default;

  // ---- read by the core -------------------------------------------------------------------
  // The hard state as last persisted (zero on a fresh member).
  virtual HardState hard_state() const = 0;
  // The latest snapshot. Never null; a fresh member has an empty snapshot at index 0 whose
  // conf is the bootstrap configuration (or empty for a member that will be added later).
  virtual std::shared_ptr<const Snapshot> snapshot() const = 0;
  // Entries live in [first_index(), last_index()]; first_index() - 1 is the compaction point
  // and its term is still known. The snapshot may be newer than the compaction point (entries
  // are kept for slow followers): first_index() - 1 <= snapshot()->meta.index <= last_index().
  virtual uint64_t first_index() const = 0;
  virtual uint64_t last_index() const = 0;
  // Term of entry `index` for first_index() - 1 <= index <= last_index(), else nullopt.
  virtual std::optional<uint64_t> term(uint64_t index) const = 0;
  // Appends entries [lo, hi) to *out; first_index() <= lo < hi <= last_index() + 1. Stops before
  // the total entry_bytes() would exceed max_bytes, but always returns at least one entry.
  virtual void entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                       std::vector<Entry>* out) const = 0;

  // ---- written by the driver ----------------------------------------------------------------
  virtual void set_hard_state(const HardState& hs) = 0;
  // Appends contiguous entries; any existing entries at or after entries.front().index are
  // replaced (a follower's conflicting suffix, §5.3). entries.front().index <= last_index() + 1.
  virtual void append(const std::vector<Entry>& entries) = 0;
  // Replaces everything with a snapshot received from the leader (§7).
  virtual void apply_snapshot(std::shared_ptr<const Snapshot> snap) = 0;
  // Records a snapshot of the applied state at `index` (<= last applied), then discards entries
  // up to `compact_to` (<= index) keeping the term of compact_to (log compaction, §7).
  virtual void create_snapshot(uint64_t index, const ConfState& conf, std::string data,
                               uint64_t compact_to) = 0;
};

// In-memory LogStorage: the simulator's disk and the tests' storage.
class MemoryStorage final : public LogStorage {
 public:
  // A fresh member. `bootstrap` is the initial configuration (empty for a joining member).
  explicit MemoryStorage(const ConfState& bootstrap = {});

  HardState hard_state() const override { return hs_; }
  std::shared_ptr<const Snapshot> snapshot() const override { return snap_; }
  uint64_t first_index() const override { return ents_.front().index + 1; }
  uint64_t last_index() const override { return ents_.front().index + ents_.size() - 1; }
  std::optional<uint64_t> term(uint64_t index) const override;
  void entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
               std::vector<Entry>* out) const override;

  void set_hard_state(const HardState& hs) override { hs_ = hs; }
  void append(const std::vector<Entry>& entries) override;
  void apply_snapshot(std::shared_ptr<const Snapshot> snap) override;
  void create_snapshot(uint64_t index, const ConfState& conf, std::string data,
                       uint64_t compact_to) override;

 private:
  HardState hs_;
  std::shared_ptr<const Snapshot> snap_;
  // ents_[0] is a dummy holding the index and term of the compaction point.
  std::vector<Entry> ents_;
};

}  // namespace keel::raft
