#include "cluster/raft/log.hpp"

#include <algorithm>

#include "cluster/raft/assert.hpp"

namespace keel::raft {

RaftLog::RaftLog(const LogStorage* storage) : storage_(storage) {
  KEEL_RAFT_ASSERT(storage != nullptr);
  offset_ = storage->last_index() + 1;
  committed_ = storage->first_index() - 1;
  applied_ = committed_;
}

uint64_t RaftLog::first_index() const {
  if (unstable_snap_) return unstable_snap_->meta.index + 1;
  return storage_->first_index();
}

uint64_t RaftLog::last_index() const {
  if (!unstable_.empty()) return offset_ + unstable_.size() - 1;
  if (unstable_snap_) return unstable_snap_->meta.index;
  return storage_->last_index();
}

std::optional<uint64_t> RaftLog::term(uint64_t index) const {
  if (index >= offset_) {
    if (index - offset_ < unstable_.size()) return unstable_[index - offset_].term;
    if (unstable_snap_ && index == unstable_snap_->meta.index) return unstable_snap_->meta.term;
    if (unstable_.empty() && !unstable_snap_ && index <= storage_->last_index())
      return storage_->term(index);
    return std::nullopt;
  }
  if (unstable_snap_) {
    if (index == unstable_snap_->meta.index) return unstable_snap_->meta.term;
    return std::nullopt;
  }
  return storage_->term(index);
}

uint64_t RaftLog::find_conflict(const std::vector<Entry>& ents) const {
  for (const Entry& e : ents) {
    if (!match_term(e.index, e.term)) return e.index;
  }
  return 0;
}

std::pair<uint64_t, uint64_t> RaftLog::find_conflict_by_term(uint64_t index, uint64_t t) const {
  for (;;) {
    auto got = term(index);
    if (!got) return {index, 0};
    if (*got <= t || index == 0) return {index, *got};
    --index;
  }
}

void RaftLog::append(const std::vector<Entry>& ents, size_t from) {
  if (from >= ents.size()) return;
  const uint64_t after = ents[from].index;
  KEEL_RAFT_ASSERT(after > committed_, "truncating committed entries");
  KEEL_RAFT_ASSERT(after <= last_index() + 1, "gap in the log");
  if (after == offset_ + unstable_.size()) {
    // Plain append to the tail.
  } else if (after <= offset_) {
    // Replaces the whole unstable tail (and entries of the stable log from `after` on, which
    // the driver overwrites when it persists).
    offset_ = after;
    unstable_.clear();
  } else {
    unstable_.resize(after - offset_);
  }
  unstable_.insert(unstable_.end(), ents.begin() + static_cast<std::ptrdiff_t>(from), ents.end());
}

void RaftLog::append_one(Entry e) {
  KEEL_RAFT_ASSERT(e.index == last_index() + 1);
  if (unstable_.empty() && !unstable_snap_) offset_ = e.index;
  unstable_.push_back(std::move(e));
}

bool RaftLog::slice(uint64_t lo, uint64_t hi, uint64_t max_bytes, std::vector<Entry>* out) const {
  if (lo < first_index()) return false;
  KEEL_RAFT_ASSERT(hi <= last_index() + 1);
  if (lo >= hi) return true;
  uint64_t bytes = 0;
  if (lo < offset_) {
    const uint64_t stop = std::min(hi, offset_);
    const size_t before = out->size();
    storage_->entries(lo, stop, max_bytes, out);
    for (size_t i = before; i < out->size(); ++i)
      bytes += entry_bytes((*out)[i]);
    if (out->size() - before < stop - lo) return true;  // size limit reached
    lo = stop;
  }
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = unstable_[i - offset_];
    bytes += entry_bytes(e);
    if (!out->empty() && bytes > max_bytes) break;
    out->push_back(e);
  }
  return true;
}

void RaftLog::commit_to(uint64_t index) {
  if (index <= committed_) return;
  KEEL_RAFT_ASSERT(index <= last_index(), "commit index beyond the log (lost or truncated log?)");
  committed_ = index;
}

void RaftLog::applied_to(uint64_t index) {
  if (index <= applied_) return;
  KEEL_RAFT_ASSERT(index <= committed_, "applying uncommitted entries");
  applied_ = index;
}

bool RaftLog::has_next_committed() const {
  return committed_ > std::max(applied_, first_index() - 1);
}

std::vector<Entry> RaftLog::next_committed(uint64_t max_bytes) const {
  std::vector<Entry> out;
  const uint64_t lo = std::max(applied_ + 1, first_index());
  if (committed_ >= lo) {
    const bool ok = slice(lo, committed_ + 1, max_bytes, &out);
    KEEL_RAFT_ASSERT(ok);
  }
  return out;
}

void RaftLog::stable_to(uint64_t index, uint64_t t) {
  if (index < offset_ || !match_term(index, t)) return;  // replaced meanwhile: persist again
  if (index - offset_ >= unstable_.size()) return;
  unstable_.erase(unstable_.begin(),
                  unstable_.begin() + static_cast<std::ptrdiff_t>(index - offset_ + 1));
  offset_ = index + 1;
}

void RaftLog::stable_snap_to(uint64_t index) {
  if (unstable_snap_ && unstable_snap_->meta.index == index) unstable_snap_.reset();
}

void RaftLog::restore(std::shared_ptr<const Snapshot> snap) {
  KEEL_RAFT_ASSERT(snap->meta.index > committed_);
  committed_ = snap->meta.index;
  offset_ = snap->meta.index + 1;
  unstable_.clear();
  unstable_snap_ = std::move(snap);
}

}  // namespace keel::raft
