#include <atomic>
#include <thread>

#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

// Every txn writes the same value to all five keys: a reader that ever sees two different
// values, or a key missing, has read across a commit.
TEST_CASE("concurrency: readers see whole txns while apply and compaction run", "[concurrency]") {
  EngineOptions o = test::test_options("");
  o.compaction_batch_rows = 3;
  test::Store s(o);
  const int keys = 5;
  auto write_all = [&](int round) {
    TxnRequest t;
    for (int k = 0; k < keys; k++) {
      t.success.push_back(test::put_req("key" + std::to_string(k), "v" + std::to_string(round)));
    }
    s.txn(t);
  };
  write_all(0);
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, compacted_reads{0};
  std::atomic<int> bad{0};
  auto check = [&](const RangeResponse& r) {
    if (r.kvs.size() != static_cast<size_t>(keys)) {
      bad++;
      return;
    }
    for (const auto& kv : r.kvs) {
      if (kv.value != r.kvs[0].value || kv.mod_revision != r.kvs[0].mod_revision) bad++;
    }
  };
  std::thread reader([&] {
    auto rd = s.store().reader();
    while (!done.load()) {
      auto now = rd->range(test::all_keys(), 1 << 20);
      if (now.ok()) {
        check(now.value());
      } else {
        bad++;
      }
      // At the compact revision (0 at first: the current one). It may move on meanwhile;
      // then "compacted" is the right answer.
      auto old = rd->range(test::all_keys(s.store().compact_revision()), 1 << 20);
      if (old.ok()) {
        check(old.value());
      } else if (old.error().code == ErrorCode::compacted) {
        compacted_reads++;
      } else {
        bad++;
      }
      reads++;
    }
  });
  for (int round = 1; round <= 300; round++) {
    write_all(round);
    if (round % 25 == 0) REQUIRE(s.apply(CompactRequest{s.rev() - 10}).ok());
  }
  s.store().wait_compaction_idle();
  while (reads.load() < 50)
    std::this_thread::yield();
  done = true;
  reader.join();
  CHECK(bad.load() == 0);
  CHECK(reads.load() >= 50);
  // After the last compaction, exactly one version per key is left at the compact revision.
  auto at = s.range(test::all_keys(s.store().compact_revision()));
  CHECK(at.kvs.size() == static_cast<size_t>(keys));
}

}  // namespace
}  // namespace keel::storage
