// keel_sim: runs the deterministic Raft cluster simulator.
//   keel_sim --seed N [--trace]        one seed (--trace prints every event)
//   keel_sim --seeds K [--from N]      K seeds starting at N (soak: --seeds 100000)
//   keel_sim --determinism N           runs seed N twice and compares the trace hashes
//   --byzantine on|off                 a corrupting peer in every seed / none (default: drawn
//                                      per seed, 30%)
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/sim/sim.hpp"

namespace {

const char* g_argv0 = "keel_sim";
volatile uint64_t g_seed = 0;

void print_replay(uint64_t seed) {
  std::fprintf(stderr, "replay: %s --seed %llu --trace\n", g_argv0,
               static_cast<unsigned long long>(seed));
}

extern "C" void on_abort(int) {
  // An assertion inside the core aborted: name the seed before dying.
  std::fprintf(stderr, "FAILED seed %llu (assertion)\n", static_cast<unsigned long long>(g_seed));
  print_replay(g_seed);
  std::signal(SIGABRT, SIG_DFL);
}

void print_stats(uint64_t seed, const keel::sim::SimResult& r) {
  const auto& s = r.stats;
  std::printf(
      "seed %llu: %s ticks=%llu events=%llu max_term=%llu leaders=%llu acked=%llu reads=%llu "
      "crashes=%llu confs=%llu snaps=%llu transfers=%llu liveness_ticks=%llu early=%d "
      "corrupter=%llu corrupted=%llu hash=%016llx\n",
      static_cast<unsigned long long>(seed), r.ok ? "ok" : "FAILED",
      static_cast<unsigned long long>(s.ticks), static_cast<unsigned long long>(s.events),
      static_cast<unsigned long long>(s.max_term), static_cast<unsigned long long>(s.leaders),
      static_cast<unsigned long long>(s.acked_writes),
      static_cast<unsigned long long>(s.reads_released), static_cast<unsigned long long>(s.crashes),
      static_cast<unsigned long long>(s.conf_changes),
      static_cast<unsigned long long>(s.snapshots_installed),
      static_cast<unsigned long long>(s.transfers),
      static_cast<unsigned long long>(s.liveness_ticks), s.leader_sends_first ? 1 : 0,
      static_cast<unsigned long long>(s.corrupter), static_cast<unsigned long long>(s.corrupted),
      static_cast<unsigned long long>(r.trace_hash));
}

uint64_t parse_u64(const char* s) {
  return std::strtoull(s, nullptr, 10);
}

}  // namespace

