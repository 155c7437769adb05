// The durability contract: a write acknowledged by keeld survives kill -9 of keeld.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.hpp"

using namespace keel;
using namespace keel::test;

namespace {

std::string describe(const Error& e) {
  return std::string(error_code_name(e.code)) + ": " + e.message;
}

}  // namespace

TEST_CASE("kill -9 during a burst of concurrent writes loses no acknowledged write",
          "[integration][durability]") {
  TempDir dir;
  Keeld keeld(dir.path);
  constexpr int kWriters = 8;
  constexpr int kRounds = 3;
  // acked[t] = values acknowledged for writer t's keys, across every round.
  std::vector<std::map<std::string, std::string>> acked(kWriters);

  for (int round = 0; round < kRounds; ++round) {
    REQUIRE(keeld.start());
    std::atomic<int> acked_now{0};
    std::atomic<bool> stop{false};
    std::atomic<bool> killed{false};
    // failure[t]: why writer t stopped before keeld was killed (empty: it did not).
    std::vector<std::string> failure(kWriters);
    Workers writers([&] {
      stop = true;
      keeld.kill9();
    });
    for (int t = 0; t < kWriters; ++t) {
      writers.spawn([&, t] {
        auto c = client::Client::connect(keeld.socket());
        if (!c) {
          failure[t] = "connect: " + describe(c.error());
          return;
        }
        for (int i = 0; !stop; ++i) {
          storage::PutRequest p;
          // Keys repeat across rounds so that later rounds overwrite earlier values.
          p.key = "w" + std::to_string(t) + "/" + std::to_string(i % 500);
          p.value = "round" + std::to_string(round) + "-" + std::to_string(i);
          auto r = (*c)->put(p);
          if (!r) {
            // After the kill the agent died under us; before it, any error is a failure.
            if (!killed) failure[t] = "put " + p.key + ": " + describe(r.error());
            return;
          }
          acked[t][p.key] = p.value;
          ++acked_now;
        }
      });
    }
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (acked_now < 1500 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    killed = true;
    keeld.kill9();
    stop = true;
    CHECK(writers.join_within(std::chrono::seconds(60)));
    CHECK(writers.errors().empty());
    for (int t = 0; t < kWriters; ++t) {
      INFO("round " << round << ", writer " << t);
      CHECK(failure[t] == "");
    }
    REQUIRE(acked_now >= 1500);
  }

  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  size_t checked = 0;
  for (int t = 0; t < kWriters; ++t) {
    for (const auto& [key, value] : acked[t]) {
      storage::RangeRequest get;
      get.key = key;
      auto r = c->range(get);
      REQUIRE(r.ok());
      INFO("key " << key);
      REQUIRE(r->kvs.size() == 1);
      // The last acknowledged value, or a later one that was durable but unacknowledged
      // when the process died: never an older one.
      const std::string& got = r->kvs[0].value;
      if (got != value) {
        auto round_of = [](const std::string& v) {
          return std::stoi(v.substr(5, v.find('-') - 5));
        };
        auto seq_of = [](const std::string& v) { return std::stol(v.substr(v.find('-') + 1)); };
        bool newer = round_of(got) > round_of(value) ||
                     (round_of(got) == round_of(value) && seq_of(got) > seq_of(value));
        CHECK(newer);
      }
      ++checked;
    }
  }
  CHECK(checked > 0);
  CHECK(keeld.terminate() == 0);
}

// Only the Raft log is journaled: after kill -9 the state comes back from the last
// checkpoint and keeld re-applies the log above it. Checkpoints every 150 ms, and kills at
// spread delays, land before, during and after checkpoints. Every acknowledged put is then
// readable at the revision it was acknowledged with (nothing lost, nothing applied twice:
// a re-applied entry that counted twice would shift every later revision).
TEST_CASE(
    "kill -9 around frequent checkpoints: every acknowledged put is there at its own "
    "revision after restart",
    "[integration][durability][checkpoint]") {
  TempDir dir;
  Keeld keeld(dir.path, "[storage]\ncheckpoint_interval_ms = 150\n");
  constexpr int kWriters = 6;
  constexpr int kRounds = 6;
  struct Acked {
    std::string key, value;
    int64_t revision = 0;
  };
  // acked[t]: writer t's acknowledged puts, in order, across every round.
  std::vector<std::vector<Acked>> acked(kWriters);
  // The revision each start opened its data dir at (keeld logs it), after the newest
  // acknowledged revision of the run before: below it = the state came from a checkpoint
  // and the log was re-applied, the path under test.
  auto opened_at = [&] {
    const std::string log = keeld.log();
    const std::string tag = ": revision ";
    size_t at = log.rfind(tag);
    return at == std::string::npos ? int64_t{-1} : std::stoll(log.substr(at + tag.size()));
  };
  int64_t newest_acked = 0;
  int reapplied = 0;
  for (int round = 0; round < kRounds; ++round) {
    REQUIRE(keeld.start());
    if (round > 0 && opened_at() < newest_acked) ++reapplied;
    std::atomic<int> acked_now{0};
    std::atomic<int64_t> newest_acked_now{0};
    std::atomic<bool> stop{false};
    std::atomic<bool> killed{false};
    std::vector<std::string> failure(kWriters);
    Workers writers([&] {
      stop = true;
      keeld.kill9();
    });
    for (int t = 0; t < kWriters; ++t) {
      writers.spawn([&, t] {
        auto c = client::Client::connect(keeld.socket());
        if (!c) {
          failure[t] = "connect: " + describe(c.error());
          return;
        }
        for (int i = 0; !stop; ++i) {
          storage::PutRequest p;
          p.key = "w" + std::to_string(t) + "/" + std::to_string(i % 200);
          p.value = "r" + std::to_string(round) + "-" + std::to_string(i) + std::string(200, 'x');
          auto r = (*c)->put(p);
          if (!r) {
            if (!killed) failure[t] = "put " + p.key + ": " + describe(r.error());
            return;
          }
          acked[t].push_back(Acked{p.key, p.value, r->revision});
          int64_t seen = newest_acked_now.load();
          while (seen < r->revision && !newest_acked_now.compare_exchange_weak(seen, r->revision)) {
          }
          ++acked_now;
        }
      });
    }
    // Spread the kill over about two checkpoint periods after 300 acknowledgements.
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (acked_now < 300 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(37 + 53 * round));
    killed = true;
    keeld.kill9();
    stop = true;
    CHECK(writers.join_within(std::chrono::seconds(60)));
    CHECK(writers.errors().empty());
    for (int t = 0; t < kWriters; ++t) {
      INFO("round " << round << ", writer " << t);
      CHECK(failure[t] == "");
    }
    REQUIRE(acked_now >= 300);
    newest_acked = newest_acked_now.load();
  }

  REQUIRE(keeld.start());
  if (opened_at() < newest_acked) ++reapplied;
  INFO("keeld log:\n" << keeld.log());
  CHECK(reapplied >= 1);
  auto c = keeld.client();
  REQUIRE(c);
  size_t checked = 0;
  int64_t newest = 0;
  for (int t = 0; t < kWriters; ++t) {
    for (const auto& a : acked[t]) {
      storage::RangeRequest get;
      get.key = a.key;
      get.revision = a.revision;
      auto r = c->range(get);
      INFO("key " << a.key << " acknowledged at revision " << a.revision);
      REQUIRE(r.ok());
      REQUIRE(r->kvs.size() == 1);
      CHECK(r->kvs[0].value == a.value);
      CHECK(r->kvs[0].mod_revision == a.revision);
      newest = std::max(newest, a.revision);
      ++checked;
    }
  }
  CHECK(checked >= kRounds * 300);
  storage::RangeRequest all;
  all.key = "w";
  all.range_end = storage::prefix_end("w");
  auto r = c->range(all);
  REQUIRE(r.ok());
  CHECK(r->revision >= newest);
  CHECK(keeld.terminate() == 0);
}

TEST_CASE("SIGTERM shuts down cleanly and the data is there after restart",
          "[integration][durability]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  {
    auto c = keeld.client();
    REQUIRE(c);
    for (int i = 0; i < 100; ++i) {
      storage::PutRequest p;
      p.key = "k" + std::to_string(i);
      p.value = std::to_string(i);
      REQUIRE(c->put(p).ok());
    }
  }
  CHECK(keeld.terminate() == 0);
  CHECK(access(keeld.socket().c_str(), F_OK) != 0);  // socket removed
  CHECK_THAT(keeld.log(), Catch::Contains("stopped"));
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  storage::RangeRequest all;
  all.key = "k";
  all.range_end = storage::prefix_end("k");
  auto r = c->range(all);
  REQUIRE(r.ok());
  CHECK(r->count == 100);
  CHECK(r->revision == 101);
}

