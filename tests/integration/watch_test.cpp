// Watches against a real keeld: ordering, exactly-once, replay, filters, prev_kv, progress,
// compaction, resumption, and flow control of a slow watcher.
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "harness.hpp"

using namespace keel;
using namespace keel::test;
using namespace keel::storage;

namespace {
std::string describe(const Error& e) {
  return std::string(error_code_name(e.code)) + ": " + e.message;
}

}  // namespace

TEST_CASE("concurrent writes reach a watcher in revision order, each exactly once",
          "[integration][watch]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  auto start = c->status();
  REQUIRE(start.ok());
  constexpr int kWriters = 4, kPerWriter = 250, kTotal = kWriters * kPerWriter;

  std::vector<Event> seen;
  std::vector<int64_t> headers;
  std::string watch_failure;                         // why the watch ended, if not ok
  std::vector<std::string> write_failure(kWriters);  // writer t's first failed put
  Workers workers([&] { keeld.kill9(); });           // a blocked watch returns when keeld dies
  workers.spawn([&] {
    auto wc = keeld.client();
    if (!wc) {
      watch_failure = "cannot connect";
      return;
    }
    client::WatchOptions o;
    o.key = "w/";
    o.range_end = prefix_end("w/");
    o.start_revision = start->revision + 1;
    auto st = wc->watch(o, [&](int64_t header, const std::vector<Event>& events) {
      headers.push_back(header);
      seen.insert(seen.end(), events.begin(), events.end());
      return seen.size() < kTotal;
    });
    if (!st) watch_failure = describe(st.error());
  });
  for (int t = 0; t < kWriters; ++t) {
    workers.spawn([&, t] {
      auto wc = keeld.client();
      if (!wc) {
        write_failure[t] = "cannot connect";
        return;
      }
      for (int i = 0; i < kPerWriter; ++i) {
        std::string key = "w/" + std::to_string(t) + "/" + std::to_string(i);
        auto r = wc->put(put(key, "v"));
        if (!r) {
          write_failure[t] = "put " + key + ": " + describe(r.error());
          return;
        }
      }
    });
  }
  // A watcher that misses an event would wait for ever: bounded, then keeld is killed.
  CHECK(workers.join_within(std::chrono::seconds(120)));
  CHECK(workers.errors().empty());
  for (int t = 0; t < kWriters; ++t) {
    INFO("writer " << t);
    CHECK(write_failure[t] == "");
  }
  CHECK(watch_failure == "");

  REQUIRE(seen.size() == kTotal);
  std::set<std::string> keys;
  for (size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].type == EventType::put);
    CHECK(seen[i].kv.mod_revision == start->revision + 1 + static_cast<int64_t>(i));
    keys.insert(seen[i].kv.key);
  }
  CHECK(keys.size() == kTotal);
  CHECK(std::is_sorted(headers.begin(), headers.end()));
}

TEST_CASE("prev_kv, filters, deletes and resuming from the last revision", "[integration][watch]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  REQUIRE(c->put(put("cfg", "v1")).ok());  // rev 2
  REQUIRE(c->put(put("cfg", "v2")).ok());  // rev 3
  DeleteRangeRequest del;
  del.key = "cfg";
  REQUIRE(c->delete_range(del).ok());      // rev 4
  REQUIRE(c->put(put("cfg", "v3")).ok());  // rev 5

  client::WatchOptions o;
  o.key = "cfg";
  o.start_revision = 2;
  o.prev_kv = true;
  std::vector<Event> all;
  REQUIRE(c->watch(o, [&](int64_t, const std::vector<Event>& ev) {
             all.insert(all.end(), ev.begin(), ev.end());
             return all.size() < 4;
           }).ok());
  REQUIRE(all.size() == 4);
  CHECK_FALSE(all[0].prev_kv);
  REQUIRE(all[1].prev_kv);
  CHECK(all[1].prev_kv->value == "v1");
  CHECK(all[2].type == EventType::del);
  CHECK(all[2].kv.mod_revision == 4);
  REQUIRE(all[2].prev_kv);
  CHECK(all[2].prev_kv->value == "v2");
  CHECK(all[3].kv.create_revision == 5);
  CHECK(all[3].kv.version == 1);

  o.prev_kv = false;
  o.no_put = true;
  std::vector<Event> deletes;
  // Only the delete at revision 4 matches; end the watch at the first progress after it.
  REQUIRE(c->watch(o, [&](int64_t, const std::vector<Event>& ev) {
             deletes.insert(deletes.end(), ev.begin(), ev.end());
             return false;
           }).ok());
  REQUIRE(deletes.size() == 1);
  CHECK(deletes[0].type == EventType::del);

  // Resume: the next watch starts right after the last revision seen.
  o.no_put = false;
  o.start_revision = 4;
  std::vector<Event> rest;
  REQUIRE(c->watch(o, [&](int64_t, const std::vector<Event>& ev) {
             rest.insert(rest.end(), ev.begin(), ev.end());
             return rest.size() < 2;
           }).ok());
  CHECK(rest[0].kv.mod_revision == 4);
  CHECK(rest[1].kv.mod_revision == 5);
  // Ended watches are gone from the agent.
  auto status = c->status();
  REQUIRE(status.ok());
  CHECK(status->watchers == 0);
}

