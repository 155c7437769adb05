#pragma once
// Deterministic cluster simulator for keel's Raft core: the whole cluster in one thread, driven
// by one seed. Everything random (fault mix, network, disk crashes, clients) comes from that
// seed, so a failing seed replays exactly with --trace.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

namespace keel::sim {

// A replicated state machine the simulator runs besides its own hash (keel's primitives:
// tests/sim/prim_machine.cpp): each member has its own instance, fed the committed payloads
// it applies, restarted from its snapshot's rows after a crash, replaced by them when it
// installs a snapshot. After every first application of an index the simulator records
// hash(); every later application of that index on any member must give the same hash.
class SimMachine {
 public:
  virtual ~SimMachine() = default;
  // A new client command's payload; `now` is the simulated clock (the entry's stamp).
  virtual std::string propose(uint64_t random, uint64_t now) = 0;
  virtual void reset(const std::string& rows) = 0;  // "" = the initial state
  virtual std::string rows() const = 0;             // what a snapshot carries
  // Applies one committed payload; returns the invariant it found violated, or "".
  virtual std::string apply(const std::string& payload) = 0;
  virtual uint64_t hash() const = 0;
};

struct SimOptions {
  uint64_t seed = 1;
  FILE* trace = nullptr;  // when set, one line per event
  int byzantine = -1;     // a corrupting peer: -1 drawn per seed (30%), 0 never, 1 always
  std::function<std::unique_ptr<SimMachine>()> machine;  // none: the hash alone
};

struct SimStats {
  uint64_t ticks = 0;
  uint64_t events = 0;
  uint64_t max_term = 0;
  uint64_t leaders = 0;
  uint64_t acked_writes = 0;
  uint64_t reads_released = 0;
  uint64_t crashes = 0;
  uint64_t conf_changes = 0;
  uint64_t snapshots_installed = 0;
  uint64_t transfers = 0;
  uint64_t liveness_ticks = 0;
  bool leader_sends_first = false;      // drawn per seed (raft::DriveOptions)
  uint64_t crashes_at[5] = {};          // crashes inside a Ready by point: 1 after write, before
                                        // sync; 2 after sync; 3 after send; 4 after apply
  uint64_t crashes_sent_unwritten = 0;  // point 3 reached before the Ready's write (early send)
  uint64_t early_sends = 0;             // Readys whose messages went out before their write
  uint64_t corrupter = 0;               // the corrupting peer's id, 0 if none (drawn per seed)
  uint64_t corrupted = 0;               // messages it mutated (each dropped by its receiver)
};

struct SimResult {
  bool ok = true;
  std::string failure;  // what broke, when !ok
  uint64_t trace_hash = 0;
  SimStats stats;
};

SimResult run_seed(const SimOptions& opt);

}  // namespace keel::sim
