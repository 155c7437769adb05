#pragma once
// The one Ready loop (etcd-io/raft's "persist, send, apply, advance"), shared by every driver:
// the node, the simulator, the unit-test harness and the benchmark. Each supplies what
// "persist", "send" and "apply" mean for it through ReadyHandler; the order and the
// leader's early send live here only.
#include <vector>

#include "cluster/raft/raft.hpp"

namespace keel::raft {

class ReadyHandler {
 public:
  virtual ~ReadyHandler() = default;
  // Makes rd.snapshot (if set), rd.entries and rd.hard_state (if set) durable, in that order
  // (one sync for all of it). Returns false to stop the loop without advancing (the member
  // crashed, or its disk failed): nothing after this step happens for this Ready.
  virtual bool persist(const Ready& rd) = 0;
  // Sends messages (the handler may move from them). False stops the loop, as above.
  virtual bool send(std::vector<Message>& messages) = 0;
  // Installs rd.snapshot (if set), applies rd.committed_entries in order and releases
  // rd.read_states once applied. False stops the loop, as above.
  virtual bool apply(const Ready& rd) = 0;
  // Called after advance(rd): compaction, invariant checks. False stops the loop.
  virtual bool advanced() { return true; }
};

struct DriveOptions {
  // Thesis §10.2.1: a leader may send its appends before its own log write is durable; the
  // core counts the leader towards commit only for entries made durable (advance()). Only
  // when the member led already at the previous Ready, so its term and vote are durable.
  bool leader_sends_first = true;
  // Bound on Ready cycles per call; the loop stops there even if more is ready (the caller
  // comes back later), so one member can never monopolise its thread.
  int max_cycles = 64;
};

// Runs Ready cycles while raw.has_ready(). Returns false if a handler step returned false.
bool drive_ready(RawNode& raw, ReadyHandler& handler, const DriveOptions& options = {});

}  // namespace keel::raft
