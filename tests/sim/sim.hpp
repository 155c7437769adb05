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
};

struct SimResult {
  bool ok = true;
  std::string failure;  // what broke, when !ok
  uint64_t trace_hash = 0;
  SimStats stats;
};

SimResult run_seed(const SimOptions& opt);

}  // namespace keel::sim
