// Figures, not assertions: run with `storage_test "[.bench]"` (hidden from ctest).
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cluster/storage/raft_storage.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

using Clock = std::chrono::steady_clock;

double percentile_us(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

TEST_CASE("bench: point reads, apply throughput, log append with sync", "[.bench]") {
  test::Store s;
  const int keys = 10000;
  const std::string value(256, 'v');
  auto key = [](int i) {
    char b[16];
    std::snprintf(b, sizeof b, "k%07d", i);
    return std::string(b);
  };
  // Apply: batches of 100 single-put commands.
  std::vector<Command> cmds;
  for (int i = 0; i < keys; i++)
    cmds.emplace_back(test::put_req(key(i), value));
  auto t0 = Clock::now();
  for (int i = 0; i < keys; i += 100) {
    std::vector<std::pair<uint64_t, const Command*>> batch;
    for (int j = i; j < i + 100; j++)
      batch.emplace_back(static_cast<uint64_t>(j + 1), &cmds[j]);
    s.store().apply(batch);
  }
  double apply_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("apply: %d puts in batches of 100: %.0f puts/s\n", keys, keys / apply_s);

  // Point reads at the current revision and at an older one.
  for (bool old : {false, true}) {
    std::vector<double> us;
    RangeRequest r;
    r.revision = old ? s.rev() - 1 : 0;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 100000; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      r.key = key(static_cast<int>(x % (keys - 1)));  // the last key is newer
      auto t = Clock::now();
      auto resp = s.rd->range(r, 1 << 20);
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
      REQUIRE(resp->kvs.size() == 1);
    }
    std::printf("point read (%s revision): p50 %.2f us, p99 %.2f us\n", old ? "older" : "current",
                percentile_us(us, 0.5), percentile_us(us, 0.99));
  }

  // Full scan paging over the 10k keys.
  auto t1 = Clock::now();
  RangeRequest all = test::all_keys();
  int64_t seen = 0;
  for (;;) {
    auto resp = s.rd->range(all, 1 << 20, seen > 0);
    seen += static_cast<int64_t>(resp->kvs.size());
    if (!resp->more) break;
    all.key = resp->continue_key;
    all.revision = resp->revision;
  }
  std::printf("range scan: %lld keys in %.1f ms\n", static_cast<long long>(seen),
              std::chrono::duration<double, std::milli>(Clock::now() - t1).count());

  // Raft log: one 256-byte entry per synced append, then batches of 100.
  RaftStorage& log = s.engine->raft();
  if (!log.initialized()) REQUIRE(log.bootstrap(raft::ConfState{{1}, {}}).ok());
  std::vector<double> us;
  uint64_t next = log.last_index() + 1;
  auto entry = [&](uint64_t index) {
    return raft::Entry{index, 1, raft::EntryType::normal, value};
  };
  for (int i = 0; i < 500; i++) {
    auto t = Clock::now();
    log.append({entry(next++)});
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  std::printf("log append + sync, 1 entry: p50 %.0f us, p99 %.0f us\n", percentile_us(us, 0.5),
              percentile_us(us, 0.99));
  auto t2 = Clock::now();
  for (int i = 0; i < 100; i++) {
    std::vector<raft::Entry> batch;
    for (int j = 0; j < 100; j++)
      batch.push_back(entry(next++));
    log.append(batch);
  }
  double log_s = std::chrono::duration<double>(Clock::now() - t2).count();
  std::printf("log append + sync, batches of 100: %.0f entries/s\n", 10000 / log_s);
}

}  // namespace
}  // namespace keel::storage
