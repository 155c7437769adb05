#pragma once
// Deterministic cluster simulator for keel's Raft core: the whole cluster in one thread, driven
// by one seed. Everything random (fault mix, network, disk crashes, clients) comes from that
// seed, so a failing seed replays exactly with --trace.
#include <cstdint>
#include <cstdio>
#include <string>

namespace keel::sim {

struct SimOptions {
  uint64_t seed = 1;
  FILE* trace = nullptr;  // when set, one line per event
  int byzantine = -1;     // a corrupting peer: -1 drawn per seed (30%), 0 never, 1 always
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