TEST_CASE("a compacted start revision is refused with the compact revision",
          "[integration][watch][compaction]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  for (int i = 0; i < 10; ++i)
    REQUIRE(c->put(put("k", std::to_string(i))).ok());  // revs 2..11
  REQUIRE(c->compact(8, true).ok());
  client::WatchOptions o;
  o.key = "k";
  o.start_revision = 5;
  auto st = c->watch(o, [](int64_t, const std::vector<Event>&) { return false; });
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == ErrorCode::compacted);
  CHECK(st.error().compact_revision == 8);
  CHECK_THAT(st.error().message, Catch::Contains("oldest available is 8"));
  o.start_revision = 9;  // above the compact revision: replays 9, 10, 11
  std::vector<Event> got;
  REQUIRE(c->watch(o, [&](int64_t, const std::vector<Event>& ev) {
             got.insert(got.end(), ev.begin(), ev.end());
             return got.size() < 3;
           }).ok());
  CHECK(got.front().kv.value == "7");
  // From the compact revision itself (etcd clients resume from compact_revision): the
  // version at 8 survives compaction, so the replay starts with it.
  o.start_revision = 8;
  got.clear();
  REQUIRE(c->watch(o, [&](int64_t, const std::vector<Event>& ev) {
             got.insert(got.end(), ev.begin(), ev.end());
             return got.size() < 4;
           }).ok());
  REQUIRE(got.size() >= 4);
  CHECK(got.front().kv.value == "6");
  CHECK(got.front().kv.mod_revision == 8);
}

TEST_CASE("progress notifications report the revision the watcher is synced to",
          "[integration][watch]") {
  TempDir dir;
  Keeld keeld(dir.path, "[watch]\nprogress_interval_ms = 50\n");
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  REQUIRE(c->put(put("other", "x")).ok());  // rev 2
  client::WatchOptions o;
  o.key = "quiet";
  o.progress_notify = true;
  int64_t progress = 0;
  REQUIRE(c->watch(
               o, [](int64_t, const std::vector<Event>&) { return true; },
               [&](int64_t revision) {
                 progress = revision;
                 return false;
               })
              .ok());
  CHECK(progress == 2);
}

