// primitives::State (leases, locks, fencing) driven through MvccStore::apply with stamped
// entries, as the node drives it: every time below is an entry's cluster_ms stamp.
#define CATCH_CONFIG_ENABLE_PAIR_STRINGMAKER
#include "primitives/state.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <random>

#include "cluster/raft/raft.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::primitives {
namespace {

using namespace keel::storage;
using Rows = std::vector<std::pair<std::string, std::string>>;
using Strs = std::vector<std::string>;
using Ids = std::vector<int64_t>;

template <class T>
T must(Result<T> r) {
  if (!r) FAIL(r.error().message);
  return std::move(r).value();
}

// A store with the primitives extension; the State outlives the engine (member order).
struct PStore {
  test::TempDir dir;
  std::unique_ptr<State> state = std::make_unique<State>();
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Reader> rd;
  uint64_t index = 0;

  PStore() { open(); }
  void open() {
    EngineOptions o = test::test_options(dir.path);
    o.extension = state.get();
    engine = must(open_engine(o));
    rd = engine->store().reader();
    index = engine->store().applied_index();
  }
  void close() {
    rd.reset();
    engine.reset();
  }
  // Same directory, a new State object (it must rebuild itself from the tables).
  void reopen() {
    close();
    state = std::make_unique<State>();
    open();
  }
  MvccStore& store() { return engine->store(); }
  int64_t rev() { return store().current_revision(); }
  uint64_t deadline() { return state->next_deadline_ms(); }
  // One batch of entries, each with its own stamp (MvccStore's ApplyEntry overload).
  std::vector<Result<CommandResult>> run(const std::vector<ApplyEntry>& entries) {
    return store().apply_entries(entries, 0, nullptr);
  }
  Result<CommandResult> at(uint64_t ms, const Command& c) {
    return std::move(run({{++index, ms, &c}}).at(0));
  }
  template <class R>
  R ok(uint64_t ms, const Command& c) {
    auto r = must(at(ms, c));
    REQUIRE(std::holds_alternative<R>(r));
    return std::get<R>(std::move(r));
  }
  ErrorCode fails(uint64_t ms, const Command& c) {
    auto r = at(ms, c);
    REQUIRE_FALSE(r.ok());
    return r.error().code;
  }
  // A time-only entry (the leader's time entry): no command, no result.
  void tick(uint64_t ms) { REQUIRE(run({{++index, ms, nullptr}}).empty()); }
  void grant(uint64_t ms, int64_t id, int64_t ttl) {
    CHECK(ok<LeaseGrantResponse>(ms, LeaseGrantRequest{id, ttl}).id == id);
  }
  int64_t put(uint64_t ms, const std::string& k, const std::string& v, int64_t lease = 0) {
    return ok<PutResponse>(ms, test::put_req(k, v, lease)).revision;
  }
  LockResponse lock(uint64_t ms, const std::string& name, int64_t lease, bool wait = false,
                    int64_t delay = 0) {
    return ok<LockResponse>(ms, LockRequest{name, lease, wait, delay});
  }
  void unlock(uint64_t ms, const std::string& name, int64_t lease) {
    ok<UnlockResponse>(ms, UnlockRequest{name, lease});
  }
  void revoke(uint64_t ms, int64_t id) { ok<LeaseRevokeResponse>(ms, LeaseRevokeRequest{id}); }
  std::optional<LeaseInfo> lease(int64_t id) { return must(State::lease_info(*rd, id, true)); }
  std::optional<Lock> lock_of(const std::string& name) { return must(State::lock_info(*rd, name)); }
  int64_t holder(const std::string& name) { return lock_of(name).value_or(Lock{}).holder; }
  Ids waiters(const std::string& name) {
    Ids out;
    if (auto l = lock_of(name))
      for (const auto& w : l->waiters)
        out.push_back(w.lease);
    return out;
  }
  // Every row of table:ext, read directly (the "dump" test checks State::dump against it;
  // every row key starts with a kind letter, so from "\0" is every row).
  Rows dump() {
    Rows rows;
    must(rd->ext_scan(std::string(1, '\0'), "", [&](std::string_view k, std::string_view v) {
      rows.emplace_back(std::string(k), std::string(v));
      return true;
    }));
    return rows;
  }
  Ids leases() { return must(State::list_leases(*rd)); }
  std::vector<KeyValue> kvs() { return must(rd->range(test::all_keys(), 1 << 30)).kvs; }
  Strs keys() {
    Strs out;
    for (const auto& kv : kvs())
      out.push_back(kv.key);
    return out;
  }
  // Events of revisions >= from as "rev del|put key".
  Strs events(int64_t from) {
    Strs out;
    must(rd->events(from, 0, std::string(1, '\0'), std::string(1, '\0'), false, SIZE_MAX,
                    [&](const Event& e) {
                      out.push_back(std::to_string(e.kv.mod_revision) +
                                    (e.type == EventType::del ? " del " : " put ") + e.kv.key);
                      return true;
                    }));
    return out;
  }
};

TEST_CASE("dump: State::dump returns every row of table:ext, in key order", "[primitives][dump]") {
  PStore s;
  s.grant(0, 1, 1000);
  s.put(0, "k", "v", 1);
  s.lock(0, "m", 1);
  auto rows = State::dump(*s.rd);
  if (!rows) FAIL("State::dump: " + rows.error().message);
  CHECK(*rows == s.dump());
  CHECK(rows->size() == 6);  // t, L, E, K, H, C
}

TEST_CASE("lease: ends exactly at grant stamp + ttl, its keys go in one revision",
          "[primitives][lease]") {
  PStore s;
  s.grant(100, 7, 1000);
  for (const char* k : {"a", "b", "c"})
    s.put(100, k, "1", 7);
  s.put(100, "d", "no lease");
  s.tick(1099);
  auto info = s.lease(7);
  REQUIRE(info.has_value());
  CHECK(info->expiry_ms == 1100);
  CHECK(info->remaining_ms == 1);
  CHECK(info->keys == Strs{"a", "b", "c"});
  CHECK(s.keys() == Strs{"a", "b", "c", "d"});
  const int64_t before = s.rev();
  const std::string r = std::to_string(before + 1);
  SECTION("a time-only entry at the expiry stamp ends it") {
    s.tick(1100);
    CHECK(s.rev() == before + 1);
    CHECK(s.events(before + 1) == Strs{r + " del a", r + " del b", r + " del c"});
  }
  SECTION("a command stamped at the expiry applies after the expiry") {
    CHECK(s.fails(1100, test::put_req("late", "x", 7)) == ErrorCode::lease_not_found);
    CHECK(s.put(1100, "e", "5") == before + 2);
    const std::string r2 = std::to_string(before + 2);
    CHECK(s.events(before + 1) == Strs{r + " del a", r + " del b", r + " del c", r2 + " put e"});
  }
  CHECK_FALSE(s.lease(7).has_value());
  CHECK(s.leases().empty());
  CHECK(s.dump().empty());  // no lease, key or expiry rows left behind
  CHECK(s.keys().front() == "d");
  CHECK(s.fails(1200, LeaseRevokeRequest{7}) == ErrorCode::lease_not_found);
}

TEST_CASE("lease: renew extends from the renewal's stamp and never shortens",
          "[primitives][lease]") {
  PStore s;
  s.grant(0, 1, 1000);
  CHECK(s.ok<LeaseRenewResponse>(500, LeaseRenewRequest{{1, 99}}).ttl_ms == Ids{1000, 0});
  REQUIRE(s.lease(1).has_value());
  CHECK(s.lease(1)->expiry_ms == 1500);
  CHECK_FALSE(s.lease(99).has_value());  // renew does not create leases
  // Stamped before the applied time (time does not go back), or at the same stamp: the
  // expiry stays 1500.
  s.ok<LeaseRenewResponse>(300, LeaseRenewRequest{{1}});
  CHECK(s.lease(1)->expiry_ms == 1500);
  s.ok<LeaseRenewResponse>(500, LeaseRenewRequest{{1}});
  CHECK(s.lease(1)->expiry_ms == 1500);
  s.tick(1000);  // the grant's own expiry: renewed, so still alive
  s.tick(1499);
  REQUIRE(s.lease(1).has_value());
  CHECK(s.lease(1)->remaining_ms == 1);
  CHECK(s.deadline() == 1500);
  s.tick(1500);
  CHECK_FALSE(s.lease(1).has_value());
  CHECK(s.ok<LeaseRenewResponse>(1600, LeaseRenewRequest{{1}}).ttl_ms == Ids{0});
  // A renewal stamped at the expiry comes too late: the lease ends before it applies.
  s.grant(2000, 2, 1000);
  CHECK(s.ok<LeaseRenewResponse>(3000, LeaseRenewRequest{{2}}).ttl_ms == Ids{0});
  CHECK_FALSE(s.lease(2).has_value());
}

TEST_CASE("lease: unknown ids fail (put, revoke, lock) and re-granting an id fails",
          "[primitives][lease]") {
  PStore s;
  const int64_t r0 = s.rev();
  CHECK(s.fails(10, test::put_req("k", "v", 5)) == ErrorCode::lease_not_found);
  CHECK(s.fails(10, LeaseRevokeRequest{5}) == ErrorCode::lease_not_found);
  CHECK(s.fails(10, LockRequest{"l", 5, true, 0}) == ErrorCode::lease_not_found);
  CHECK(s.rev() == r0);
  CHECK(s.kvs().empty());
  CHECK(s.dump().empty());
  s.grant(20, 5, 1000);
  CHECK(s.fails(30, LeaseGrantRequest{5, 9000}) == ErrorCode::lease_exists);
  REQUIRE(s.lease(5).has_value());
  CHECK(s.lease(5)->ttl_ms == 1000);  // not re-granted
  CHECK(s.lease(5)->expiry_ms == 1020);
}

TEST_CASE("lease: a key overwritten without the lease, moved or deleted is detached",
          "[primitives][lease]") {
  PStore s;
  s.grant(0, 1, 10000);
  s.grant(0, 2, 10000);
  for (const char* k : {"over", "gone", "moved", "kept"})
    s.put(0, k, "1", 1);
  s.put(1, "over", "2");  // overwritten without lease
  s.ok<DeleteRangeResponse>(1, DeleteRangeRequest{"gone", "", false});
  s.put(1, "moved", "2", 2);  // now on lease 2
  CHECK(s.lease(1)->keys == Strs{"kept"});
  CHECK(s.lease(2)->keys == Strs{"moved"});
  const int64_t r = s.rev();
  s.revoke(2, 1);
  CHECK(s.rev() == r + 1);
  CHECK(s.events(r + 1) == Strs{std::to_string(r + 1) + " del kept"});
  CHECK(s.keys() == Strs{"moved", "over"});
  s.revoke(3, 2);
  CHECK(s.keys() == Strs{"over"});
  // A lease whose keys were all detached revokes without a revision.
  s.grant(4, 3, 10000);
  s.put(4, "z", "1", 3);
  s.put(4, "z", "2");
  const int64_t r2 = s.rev();
  s.revoke(5, 3);
  CHECK(s.rev() == r2);
  CHECK(s.keys() == Strs{"over", "z"});
  CHECK(s.dump().empty());
}

TEST_CASE("lock: acquire, no-wait refusal, FIFO hand-over with growing tokens",
          "[primitives][lock]") {
  PStore s;
  for (int64_t id = 1; id <= 5; id++)
    s.grant(0, id, 100000);
  auto a = s.lock(1, "m", 1);
  REQUIRE(a.acquired);
  const int64_t t1 = a.token;
  CHECK(t1 > 0);
  CHECK_FALSE(s.lock(2, "m", 2, /*wait=*/false).acquired);
  CHECK(s.waiters("m").empty());  // not queued
  for (int64_t id : {2, 3, 4})
    CHECK_FALSE(s.lock(3, "m", id, true).acquired);
  CHECK_FALSE(s.lock(4, "m", 3, true).acquired);  // asked again: queue unchanged
  CHECK(s.waiters("m") == Ids{2, 3, 4});
  // The holder asking again: the same token.
  auto again = s.lock(5, "m", 1, true);
  CHECK(again.acquired);
  CHECK(again.token == t1);
  CHECK(s.lease(1)->locks == Strs{"m"});
  CHECK(s.lease(3)->locks == Strs{"m"});
  // Neither holder nor waiter.
  CHECK(s.fails(6, UnlockRequest{"m", 5}) == ErrorCode::lock_not_held);
  CHECK(s.fails(6, UnlockRequest{"nothing", 1}) == ErrorCode::lock_not_held);
  // One counter for all locks: a hand-over of "m" beats a token of "n" handed out since.
  const int64_t tn = s.lock(6, "n", 5).token;
  CHECK(tn > t1);
  int64_t last = tn;
  for (int64_t next : {2, 3, 4}) {
    const int64_t prev = s.holder("m");
    s.unlock(7, "m", prev);
    auto l = s.lock_of("m");
    REQUIRE(l.has_value());
    CHECK(l->holder == next);
    CHECK(l->token > last);
    last = l->token;
    CHECK(s.lease(prev)->locks.empty());
    auto mine = s.lock(8, "m", next);
    CHECK(mine.acquired);
    CHECK(mine.token == last);
  }
  s.unlock(9, "m", 4);
  CHECK_FALSE(s.lock_of("m").has_value());
  // Later acquisitions, of either lock, get greater tokens still.
  s.unlock(10, "n", 5);
  const int64_t tn2 = s.lock(10, "n", 5).token;
  CHECK(tn2 > last);
  CHECK(s.lock(10, "m", 1).token > tn2);
}

TEST_CASE("lock: a waiter that unlocks or whose lease ends leaves the queue",
          "[primitives][lock]") {
  PStore s;
  s.grant(0, 1, 100000);
  s.grant(0, 2, 1000);  // expires while waiting
  for (int64_t id : {3, 4, 5})
    s.grant(0, id, 100000);
  s.lock(1, "m", 1);
  for (int64_t id : {2, 3, 4, 5})
    s.lock(1, "m", id, true);
  s.tick(1000);
  CHECK_FALSE(s.lease(2).has_value());
  CHECK(s.waiters("m") == Ids{3, 4, 5});
  s.revoke(1001, 3);
  CHECK(s.waiters("m") == Ids{4, 5});
  s.unlock(1002, "m", 4);
  CHECK(s.waiters("m") == Ids{5});
  CHECK(s.fails(1003, UnlockRequest{"m", 4}) == ErrorCode::lock_not_held);
  CHECK(s.lease(4)->locks.empty());
  s.unlock(1004, "m", 1);
  CHECK(s.holder("m") == 5);
  CHECK(s.waiters("m").empty());
}

TxnRequest fenced_put(std::string lock, int64_t token, std::string key) {
  TxnRequest t;
  t.fences.push_back(Fence{std::move(lock), token});
  t.success.push_back(test::put_req(std::move(key), "v"));
  return t;
}

TEST_CASE("fence: only the current holder's token passes, a failed fence writes nothing",
          "[primitives][lock][fence]") {
  PStore s;
  s.grant(0, 1, 100000);
  s.grant(0, 2, 100000);
  const int64_t t1 = s.lock(1, "f", 1).token;
  CHECK(s.ok<TxnResponse>(2, fenced_put("f", t1, "x")).succeeded);
  CHECK(s.keys() == Strs{"x"});
  s.lock(3, "f", 2, true);
  s.unlock(4, "f", 1);
  const int64_t t2 = s.lock_of("f")->token;
  REQUIRE(t2 > t1);
  const int64_t r = s.rev();
  CHECK(s.fails(5, fenced_put("f", t1, "y")) == ErrorCode::fenced);
  CHECK(s.fails(5, fenced_put("f", t2 + 1, "y")) == ErrorCode::fenced);
  CHECK(s.fails(5, fenced_put("never", 1, "y")) == ErrorCode::fenced);
  CHECK(s.rev() == r);
  CHECK(s.keys() == Strs{"x"});
  CHECK(s.ok<TxnResponse>(6, fenced_put("f", t2, "z")).succeeded);
  // Released with nobody waiting: its last token no longer passes.
  s.unlock(7, "f", 2);
  CHECK(s.fails(8, fenced_put("f", t2, "w")) == ErrorCode::fenced);
  CHECK(s.keys() == Strs{"x", "z"});
}

TEST_CASE("lock-delay: only after the holder's lease expires, not after revoke, unlock, delay 0",
          "[primitives][lock][delay]") {
  PStore s;
  s.grant(0, 1, 1000);  // expires at T = 1000
  s.grant(0, 2, 100000);
  s.grant(0, 3, 100000);
  SECTION("expiry with delay 500: the waiter gets the lock at T+500, not before") {
    const int64_t t1 = s.lock(1, "m", 1, false, 500).token;
    s.lock(1, "m", 2, true);
    s.tick(999);
    CHECK(s.holder("m") == 1);
    s.tick(1000);
    auto l = s.lock_of("m");
    REQUIRE(l.has_value());
    CHECK(l->holder == 0);
    CHECK(l->delay_until_ms == 1500);
    CHECK(s.waiters("m") == Ids{2});
    CHECK(s.deadline() == 1500);
    // Nobody gets it during the delay, and the old token is fenced.
    CHECK_FALSE(s.lock(1250, "m", 3, false).acquired);
    CHECK_FALSE(s.lock(1250, "m", 2, true).acquired);
    CHECK(s.fails(1300, fenced_put("m", t1, "x")) == ErrorCode::fenced);  // held by nobody
    s.tick(1499);
    CHECK(s.holder("m") == 0);
    SECTION("by a time-only entry") {
      s.tick(1500);
    }
    SECTION("before a command stamped T+500") {
      CHECK_FALSE(s.lock(1500, "m", 3, false).acquired);  // 2 got it first
    }
    l = s.lock_of("m");
    REQUIRE(l.has_value());
    CHECK(l->holder == 2);
    CHECK(l->token > t1);
    CHECK(l->delay_until_ms == 0);
    CHECK(l->waiters.empty());
  }
  SECTION("delay with no waiter: free at T+500 for anyone") {
    s.lock(1, "m", 1, false, 500);
    s.tick(1000);
    CHECK_FALSE(s.lock(1499, "m", 3, false).acquired);
    CHECK(s.lock(1500, "m", 3, false).acquired);
  }
  SECTION("revoke or unlock: the waiter holds at once") {
    s.lock(1, "m", 1, false, 500);
    s.lock(1, "m", 2, true);
    if (GENERATE(0, 1) == 0)
      s.revoke(600, 1);
    else
      s.unlock(600, "m", 1);
    CHECK(s.holder("m") == 2);
    CHECK(s.lock_of("m")->delay_until_ms == 0);
  }
  SECTION("delay 0: the waiter holds at the expiry") {
    s.lock(1, "m", 1, false, 0);
    s.lock(1, "m", 2, true, 700);  // the waiter's delay is for its own expiry
    s.tick(1000);
    CHECK(s.holder("m") == 2);
    CHECK(s.lock_of("m")->holder_delay_ms == 700);
  }
}

// ---- determinism across batching ----

std::string describe(const Result<CommandResult>& r) {
  if (!r) return std::string("error ") + error_code_name(r.error().code);
  static const char* const kinds[] = {"put",    "del",         "txn",        "compact",
                                      "grant",  "revoke",      "renew",      "lock",
                                      "unlock", "sem acquire", "sem release"};
  std::string s = kinds[r.value().index()];
  std::visit(
      [&](const auto& v) {
        auto n = [&](int64_t x) { s += " " + std::to_string(x); };
        if constexpr (requires { v.acquired; }) n(v.acquired);
        if constexpr (requires { v.token; }) n(v.token);
        if constexpr (requires { v.holders; }) n(v.holders);
        if constexpr (requires { v.succeeded; }) n(v.succeeded);
        if constexpr (requires { v.deleted; }) n(v.deleted);
        if constexpr (requires { v.id; }) n(v.id), n(v.ttl_ms);
        if constexpr (requires { v.ttl_ms.size(); })
          for (auto t : v.ttl_ms)
            n(t);
        if constexpr (requires { v.revision; }) n(v.revision);
      },
      r.value());
  return s;
}

// A random seeded mix of stamped primitives and KV entries.
struct Workload {
  std::vector<Command> commands;
  std::vector<ApplyEntry> entries;
};

Workload make_workload(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  Workload w;
  std::vector<std::pair<uint64_t, int>> plan;  // (stamp, command index or -1)
  uint64_t now = 1000;
  for (size_t i = 0; i < n; i++) {
    uint64_t stamp = 0;  // kind 0: unstamped, time does not move
    const uint64_t kind = rng() % 10;
    if (kind == 1) {
      stamp = now - 300;  // a late stamp: time does not go back
    } else if (kind != 0) {
      now += rng() % 160;
      stamp = now;
    }
    const auto lease = static_cast<int64_t>(1 + rng() % 6);
    const std::string key = "k" + std::to_string(rng() % 8), key2 = "j" + std::to_string(rng() % 4);
    const std::string name(1, static_cast<char>('a' + rng() % 3));
    const bool wait = rng() % 2 == 0;
    const int64_t delay = std::array<int64_t, 3>{0, 100, 400}[rng() % 3];
    const auto ttl = static_cast<int64_t>(200 + rng() % 1300);
    const auto other = static_cast<int64_t>(rng() % 7);  // 0 = no lease
    const auto token = static_cast<int64_t>(rng() % 14);
    std::optional<Command> c;
    switch (rng() % 13) {
      case 0:
      case 1:
        c = LeaseGrantRequest{lease, ttl};
        break;
      case 2:
        c = LeaseRenewRequest{{lease, other == 0 ? 7 : other}};
        break;
      case 3:
      case 4:
        c = test::put_req(key, "v" + std::to_string(i), other);
        break;
      case 5:
        c = DeleteRangeRequest{key, "", false};
        break;
      case 6:
      case 7:
        c = LockRequest{name, lease, wait, delay};
        break;
      case 8:
        c = UnlockRequest{name, lease};
        break;
      case 9:
        c = LeaseRevokeRequest{lease};
        break;
      case 10:
        break;    // time only
      default: {  // a txn that may be fenced, or fail on its 2nd put after a write
        TxnRequest t;
        if (rng() % 2 == 0) t.fences.push_back(Fence{name, token});
        t.success.push_back(test::put_req(key, "t" + std::to_string(i)));
        t.success.push_back(test::put_req(key2, "u", lease));
        c = std::move(t);
      }
    }
    plan.emplace_back(stamp, c ? static_cast<int>(w.commands.size()) : -1);
    if (c) w.commands.push_back(std::move(*c));
  }
  uint64_t index = 0;  // pointers into commands once it no longer grows
  for (const auto& [stamp, idx] : plan)
    w.entries.push_back(
        ApplyEntry{++index, stamp, idx < 0 ? nullptr : &w.commands[static_cast<size_t>(idx)]});
  return w;
}

struct Observed {
  Rows rows;
  int64_t revision = 0;
  std::vector<KeyValue> kvs;
  Strs results;
  uint64_t deadline = 0, cluster_ms = 0;
};

Observed observe(PStore& s, const Strs& results) {
  return Observed{s.dump(), s.rev(),      s.kvs(),
                  results,  s.deadline(), s.store().applied_cluster_ms()};
}

TEST_CASE("determinism: the same stamped entries batched differently give the same state",
          "[primitives][determinism]") {
  for (uint64_t seed : {1ULL, 42ULL, 20240611ULL}) {
    INFO("seed " << seed);
    const Workload w = make_workload(seed, 200);
    const std::vector<size_t> checkpoints{50, 100, 150, 200};
    std::vector<Observed> one, batched;
    Strs results;
    PStore a;  // one entry per apply call
    for (size_t i = 0; i < w.entries.size(); i++) {
      for (auto& r : a.run({w.entries[i]}))
        results.push_back(describe(r));
      if (std::find(checkpoints.begin(), checkpoints.end(), i + 1) != checkpoints.end())
        one.push_back(observe(a, results));
    }
    PStore b;  // random batch sizes, cut at the checkpoints
    std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
    results.clear();
    size_t i = 0;
    for (size_t cp : checkpoints) {
      while (i < cp) {
        const size_t n = std::min<size_t>(cp - i, 1 + rng() % 25);
        const auto from = w.entries.begin() + static_cast<std::ptrdiff_t>(i);
        for (auto& r : b.run({from, from + static_cast<std::ptrdiff_t>(n)}))
          results.push_back(describe(r));
        i += n;
      }
      batched.push_back(observe(b, results));
    }
    REQUIRE(one.size() == batched.size());
    for (size_t k = 0; k < one.size(); k++) {
      INFO("checkpoint after entry " << checkpoints[k]);
      CHECK(one[k].rows == batched[k].rows);
      CHECK(one[k].revision == batched[k].revision);
      CHECK(one[k].kvs == batched[k].kvs);
      CHECK(one[k].results == batched[k].results);
      CHECK(one[k].deadline == batched[k].deadline);
      CHECK(one[k].cluster_ms == batched[k].cluster_ms);
    }
    // The workload did exercise the primitives (the comparison is not vacuous).
    size_t granted = 0, acquired = 0, failed = 0;
    for (const auto& r : one.back().results) {
      granted += r.rfind("grant", 0) == 0;
      acquired += r.rfind("lock 1", 0) == 0;
      failed += r.rfind("error", 0) == 0;
    }
    CHECK(granted >= 5);
    CHECK(acquired >= 3);
    CHECK(failed >= 3);
    CHECK(one.back().revision > 20);
  }
}

// ---- snapshots, deadlines, reopen ----

TEST_CASE("snapshot: the primitives table moves with the snapshot and keeps its deadlines",
          "[primitives][snapshot]") {
  PStore a;
  a.grant(1000, 1, 5000);  // ends at 6000
  a.grant(1000, 2, 8000);  // ends at 9000
  a.put(1000, "s1", "1", 1);
  a.put(1000, "s2", "2", 2);
  const int64_t t1 = a.lock(1000, "L", 1, false, 700).token;
  a.lock(1000, "L", 2, true);
  a.tick(2000);
  const raft::ConfState conf{{1, 2, 3}, {}};  // a snapshot needs a configuration
  a.store().apply({}, ++a.index, &conf);

  PStore b;
  b.grant(10, 9, 100);  // state the install must replace
  auto src = must(a.store().snapshot_source());
  auto sink = must(b.store().snapshot_sink());
  std::string chunk;
  while (must(src->next(256, &chunk)))
    REQUIRE(sink->add(chunk).ok());
  const SnapshotInfo info = must(sink->finish());
  raft::Ready rd;  // as in tests/unit/storage/snapshot_test.cpp
  auto snap = std::make_shared<raft::Snapshot>();
  snap->meta.index = info.applied_index;
  snap->meta.term = 2;
  snap->meta.conf = info.conf;
  rd.snapshot = snap;
  rd.hard_state = raft::HardState{2, 0, info.applied_index};
  REQUIRE(b.engine->install_snapshot(*sink, rd).ok());
  sink.reset();
  src.reset();
  b.index = a.index;

  CHECK(b.dump() == a.dump());
  CHECK_FALSE(b.lease(9).has_value());
  REQUIRE(b.lease(1).has_value());
  CHECK(b.lease(1)->expiry_ms == 6000);
  CHECK(b.lease(1)->keys == Strs{"s1"});
  CHECK(b.deadline() == a.deadline());
  CHECK(b.deadline() == 6000);
  CHECK(b.store().applied_cluster_ms() == 2000);
  CHECK(b.kvs() == a.kvs());
  for (uint64_t t : {5999, 6000, 6699, 6700, 9000}) {
    INFO("tick " << t);
    a.tick(t);
    b.tick(t);
    CHECK(b.dump() == a.dump());
    CHECK(b.kvs() == a.kvs());
    CHECK(b.deadline() == a.deadline());
    CHECK(b.lease(1).has_value() == (t < 6000));
    CHECK(b.holder("L") == (t < 6000 ? 1 : t < 6700 ? 0 : t < 9000 ? 2 : 0));
  }
  CHECK(b.keys().empty());
  b.grant(9100, 3, 1000);
  CHECK(b.lock(9100, "L", 3).token > t1);
}

TEST_CASE("deadline: next_deadline_ms is the earliest expiry or lock-delay end",
          "[primitives][deadline]") {
  PStore s;
  CHECK(s.deadline() == UINT64_MAX);
  CHECK(s.store().next_deadline_ms() == UINT64_MAX);
  s.grant(100, 1, 1000);
  CHECK(s.deadline() == 1100);
  s.grant(200, 2, 500);
  CHECK(s.deadline() == 700);
  CHECK(s.store().next_deadline_ms() == 700);
  s.revoke(300, 2);
  CHECK(s.deadline() == 1100);
  s.ok<LeaseRenewResponse>(400, LeaseRenewRequest{{1}});
  CHECK(s.deadline() == 1400);
  SECTION("a lock-delay alone") {
    s.lock(500, "x", 1, false, 300);
    s.tick(1400);
    CHECK(s.leases().empty());
    CHECK(s.deadline() == 1700);
    s.tick(1700);
    CHECK(s.deadline() == UINT64_MAX);
    CHECK(s.dump().size() == 1);  // only the token counter
  }
  SECTION("a batch re-run without a failing command keeps the others' deadline") {
    Command g = LeaseGrantRequest{3, 100};
    TxnRequest t;
    t.success.push_back(test::put_req("a", "1"));
    t.success.push_back(test::put_req("b", "2", 42));  // fails after the first put wrote
    Command bad = t;
    s.index += 2;
    auto r = s.run({{s.index - 1, 500, &g}, {s.index, 500, &bad}});
    REQUIRE(r.size() == 2);
    CHECK(r[0].ok());
    REQUIRE_FALSE(r[1].ok());
    CHECK(r[1].error().code == ErrorCode::lease_not_found);
    CHECK(s.deadline() == 600);
    CHECK(s.keys().empty());
  }
}

TEST_CASE("reopen: a new State rebuilds its deadline, rows survive", "[primitives][reopen]") {
  PStore s;
  s.grant(0, 1, 1000);
  s.grant(0, 2, 3000);
  s.grant(0, 3, 500);
  s.put(0, "r1", "1", 1);
  s.lock(0, "y", 3, false, 1000);
  s.lock(0, "y", 2, true);
  s.tick(500);  // lease 3 expires: "y" is in lock-delay until 1500
  const Rows rows = s.dump();
  REQUIRE(s.deadline() == 1000);
  s.reopen();
  CHECK(s.dump() == rows);
  CHECK(s.deadline() == 1000);
  CHECK(s.store().applied_cluster_ms() == 500);
  s.tick(1000);
  CHECK(s.keys().empty());
  const Rows rows2 = s.dump();
  REQUIRE(s.deadline() == 1500);
  s.reopen();
  CHECK(s.dump() == rows2);
  CHECK(s.deadline() == 1500);  // the lock-delay row, before lease 2's 3000
  s.tick(1499);
  CHECK(s.holder("y") == 0);
  s.tick(1500);
  CHECK(s.holder("y") == 2);
  CHECK(s.deadline() == 3000);
}

// ---- semaphores ----

SemAcquireRequest sem_req(const std::string& id, int64_t lease, int64_t max = 2, bool wait = true) {
  return SemAcquireRequest{"reboot", max, lease, id, "meta-" + id, wait};
}
Strs holder_ids(PStore& s) {
  Strs out;
  if (auto sem = must(State::semaphore_info(*s.rd, "reboot")))
    for (const auto& h : sem->holders)
      out.push_back(h.holder_id);
  return out;
}
Strs waiter_ids(PStore& s) {
  Strs out;
  if (auto sem = must(State::semaphore_info(*s.rd, "reboot")))
    for (const auto& h : sem->waiters)
      out.push_back(h.holder_id);
  return out;
}

TEST_CASE("semaphore: max slots, FIFO waiters, a mismatched max is refused",
          "[primitives][semaphore]") {
  PStore s;
  for (int64_t l = 1; l <= 4; l++)
    s.grant(0, l, 10000);
  CHECK(s.ok<SemAcquireResponse>(1, sem_req("a", 1)).acquired);
  CHECK(s.ok<SemAcquireResponse>(2, sem_req("b", 2)).acquired);
  CHECK_FALSE(s.ok<SemAcquireResponse>(3, sem_req("c", 3)).acquired);  // queued
  CHECK_FALSE(s.ok<SemAcquireResponse>(4, sem_req("d", 4)).acquired);
  CHECK_FALSE(s.ok<SemAcquireResponse>(5, sem_req("x", 4, 2, false)).acquired);  // tryAcquire
  CHECK(s.fails(6, sem_req("e", 4, 3)) == ErrorCode::semaphore_max_mismatch);
  CHECK(holder_ids(s) == Strs{"a", "b"});
  CHECK(waiter_ids(s) == Strs{"c", "d"});
  s.ok<SemReleaseResponse>(7, SemReleaseRequest{"reboot", "b"});
  CHECK(holder_ids(s) == Strs{"a", "c"});  // the first waiter, not d
  CHECK(s.fails(8, SemReleaseRequest{"reboot", "nobody"}) == ErrorCode::lock_not_held);
}

TEST_CASE("semaphore: a slot ends with its lease and goes to the next waiter",
          "[primitives][semaphore]") {
  PStore s;
  s.grant(0, 1, 1000);  // expires at 1000
  s.grant(0, 2, 60000);
  s.grant(0, 3, 60000);
  CHECK(s.ok<SemAcquireResponse>(1, sem_req("a", 1, 1)).acquired);
  CHECK_FALSE(s.ok<SemAcquireResponse>(2, sem_req("b", 2, 1)).acquired);
  s.tick(999);
  CHECK(holder_ids(s) == Strs{"a"});
  s.tick(1000);  // a's lease expires: its slot frees itself
  CHECK(holder_ids(s) == Strs{"b"});
  s.revoke(1001, 2);  // and a revoke frees it too; nothing is left
  CHECK(holder_ids(s).empty());
  CHECK_FALSE(must(State::semaphore_info(*s.rd, "reboot")).has_value());
  // An emptied semaphore forgets its max: the next acquirer sets it.
  CHECK(s.ok<SemAcquireResponse>(1002, sem_req("c", 3, 5)).acquired);
}

TEST_CASE("semaphore: the same holder id asking again gets its own slot, on its new lease",
          "[primitives][semaphore]") {
  PStore s;
  s.grant(0, 1, 60000);
  s.grant(0, 2, 60000);
  s.grant(0, 3, 60000);
  CHECK(s.ok<SemAcquireResponse>(1, sem_req("host1", 1, 1)).acquired);
  CHECK_FALSE(s.ok<SemAcquireResponse>(2, sem_req("host2", 2, 1)).acquired);
  // host1 came back (after a reboot, say) with a new lease: same slot, not a second one.
  auto again = s.ok<SemAcquireResponse>(3, sem_req("host1", 3, 1));
  CHECK(again.acquired);
  CHECK(again.holders == 1);
  // The old lease no longer holds it: a release through it (an old handle) and revoking it
  // both leave host1's slot alone.
  CHECK(s.fails(4, SemReleaseRequest{"reboot", "host1", 1}) == ErrorCode::lock_not_held);
  s.revoke(4, 1);
  CHECK(holder_ids(s) == Strs{"host1"});
  CHECK(waiter_ids(s) == Strs{"host2"});
  s.revoke(5, 3);
  CHECK(holder_ids(s) == Strs{"host2"});
}

// The invariants the primitives promise, checked after every entry of a random workload
// (one entry per apply, as a follower applies a log). The simulator of the Raft core proves
// every replica applies the same committed entries; this proves what those entries do.
TEST_CASE(
    "invariants: after every entry, one token per holder, ever increasing, slots <= max, "
    "a lease ends exactly at its last acknowledged renewal + ttl",
    "[primitives][invariants]") {
  for (uint64_t seed : {11u, 12u, 13u, 14u}) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    PStore s;
    std::map<int64_t, uint64_t> expiry;                         // lease -> when it must end (model)
    std::map<std::string, std::pair<int64_t, int64_t>> holder;  // lock -> (lease, token)
    int64_t max_token = 0;
    uint64_t now = 1000;
    for (int step = 0; step < 600; ++step) {
      INFO("step " << step);
      now += rng() % 120;
      const auto lease = static_cast<int64_t>(1 + rng() % 6);
      const std::string name(1, static_cast<char>('a' + rng() % 2));
      std::optional<Command> c;
      switch (rng() % 10) {
        case 0:
          c = LeaseGrantRequest{lease, static_cast<int64_t>(200 + rng() % 800)};
          break;
        case 1:
        case 2:
          c = LeaseRenewRequest{{lease}};
          break;
        case 3:
          c = LeaseRevokeRequest{lease};
          break;
        case 4:
        case 5:
          c = LockRequest{name, lease, rng() % 2 == 0, static_cast<int64_t>(rng() % 2 * 150)};
          break;
        case 6:
          c = UnlockRequest{name, lease};
          break;
        case 7:
        case 8:
          c = SemAcquireRequest{"s", 2, lease, "h" + std::to_string(rng() % 4), "", true};
          break;
        default:
          c = SemReleaseRequest{"s", "h" + std::to_string(rng() % 4)};
      }
      auto r = s.at(now, *c);
      const uint64_t t = s.store().applied_cluster_ms();
      if (r.ok()) {
        if (auto* g = std::get_if<LeaseGrantRequest>(&*c)) expiry[g->id] = t + g->ttl_ms;
        if (auto* n = std::get_if<LeaseRenewResponse>(&r.value()); n && n->ttl_ms.at(0) > 0) {
          auto& e = expiry.at(lease);
          e = std::max(e, t + static_cast<uint64_t>(n->ttl_ms[0]));
        }
        if (std::holds_alternative<LeaseRevokeRequest>(*c)) expiry.erase(lease);
      }
      // Leases: alive exactly while the cluster time is before the model's expiry.
      for (auto it = expiry.begin(); it != expiry.end();) {
        const bool alive = s.lease(it->first).has_value();
        if (t < it->second) {
          CHECK(alive);  // never early
        } else {
          CHECK_FALSE(alive);  // never late: expired at the entry whose stamp reached it
        }
        it = alive ? std::next(it) : expiry.erase(it);
      }
      for (const auto& id : s.leases())
        CHECK(expiry.count(id) == 1);  // nothing alive that the model ended
      // Locks: a new holder always has a token above every token handed out before.
      for (const std::string n : {"a", "b"}) {
        auto l = s.lock_of(n);
        if (!l || l->holder == 0) {
          holder.erase(n);
          continue;
        }
        CHECK(expiry.count(l->holder) == 1);  // held by a live lease only
        auto [it, fresh] = holder.try_emplace(n, l->holder, l->token);
        if (fresh || it->second != std::make_pair(l->holder, l->token)) {
          CHECK(l->token > max_token);
          it->second = {l->holder, l->token};
        }
        max_token = std::max(max_token, l->token);
      }
      // Semaphore: never more holders than max; every holder's lease alive.
      if (auto sem = must(State::semaphore_info(*s.rd, "s"))) {
        CHECK(static_cast<int64_t>(sem->holders.size()) <= sem->max);
        for (const auto& h : sem->holders)
          CHECK(expiry.count(h.lease) == 1);
        if (static_cast<int64_t>(sem->holders.size()) < sem->max)
          CHECK(sem->waiters.empty());  // a free slot is never left while someone waits
      }
    }
    CHECK(max_token > 4);  // the workload did hand locks around
  }
}

}  // namespace
}  // namespace keel::primitives
