// checkpoint_stall: how long a checkpoint holds up the write path (the node thread's loop:
// persist a batch of Raft entries, synced, then apply it), on the real engine.
//
//   checkpoint_stall [--seconds S] [--keys N] [--batch N] [--cache-mb N] [--interval-ms N]
//
// Runs the loop for S seconds (default 20) on a fresh data directory, with puts of 256-byte
// random values over N keys (default 200000, so that a checkpoint has many dirty pages) in
// batches of --batch entries (default 64, a Ready under load), and checkpoints every
// --interval-ms (default 2000). Prints, for iterations that overlapped a checkpoint and for
// the others: count, p50, p99 and max latency. Prints figures; asserts nothing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/raft/raft.hpp"
#include "cluster/storage/mvcc_store.hpp"
#include "cluster/storage/raft_storage.hpp"

using namespace keel;
using namespace keel::storage;
using Clock = std::chrono::steady_clock;

namespace {

double pct_us(std::vector<uint64_t>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return static_cast<double>(v[i]) / 1000.0;
}

void print(const char* what, std::vector<uint64_t>& v) {
  std::printf("%-34s n=%-7zu p50_us=%-9.1f p99_us=%-9.1f max_us=%.1f\n", what, v.size(),
              pct_us(v, 0.50), pct_us(v, 0.99), v.empty() ? 0.0 : pct_us(v, 1.0));
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 20;
  uint64_t keys = 200000, batch = 64, cache_mb = 48, interval_ms = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--seconds") {
      seconds = static_cast<double>(v);
    } else if (a == "--keys") {
      keys = v;
    } else if (a == "--batch") {
      batch = v;
    } else if (a == "--cache-mb") {
      cache_mb = v;
    } else if (a == "--interval-ms") {
      interval_ms = v;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--seconds S] [--keys N] [--batch N] [--cache-mb N] "
                   "[--interval-ms N]\n",
                   argv[0]);
      return 2;
    }
  }
  char tmpl[] = "/tmp/keel-ckpt-stall-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  int rc = 0;
  {
    EngineOptions o;
    o.dir = dir;
    o.cache_size_mb = cache_mb;
    // Checkpoints from this program's own thread, so that it knows when each one ran.
    o.checkpoint_interval_ms = 0;
    o.checkpoint_log_mb = 0;
    auto e = open_engine(o);
    if (!e) {
      std::fprintf(stderr, "open: %s\n", e.error().message.c_str());
      return 1;
    }
    Engine& engine = **e;
    const raft::ConfState conf{{1}, {}};
    if (!engine.raft().bootstrap(conf)) return 1;
    uint64_t rng = 0x9e3779b97f4a7c15ull, index = 0;
    auto next = [&] {
      rng ^= rng >> 12;
      rng ^= rng << 25;
      rng ^= rng >> 27;
      return rng * 2685821657736338717ull;
    };
    std::vector<uint64_t> during, outside;
    const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(seconds));
    std::mutex mu;
    std::vector<std::pair<Clock::time_point, Clock::time_point>> checkpoints;
    std::thread checkpointer([&] {
      while (Clock::now() + std::chrono::milliseconds(interval_ms) < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
        const auto s0 = Clock::now();
        if (!engine.checkpoint()) std::fprintf(stderr, "checkpoint failed\n");
        std::lock_guard lk(mu);
        checkpoints.emplace_back(s0, Clock::now());
      }
    });
    std::vector<std::pair<Clock::time_point, uint64_t>> iterations;  // start, ns
    std::vector<Command> commands(batch);
    while (Clock::now() < end) {
      raft::Ready rd;
      std::vector<std::pair<uint64_t, const Command*>> apply;
      for (uint64_t b = 0; b < batch; b++) {
        PutRequest p;
        p.key = "k" + std::to_string(next() % keys);
        p.value.resize(256);
        for (size_t i = 0; i < 256; i += 8) {
          uint64_t x = next();
          std::memcpy(&p.value[i], &x, 8);
        }
        commands[b] = p;
        raft::Entry entry;
        entry.index = ++index;
        entry.term = 1;
        entry.data = encode_command(commands[b]);
        rd.entries.push_back(std::move(entry));
        apply.emplace_back(index, &commands[b]);
      }
      rd.hard_state = raft::HardState{1, 1, index};
      const auto t0 = Clock::now();
      engine.raft().persist(rd);
      auto r = engine.store().apply(apply, index, index == batch ? &conf : nullptr);
      const auto ns = static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
      if (r.empty() || !r.back().ok()) {
        std::fprintf(stderr, "apply failed\n");
        rc = 1;
        break;
      }
      iterations.emplace_back(t0, ns);
    }
    checkpointer.join();
    for (const auto& [t0, ns] : iterations) {
      const auto t1 = t0 + std::chrono::nanoseconds(ns);
      bool overlap = false;
      for (const auto& [c0, c1] : checkpoints)
        overlap |= t0 < c1 && c0 < t1;
      (overlap ? during : outside).push_back(ns);
    }
    const auto st = engine.stats();
    std::printf(
        "checkpoint_stall: %llu keys, batches of %llu puts (256-byte random values), "
        "cache %llu MB, a checkpoint every %llu ms; %llu checkpoints, last %llu ms, "
        "longest %llu ms\n",
        static_cast<unsigned long long>(keys), static_cast<unsigned long long>(batch),
        static_cast<unsigned long long>(cache_mb), static_cast<unsigned long long>(interval_ms),
        static_cast<unsigned long long>(st.checkpoints),
        static_cast<unsigned long long>(st.checkpoint_ms_last),
        static_cast<unsigned long long>(st.checkpoint_ms_max));
    print("iterations during a checkpoint", during);
    print("all other iterations", outside);
    std::vector<uint64_t> all = during;
    all.insert(all.end(), outside.begin(), outside.end());
    print("all iterations (persist+apply)", all);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