TEST_CASE("a watcher that stops reading does not grow the agent's memory",
          "[integration][watch][flow-control]") {
  TempDir dir;
  Keeld keeld(dir.path, "[storage]\ncache_size_mb = 32\n");
  // Under AddressSanitizer, freed memory sits in a quarantine (256 MiB by default) and
  // counts in RSS; turn it off for this keeld so RSS measures what the agent holds.
  const char* asan = std::getenv("ASAN_OPTIONS");
  std::string saved = asan ? asan : "";
  setenv("ASAN_OPTIONS",
         (saved + ":quarantine_size_mb=0:thread_local_quarantine_size_kb=0").c_str(), 1);
  bool started = keeld.start();
  if (asan)
    setenv("ASAN_OPTIONS", saved.c_str(), 1);
  else
    unsetenv("ASAN_OPTIONS");
  REQUIRE(started);
  auto c = keeld.client();
  REQUIRE(c);
  auto start = c->status();
  REQUIRE(start.ok());

  constexpr int kPuts = 2000;
  const std::string value(64 * 1024, 'x');  // 125 MiB of events in all
  std::promise<void> release;
  auto released = release.get_future().share();
  bool released_once = false;
  auto release_watcher = [&] {
    if (!released_once) release.set_value();
    released_once = true;
  };
  std::atomic<int> received{0};
  std::atomic<bool> in_order{true};
  std::string watch_failure;
  Workers workers([&] {
    release_watcher();
    keeld.kill9();
  });
  workers.spawn([&] {
    auto wc = keeld.client();
    if (!wc) {
      watch_failure = "cannot connect";
      return;
    }
    client::WatchOptions o;
    o.key = "big/";
    o.range_end = prefix_end("big/");
    o.start_revision = start->revision + 1;
    int64_t expect = start->revision + 1;
    bool first = true;
    auto st = wc->watch(o, [&](int64_t, const std::vector<Event>& ev) {
      if (first) {
        released.wait();  // stop reading until the writer is done
        first = false;
      }
      for (const auto& e : ev) {
        if (e.kv.mod_revision != expect++) in_order = false;
      }
      received += static_cast<int>(ev.size());
      return received < kPuts;
    });
    if (!st) watch_failure = describe(st.error());
  });

  long rss_before = keeld.rss_kib();
  for (int i = 0; i < kPuts; ++i)
    REQUIRE(c->put(put("big/" + std::to_string(i % 100), value)).ok());
  long rss_after = keeld.rss_kib();
  INFO("keeld RSS before " << rss_before << " KiB, after " << rss_after << " KiB");
  // If the agent buffered the backlog it would hold 125 MiB more; flow control keeps it to a
  // few batches (the WiredTiger cache is capped at 32 MiB).
  CHECK(rss_after - rss_before < 80 * 1024);
  // Other clients are served meanwhile.
  RangeRequest get;
  get.key = "big/1";
  CHECK(c->range(get).ok());

  release_watcher();
  CHECK(workers.join_within(std::chrono::seconds(120)));
  CHECK(workers.errors().empty());
  CHECK(watch_failure == "");
  CHECK(received == kPuts);
  CHECK(in_order);
}

TEST_CASE("watchers with different ranges and filters each get exactly their events",
          "[integration][watch]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  auto start = c->status();
  REQUIRE(start.ok());
  const int64_t from = start->revision + 1;
  constexpr int kOps = 300;

  struct Spec {
    std::string key, range_end;
    bool prev_kv, no_put, no_delete;
  };
  const std::vector<Spec> specs = {
      {"w/0/", prefix_end("w/0/"), false, false, false},
      {"w/1/", prefix_end("w/1/"), true, false, false},
      {"w/2/7", "", true, false, false},
      {"w/", prefix_end("w/"), false, true, false},
      {"w/", prefix_end("w/"), true, false, true},
      {"w/", std::string(1, '\0'), false, false, false},
  };
  std::vector<std::vector<Event>> got(specs.size());
  std::vector<size_t> want_counts(specs.size(), 0);

  // Write first-come operations on three prefixes, deletes mixed in; count what each spec
  // must see so each watcher knows when it is done.
  std::vector<std::pair<bool, std::string>> ops;  // (is_put, key)
  for (int i = 0; i < kOps; ++i) {
    std::string key = "w/" + std::to_string(i % 3) + "/" + std::to_string(i % 10);
    ops.emplace_back(i % 7 != 6, key);
  }
  auto matches = [](const Spec& s, bool is_put, const std::string& key) {
    if (is_put ? s.no_put : s.no_delete) return false;
    if (s.range_end.empty()) return key == s.key;
    return key >= s.key && (s.range_end == std::string(1, '\0') || key < s.range_end);
  };
  std::set<std::string> live;
  std::vector<std::pair<bool, std::string>> effective;  // deletes of absent keys do nothing
  for (auto& [is_put, key] : ops) {
    if (!is_put && !live.count(key)) continue;
    if (is_put)
      live.insert(key);
    else
      live.erase(key);
    effective.emplace_back(is_put, key);
  }
  for (size_t s = 0; s < specs.size(); ++s) {
    for (auto& [is_put, key] : effective)
      want_counts[s] += matches(specs[s], is_put, key);
  }

  std::vector<std::string> watch_failure(specs.size());
  Workers watchers([&] { keeld.kill9(); });  // a blocked watch returns when keeld dies
  for (size_t s = 0; s < specs.size(); ++s) {
    watchers.spawn([&, s] {
      auto wc = keeld.client();
      if (!wc) {
        watch_failure[s] = "cannot connect";
        return;
      }
      client::WatchOptions o;
      o.key = specs[s].key;
      o.range_end = specs[s].range_end;
      o.prev_kv = specs[s].prev_kv;
      o.no_put = specs[s].no_put;
      o.no_delete = specs[s].no_delete;
      o.start_revision = from;
      auto st = wc->watch(o, [&](int64_t, const std::vector<Event>& ev) {
        got[s].insert(got[s].end(), ev.begin(), ev.end());
        return got[s].size() < want_counts[s];
      });
      if (!st) watch_failure[s] = describe(st.error());
    });
  }
  for (auto& [is_put, key] : ops) {
    if (is_put) {
      REQUIRE(c->put(put(key, "v")).ok());
    } else {
      DeleteRangeRequest d;
      d.key = key;
      REQUIRE(c->delete_range(d).ok());
    }
  }
  // A watcher that misses an event would wait for ever: bounded, then keeld is killed.
  CHECK(watchers.join_within(std::chrono::seconds(120)));
  CHECK(watchers.errors().empty());
  for (size_t s = 0; s < specs.size(); ++s) {
    INFO("watcher " << s << " on " << specs[s].key);
    CHECK(watch_failure[s] == "");
  }
  REQUIRE(keeld.pid() > 0);

  // The reference: the whole history from one watcher.
  std::vector<Event> history;
  client::WatchOptions all;
  all.key = "w/";
  all.range_end = prefix_end("w/");
  all.start_revision = from;
  all.prev_kv = true;
  REQUIRE(c->watch(all, [&](int64_t, const std::vector<Event>& ev) {
             history.insert(history.end(), ev.begin(), ev.end());
             return history.size() < effective.size();
           }).ok());
  REQUIRE(history.size() == effective.size());
  for (size_t s = 0; s < specs.size(); ++s) {
    std::vector<Event> expected;
    for (auto e : history) {
      if (!matches(specs[s], e.type == EventType::put, e.kv.key)) continue;
      if (!specs[s].prev_kv) e.prev_kv.reset();
      expected.push_back(e);
    }
    INFO("watcher " << s << " on " << specs[s].key);
    CHECK(got[s] == expected);
  }
}

