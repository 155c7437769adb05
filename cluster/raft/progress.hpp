#pragma once
// The leader's view of one follower or learner (etcd-io/raft "tracker" shape): where to send
// next, what is known to match, and the flow-control state (probe / replicate / snapshot).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>

namespace keel::raft {

enum class ProgressState : uint8_t {
  probe,      // one append in flight at a time, until the follower's match point is found
  replicate,  // pipelined appends, bounded by Inflights
  snapshot,   // a snapshot is on its way; nothing else is sent
};
const char* to_string(ProgressState s);

// Appends in flight to one follower: (last index, bytes) per message. Allocates nothing until
// used, so idle learners cost a few words each.
class Inflights {
 public:
  Inflights(size_t max_msgs, uint64_t max_bytes) : max_msgs_(max_msgs), max_bytes_(max_bytes) {}
  void add(uint64_t last_index, uint64_t bytes);
  void free_le(uint64_t index);  // acknowledged up to index
  void free_first_one();
  bool full() const { return q_.size() >= max_msgs_ || (max_bytes_ != 0 && bytes_ >= max_bytes_); }
  size_t count() const { return q_.size(); }
  uint64_t bytes() const { return bytes_; }
  void reset() {
    q_.clear();
    bytes_ = 0;
  }

 private:
  size_t max_msgs_;
  uint64_t max_bytes_;
  uint64_t bytes_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> q_;
};

struct Progress {
  Progress(uint64_t next_index, size_t max_inflight_msgs, uint64_t max_inflight_bytes)
      : next(next_index), inflights(max_inflight_msgs, max_inflight_bytes) {}

  uint64_t match = 0;  // highest index known to be replicated (and durable) there
  uint64_t next = 1;   // next index to send
  ProgressState state = ProgressState::probe;
  uint64_t pending_snapshot = 0;  // snapshot index being sent (state == snapshot)
  uint64_t sent_commit = 0;       // commit index last sent in an append
  int snapshot_wait = 0;          // heartbeat rounds spent waiting in state snapshot
  bool probe_sent = false;        // probe: an append is in flight, wait for its answer
  bool recent_active = false;     // heard from it during the current check-quorum window
  bool learner = false;
  Inflights inflights;

  void become_probe();
  void become_replicate();
  void become_snapshot(uint64_t snapshot_index);
  // An acknowledgement of `index`; true if match moved.
  bool maybe_update(uint64_t index);
  // A rejection of the append whose previous index was `rejected`; `hint` is the follower's
  // last possibly-matching index. True if next moved (the rejection was not stale).
  bool maybe_decr_to(uint64_t rejected, uint64_t hint);
  bool is_paused() const;
};

}  // namespace keel::raft