TEST_CASE("SIGTERM during a burst of writes finishes what was acknowledged",
          "[integration][durability]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  constexpr int kWriters = 4;
  std::vector<std::vector<std::string>> acked(kWriters);
  // refusal[t]: the error that ended writer t (none if it finished all its puts).
  std::vector<std::optional<Error>> refusal(kWriters);
  std::atomic<int> acked_now{0};
  Workers writers([&] { keeld.kill9(); });
  for (int t = 0; t < kWriters; ++t) {
    writers.spawn([&, t] {
      auto c = client::Client::connect(keeld.socket());
      if (!c) {
        refusal[t] = c.error();
        return;
      }
      for (int i = 0; i < 100000; ++i) {
        storage::PutRequest p;
        p.key = "t" + std::to_string(t) + "/" + std::to_string(i);
        p.value = "v";
        auto r = (*c)->put(p);
        if (!r) {
          refusal[t] = r.error();
          return;
        }
        acked[t].push_back(p.key);
        ++acked_now;
      }
    });
  }
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (acked_now < 500 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int status = keeld.terminate();
  {
    INFO("keeld log:\n" << keeld.log());
    CHECK(status == 0);
  }
  // keeld has exited (terminate() waits, or kills it), so every writer's next put fails.
  CHECK(writers.join_within(std::chrono::seconds(60)));
  CHECK(writers.errors().empty());
  for (int t = 0; t < kWriters; ++t) {
    INFO("writer " << t);
    REQUIRE(refusal[t].has_value());
    INFO(describe(*refusal[t]));
    // Refused because the agent is stopping, in flight when it stopped (not acknowledged,
    // so not checked below), or the connection closed: all fine.
    CHECK((refusal[t]->code == ErrorCode::shutting_down ||
           refusal[t]->code == ErrorCode::outcome_unknown ||
           refusal[t]->code == ErrorCode::internal));
  }
  CHECK(acked_now >= 500);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  storage::RangeRequest all;
  all.key = "t";
  all.range_end = storage::prefix_end("t");
  all.count_only = true;
  auto r = c->range(all);
  REQUIRE(r.ok());
  size_t total = 0;
  for (auto& a : acked)
    total += a.size();
  // Every acknowledged write is there; at most one more per writer (applied, reply lost).
  CHECK(static_cast<size_t>(r->count) >= total);
  CHECK(static_cast<size_t>(r->count) <= total + kWriters);
}

TEST_CASE("SIGTERM during a slow compact --physical answers shutting_down and exits at once",
          "[integration][durability][compaction]") {
  TempDir dir;
  // One row per compaction transaction: physical deletion of the history below takes long.
  Keeld keeld(dir.path, "[limits]\nmax_txn_ops = 1000\n[storage]\ncompaction_batch_rows = 1\n");
  REQUIRE(keeld.start());
  int64_t rev = 0;
  {
    auto c = keeld.client();
    REQUIRE(c);
    for (int round = 0; round < 40; ++round) {
      storage::TxnRequest t;
      for (int i = 0; i < 1000; ++i) {
        storage::PutRequest p;
        p.key = "k" + std::to_string(i);
        p.value = std::to_string(round);
        t.success.push_back(p);
      }
      auto r = c->txn(t);
      REQUIRE(r.ok());
      rev = r->revision;
    }
  }
  std::atomic<bool> returned{false};
  std::optional<Result<int64_t>> result;
  std::thread caller([&] {
    auto c = keeld.client();
    if (c) result.emplace(c->compact(rev, /*physical=*/true));
    returned = true;
  });
  // Wait (bounded) until the compaction is recorded: the call then waits for the compactor.
  auto status = keeld.client();
  REQUIRE(status);
  bool recorded = false;
  for (int i = 0; i < 500 && !recorded; ++i) {
    auto st = status->status();
    recorded = st.ok() && st->compact_revision == rev;
    if (!recorded) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  bool still_waiting = !returned;
  status.reset();
  int exit_status = keeld.terminate();
  caller.join();
  REQUIRE(recorded);
  CHECK(exit_status == 0);
  REQUIRE(result.has_value());
  if (still_waiting) {
    // The reply is a typed shutting_down, not a dropped connection after a hung shutdown.
    REQUIRE_FALSE(result->ok());
    CHECK(result->error().code == ErrorCode::shutting_down);
  } else {
    WARN("the compaction finished before SIGTERM; the shutdown path was not exercised");
  }
  CHECK_THAT(keeld.log(), Catch::Contains("stopped"));
  // The compaction resumes at the next start and completes.
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  auto again = c->compact(rev, true);
  REQUIRE_FALSE(again.ok());  // already compacted at rev
  CHECK(again.error().code == ErrorCode::compacted);
}
