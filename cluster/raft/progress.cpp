#include "cluster/raft/progress.hpp"

#include <algorithm>

#include "cluster/raft/assert.hpp"

namespace keel::raft {

const char* to_string(ProgressState s) {
  switch (s) {
    case ProgressState::probe:
      return "probe";
    case ProgressState::replicate:
      return "replicate";
    case ProgressState::snapshot:
      return "snapshot";
  }
  return "?";
}

void Inflights::add(uint64_t last_index, uint64_t bytes) {
  KEEL_RAFT_ASSERT(!full() || q_.empty(), "inflights overflow");
  KEEL_RAFT_ASSERT(q_.empty() || q_.back().first < last_index, "inflights out of order");
  q_.emplace_back(last_index, bytes);
  bytes_ += bytes;
}

void Inflights::free_le(uint64_t index) {
  while (!q_.empty() && q_.front().first <= index) {
    bytes_ -= q_.front().second;
    q_.pop_front();
  }
  if (q_.empty()) q_.shrink_to_fit();
}

void Inflights::free_first_one() {
  if (q_.empty()) return;
  bytes_ -= q_.front().second;
  q_.pop_front();
}

void Progress::become_probe() {
  if (state == ProgressState::snapshot) {
    next = std::max(match + 1, pending_snapshot + 1);
    pending_snapshot = 0;
  } else {
    next = match + 1;
  }
  state = ProgressState::probe;
  probe_sent = false;
  snapshot_wait = 0;
  inflights.reset();
}

void Progress::become_replicate() {
  state = ProgressState::replicate;
  next = match + 1;
  probe_sent = false;
  pending_snapshot = 0;
  inflights.reset();
}

void Progress::become_snapshot(uint64_t snapshot_index) {
  state = ProgressState::snapshot;
  pending_snapshot = snapshot_index;
  snapshot_wait = 0;
  probe_sent = false;
  inflights.reset();
}

bool Progress::maybe_update(uint64_t index) {
  bool updated = false;
  if (match < index) {
    match = index;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, index + 1);
  return updated;
}

bool Progress::maybe_decr_to(uint64_t rejected, uint64_t hint) {
  if (state == ProgressState::replicate) {
    if (rejected <= match) return false;  // stale
    next = match + 1;
    return true;
  }
  if (next == 0 || next - 1 != rejected) return false;  // stale: not the probe we sent
  next = std::max(std::min(rejected, hint + 1), match + 1);
  probe_sent = false;
  return true;
}

bool Progress::is_paused() const {
  switch (state) {
    case ProgressState::probe:
      return probe_sent;
    case ProgressState::replicate:
      return inflights.full();
    case ProgressState::snapshot:
      return true;
  }
  return true;
}

}  // namespace keel::raft
