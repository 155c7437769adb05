#include "cluster/raft/storage.hpp"

#include <algorithm>
#include <utility>

#include "cluster/raft/assert.hpp"

namespace keel::raft {

MemoryStorage::MemoryStorage(const ConfState& bootstrap) {
  auto snap = std::make_shared<Snapshot>();
  snap->meta.conf = bootstrap;
  snap_ = std::move(snap);
  ents_.push_back(Entry{});
}

std::optional<uint64_t> MemoryStorage::term(uint64_t index) const {
  const uint64_t offset = ents_.front().index;
  if (index < offset || index > last_index()) return std::nullopt;
  return ents_[index - offset].term;
}

void MemoryStorage::entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                            std::vector<Entry>* out) const {
  KEEL_RAFT_ASSERT(lo >= first_index() && lo < hi && hi <= last_index() + 1);
  const uint64_t offset = ents_.front().index;
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const Entry& e = ents_[i - offset];
    bytes += entry_bytes(e);
    if (i > lo && bytes > max_bytes) break;
    out->push_back(e);
  }
}

void MemoryStorage::append(const std::vector<Entry>& entries) {
  if (entries.empty()) return;
  const uint64_t first = entries.front().index;
  KEEL_RAFT_ASSERT(first <= last_index() + 1, "gap in the log");
  const uint64_t offset = ents_.front().index;
  // Entries at or below the compaction point are already covered by the snapshot.
  size_t skip = 0;
  if (first <= offset) skip = offset - first + 1;
  if (skip >= entries.size()) return;
  const uint64_t start = entries[skip].index;
  ents_.resize(start - offset);
  ents_.insert(ents_.end(), entries.begin() + static_cast<std::ptrdiff_t>(skip), entries.end());
}

void MemoryStorage::apply_snapshot(std::shared_ptr<const Snapshot> snap) {
  KEEL_RAFT_ASSERT(snap != nullptr);
  KEEL_RAFT_ASSERT(snap->meta.index >= snap_->meta.index, "snapshot out of date");
  ents_.clear();
  ents_.push_back(Entry{snap->meta.index, snap->meta.term, EntryType::normal, {}});
  snap_ = std::move(snap);
}

void MemoryStorage::create_snapshot(uint64_t index, const ConfState& conf, std::string data,
                                    uint64_t compact_to) {
  KEEL_RAFT_ASSERT(index >= snap_->meta.index && index <= last_index());
  KEEL_RAFT_ASSERT(compact_to <= index);
  auto snap = std::make_shared<Snapshot>();
  snap->meta.index = index;
  snap->meta.term = *term(index);
  snap->meta.conf = conf;
  snap->data = std::move(data);
  snap_ = std::move(snap);
  const uint64_t offset = ents_.front().index;
  if (compact_to > offset) {
    ents_.erase(ents_.begin(), ents_.begin() + static_cast<std::ptrdiff_t>(compact_to - offset));
    ents_.front().data.clear();
    ents_.front().type = EntryType::normal;
  }
}

}  // namespace keel::raft