int main(int argc, char** argv) {
  g_argv0 = argv[0];
  std::signal(SIGABRT, on_abort);
  uint64_t seed = 0, seeds = 0, from = 1, determinism = 0;
  bool have_seed = false, trace = false, have_determinism = false, verbose = false;
  int byzantine = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seed") {
      seed = parse_u64(next());
      have_seed = true;
    } else if (a == "--seeds") {
      seeds = parse_u64(next());
    } else if (a == "--from") {
      from = parse_u64(next());
    } else if (a == "--trace") {
      trace = true;
    } else if (a == "--verbose") {
      verbose = true;
    } else if (a == "--byzantine") {
      const std::string v = next();
      if (v != "on" && v != "off") {
        std::fprintf(stderr, "--byzantine takes on or off\n");
        return 2;
      }
      byzantine = v == "on" ? 1 : 0;
    } else if (a == "--determinism") {
      determinism = parse_u64(next());
      have_determinism = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s --seed N [--trace] | --seeds K [--from N] [--verbose] | "
                   "--determinism N; [--byzantine on|off]\n",
                   argv[0]);
      return 2;
    }
  }

  if (have_determinism) {
    g_seed = determinism;
    const auto a = keel::sim::run_seed({determinism, nullptr, byzantine, nullptr});
    const auto b = keel::sim::run_seed({determinism, nullptr, byzantine, nullptr});
    print_stats(determinism, a);
    if (!a.ok || !b.ok || a.trace_hash != b.trace_hash || a.stats.events != b.stats.events) {
      std::fprintf(stderr, "FAILED: seed %llu is not deterministic (%016llx vs %016llx) %s\n",
                   static_cast<unsigned long long>(determinism),
                   static_cast<unsigned long long>(a.trace_hash),
                   static_cast<unsigned long long>(b.trace_hash), a.failure.c_str());
      return 1;
    }
    std::printf("deterministic: two runs of seed %llu gave trace hash %016llx\n",
                static_cast<unsigned long long>(determinism),
                static_cast<unsigned long long>(a.trace_hash));
    return 0;
  }

  if (have_seed) {
    g_seed = seed;
    const auto r = keel::sim::run_seed({seed, trace ? stdout : nullptr, byzantine, nullptr});
    print_stats(seed, r);
    if (!r.ok) {
      std::fprintf(stderr, "FAILED seed %llu: %s\n", static_cast<unsigned long long>(seed),
                   r.failure.c_str());
      print_replay(seed);
      return 1;
    }
    return 0;
  }

  if (seeds == 0) seeds = 1;
  uint64_t failures = 0, acked = 0, reads = 0, crashes = 0, confs = 0, leaders = 0;
  uint64_t max_live = 0, early_seeds = 0, early_sends = 0, sent_unwritten = 0;
  uint64_t corrupt_seeds = 0, corrupted = 0;
  uint64_t crashes_at[5] = {};
  for (uint64_t s = from; s < from + seeds; ++s) {
    g_seed = s;
    const auto r = keel::sim::run_seed({s, nullptr, byzantine, nullptr});
    acked += r.stats.acked_writes;
    reads += r.stats.reads_released;
    crashes += r.stats.crashes;
    confs += r.stats.conf_changes;
    leaders += r.stats.leaders;
    early_seeds += r.stats.leader_sends_first ? 1 : 0;
    early_sends += r.stats.early_sends;
    sent_unwritten += r.stats.crashes_sent_unwritten;
    corrupt_seeds += r.stats.corrupter != 0 ? 1 : 0;
    corrupted += r.stats.corrupted;
    for (int p = 1; p < 5; ++p)
      crashes_at[p] += r.stats.crashes_at[p];
    if (r.stats.liveness_ticks > max_live) max_live = r.stats.liveness_ticks;
    if (verbose) print_stats(s, r);
    if (!r.ok) {
      ++failures;
      std::fprintf(stderr, "FAILED seed %llu: %s\n", static_cast<unsigned long long>(s),
                   r.failure.c_str());
      print_replay(s);
    }
    if (!verbose && (s - from + 1) % 10000 == 0) {
      std::printf("... %llu seeds, %llu failures\n", static_cast<unsigned long long>(s - from + 1),
                  static_cast<unsigned long long>(failures));
      std::fflush(stdout);
    }
  }
  std::printf(
      "%llu seeds from %llu: %llu failures; acked writes %llu, reads %llu, crashes %llu, "
      "conf changes %llu, leaders %llu, slowest liveness %llu ticks\n",
      static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(from),
      static_cast<unsigned long long>(failures), static_cast<unsigned long long>(acked),
      static_cast<unsigned long long>(reads), static_cast<unsigned long long>(crashes),
      static_cast<unsigned long long>(confs), static_cast<unsigned long long>(leaders),
      static_cast<unsigned long long>(max_live));
  std::printf(
      "leader sends first in %llu seeds (%llu early sends); crashes inside a Ready: "
      "write/sync %llu, after sync %llu, after send %llu (%llu before the write), after apply "
      "%llu\n",
      static_cast<unsigned long long>(early_seeds), static_cast<unsigned long long>(early_sends),
      static_cast<unsigned long long>(crashes_at[1]),
      static_cast<unsigned long long>(crashes_at[2]),
      static_cast<unsigned long long>(crashes_at[3]),
      static_cast<unsigned long long>(sent_unwritten),
      static_cast<unsigned long long>(crashes_at[4]));
  std::printf("a corrupting peer in %llu seeds: %llu mutated messages, each dropped\n",
              static_cast<unsigned long long>(corrupt_seeds),
              static_cast<unsigned long long>(corrupted));
  return failures == 0 ? 0 : 1;
}