TEST_CASE("compaction that overtakes a lagging watcher cancels it with the compact revision",
          "[integration][watch][compaction]") {
  TempDir dir;
  // Small batches, so the watcher is still far behind when compaction passes it.
  Keeld keeld(dir.path, "[watch]\nbatch_bytes = 1024\n");
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  auto start = c->status();
  REQUIRE(start.ok());
  // Far more than Cap'n Proto's stream window, so the server must wait for the watcher.
  constexpr int kPuts = 1000;
  const std::string value(8192, 'v');
  for (int i = 0; i < kPuts; ++i)
    REQUIRE(c->put(put("lag", value)).ok());

  std::promise<void> release;
  auto released = release.get_future().share();
  bool released_once = false;
  auto release_watcher = [&] {
    if (!released_once) release.set_value();
    released_once = true;
  };
  std::vector<Event> got;
  Status end = ok_status();
  bool connected = false;
  Workers workers([&] {
    release_watcher();
    keeld.kill9();
  });
  workers.spawn([&] {
    auto wc = keeld.client();
    if (!wc) return;
    connected = true;
    client::WatchOptions o;
    o.key = "lag";
    o.start_revision = start->revision + 1;
    end = wc->watch(o, [&](int64_t, const std::vector<Event>& ev) {
      if (got.empty()) released.wait();  // fall behind
      got.insert(got.end(), ev.begin(), ev.end());
      return got.size() < kPuts;  // ends the test even if no cancel came
    });
  });
  // Wait until the watcher has its first batch in hand (bounded), then compact past it.
  for (int i = 0; i < 1000; ++i) {
    auto s = c->status();
    if (s.ok() && s->watchers == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto now = c->status();
  REQUIRE(now.ok());
  REQUIRE(c->compact(now->revision, true).ok());
  release_watcher();
  CHECK(workers.join_within(std::chrono::seconds(120)));
  CHECK(workers.errors().empty());
  REQUIRE(connected);

  REQUIRE_FALSE(end.ok());
  CHECK(end.error().code == ErrorCode::compacted);
  CHECK(end.error().compact_revision == now->revision);
  // What arrived before the cancel is a gap-free prefix of the history.
  REQUIRE_FALSE(got.empty());
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].kv.mod_revision == start->revision + 1 + static_cast<int64_t>(i));
  }
  CHECK(got.size() < static_cast<size_t>(kPuts));
}
