// server.threads: connections are dealt out to several event-loop threads, and they still
// share one store, one watcher limit, one lock table and one connection count.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace keel;
using namespace keel::test;

namespace {

// Until the agent has seen start()'s probe connection hang up (bounded).
uint64_t settled_connections(client::Client& c, uint64_t want) {
  uint64_t open = 0;
  for (int i = 0; i < 200; ++i) {
    auto st = c.status();
    if (!st) return 0;
    open = st->connections;
    if (open == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return open;
}

}  // namespace

TEST_CASE(
    "server.threads 3: connections are dealt to every thread, and writes, watches, the watcher "
    "limit, locks and the connection count are shared by all",
    "[integration][threads]") {
  TempDir dir;
  Keeld keeld(dir.path, "[server]\nthreads = 3\n[limits]\nmax_watchers = 3\n");
  REQUIRE(keeld.start());

  // Six consecutive connections land on all three threads (dealt in turn).
  std::vector<std::unique_ptr<client::Client>> clients;
  std::set<uint32_t> threads;
  for (int i = 0; i < 6; ++i) {
    clients.push_back(keeld.client());
    REQUIRE(clients.back());
    auto st = clients.back()->status();
    REQUIRE(st.ok());
    CHECK(st->server_threads == 3);
    threads.insert(st->server_thread);
  }
  CHECK(threads == std::set<uint32_t>{0, 1, 2});
  CHECK(settled_connections(*clients[0], 6) == 6);  // the agent's count, not one thread's

  // A write through one thread is read at once through the others.
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string key = "k" + std::to_string(i);
    REQUIRE(clients[i]->put(put(key, "v" + std::to_string(i))).ok());
    storage::RangeRequest r;
    r.key = key;
    r.serializable = true;
    auto got = clients[(i + 1) % clients.size()]->range(r);
    REQUIRE(got.ok());
    REQUIRE(got->kvs.size() == 1);
    CHECK(got->kvs[0].value == "v" + std::to_string(i));
  }

  // Three watchers, each on its own connection and so spread over the threads, fill the
  // agent-wide limit; a fourth, on yet another connection, is refused.
  constexpr int kWatchers = 4;
  std::vector<Status> ended(kWatchers, ok_status());  // read after join
  std::vector<std::atomic<bool>> finished(kWatchers);
  std::vector<std::vector<std::string>> seen(kWatchers);
  std::vector<std::thread> watchers;
  for (int w = 0; w < kWatchers; ++w) {
    watchers.emplace_back([&, w] {
      auto c = keeld.client();  // a client is used on the thread that made it
      if (!c) {
        ended[w] = make_error(ErrorCode::internal, "no connection");
        finished[w] = true;
        return;
      }
      client::WatchOptions o;
      o.key = "w/";
      o.range_end = "w0";
      ended[w] = c->watch(o, [&, w](int64_t, const std::vector<storage::Event>& events) {
        for (const auto& e : events) {
          seen[w].push_back(e.kv.key);
          if (e.kv.key == "w/stop") return false;
        }
        return true;
      });
      finished[w] = true;
    });
    if (w < kWatchers - 1) {
      // Bounded wait until this watcher is registered, so that the fourth is the one over.
      for (int i = 0; i < 200; ++i) {
        auto st = clients[0]->status();
        if (st && st->watchers == static_cast<uint64_t>(w + 1)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  // The fourth watcher's thread returns with its refusal; give it (bounded) time to try.
  for (int i = 0; i < 200; ++i) {
    if (finished[kWatchers - 1]) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto st = clients[0]->status();
  REQUIRE(st.ok());
  CHECK(st->watchers == 3);
  for (int i = 0; i < 5; ++i)
    REQUIRE(clients[i % clients.size()]->put(put("w/" + std::to_string(i), "x")).ok());
  REQUIRE(clients[1]->put(put("w/stop", "x")).ok());
  for (auto& t : watchers)
    t.join();
  int refused = 0;
  const std::vector<std::string> all{"w/0", "w/1", "w/2", "w/3", "w/4", "w/stop"};
  for (int w = 0; w < kWatchers; ++w) {
    INFO("watcher " << w);
    if (!ended[w].ok()) {
      CHECK(ended[w].error().code == ErrorCode::too_many_watchers);
      CHECK_THAT(ended[w].error().message, Catch::Contains("limits.max_watchers"));
      ++refused;
    } else {
      CHECK(seen[w] == all);  // every event, in order, on whichever thread it was served
    }
  }
  CHECK(refused == 1);

  // One lock table: held through one thread, it is busy through the others until released.
  client::LockOptions lo;
  lo.ttl_ms = 10000;
  auto held = clients[0]->lock("reboot", lo);
  REQUIRE(held.ok());
  REQUIRE(*held != nullptr);
  client::LockOptions try_lock = lo;
  try_lock.wait = false;
  for (size_t i = 1; i < 3; ++i) {
    auto busy = clients[i]->lock("reboot", try_lock);
    REQUIRE(busy.ok());
    CHECK(*busy == nullptr);
  }
  REQUIRE((*held)->unlock().ok());
  auto next = clients[1]->lock("reboot", try_lock);
  REQUIRE(next.ok());
  CHECK(*next != nullptr);
}
