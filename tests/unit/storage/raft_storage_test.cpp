// RaftStorage (raft::LogStorage on WiredTiger) against raft::MemoryStorage, across reopens,
// kill -9, and under a RawNode.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>

#include "cluster/raft/driver.hpp"
#include "cluster/storage/raft_storage.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

using raft::ConfState;
using raft::Entry;
using raft::EntryType;

Entry ent(uint64_t index, uint64_t term, std::string data = "") {
  if (data.empty()) data = "e" + std::to_string(index) + "t" + std::to_string(term);
  return Entry{index, term, index % 7 == 0 ? EntryType::conf_change : EntryType::normal,
               std::move(data)};
}
std::vector<Entry> ents(uint64_t lo, uint64_t hi, uint64_t term) {
  std::vector<Entry> out;
  for (uint64_t i = lo; i < hi; i++)
    out.push_back(ent(i, term));
  return out;
}

std::vector<Entry> read(const raft::LogStorage& s, uint64_t lo, uint64_t hi,
                        uint64_t max_bytes = UINT64_MAX) {
  std::vector<Entry> out;
  s.entries(lo, hi, max_bytes, &out);
  return out;
}

bool same_entries(const std::vector<Entry>& a, const std::vector<Entry>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i].index != b[i].index || a[i].term != b[i].term || a[i].type != b[i].type ||
        a[i].data != b[i].data) {
      return false;
    }
  }
  return true;
}

// Every observable of the two storages is the same.
void check_same(const raft::MemoryStorage& m, const RaftStorage& r) {
  REQUIRE(r.first_index() == m.first_index());
  REQUIRE(r.last_index() == m.last_index());
  CHECK(r.hard_state() == m.hard_state());
  auto ms = m.snapshot(), rs = r.snapshot();
  REQUIRE(rs != nullptr);
  CHECK(rs->meta.index == ms->meta.index);
  CHECK(rs->meta.term == ms->meta.term);
  CHECK(rs->meta.conf == ms->meta.conf);
  CHECK(rs->data == ms->data);
  const uint64_t first = m.first_index(), last = m.last_index();
  for (uint64_t i = first >= 2 ? first - 2 : 0; i <= last + 2; i++) {
    INFO("term of " << i);
    CHECK(r.term(i) == m.term(i));
  }
  if (last < first) return;
  for (uint64_t max : {uint64_t{0}, uint64_t{40}, uint64_t{200}, UINT64_MAX}) {
    INFO("max_bytes " << max);
    CHECK(same_entries(read(r, first, last + 1, max), read(m, first, last + 1, max)));
    const uint64_t mid = first + (last - first) / 2;
    CHECK(same_entries(read(r, mid, last + 1, max), read(m, mid, last + 1, max)));
    CHECK(same_entries(read(r, first, mid + 1, max), read(m, first, mid + 1, max)));
  }
}

raft::Ready ready(std::vector<Entry> e, std::optional<raft::HardState> hs = std::nullopt,
                  std::shared_ptr<const raft::Snapshot> snap = nullptr) {
  raft::Ready rd;
  rd.entries = std::move(e);
  rd.hard_state = hs;
  rd.snapshot = std::move(snap);
  return rd;
}
void persist_mem(raft::MemoryStorage& m, const raft::Ready& rd) {
  if (rd.snapshot) m.apply_snapshot(rd.snapshot);
  m.append(rd.entries);
  if (rd.hard_state) m.set_hard_state(*rd.hard_state);
}
std::shared_ptr<const raft::Snapshot> snapshot_at(uint64_t index, uint64_t term,
                                                  const ConfState& conf, std::string data) {
  auto s = std::make_shared<raft::Snapshot>();
  s->meta.index = index;
  s->meta.term = term;
  s->meta.conf = conf;
  s->data = std::move(data);
  return s;
}

const ConfState kConf{{1, 2, 3}, {4}};

TEST_CASE("raftlog: same observable state as MemoryStorage, scripted, across reopen", "[raftlog]") {
  test::Store s;
  raft::MemoryStorage m(kConf);
  RaftStorage* r = &s.engine->raft();
  CHECK_FALSE(r->initialized());
  REQUIRE(r->bootstrap(kConf).ok());
  CHECK(r->initialized());
  CHECK(r->bootstrap(kConf).error().code == ErrorCode::invalid_argument);
  check_same(m, *r);
  auto step = [&](auto&& op_mem, auto&& op_raft, bool reopen) {
    op_mem(m);
    op_raft(*r);
    check_same(m, *r);
    if (reopen) {
      s.reopen();
      r = &s.engine->raft();
      check_same(m, *r);
    }
  };
  auto both = [&](auto&& op, bool reopen = true) { step(op, op, reopen); };
  auto persist = [&](const raft::Ready& rd, bool reopen = true) {
    step([&](raft::MemoryStorage& x) { persist_mem(x, rd); },
         [&](RaftStorage& x) { x.persist(rd); }, reopen);
  };

  const uint64_t syncs0 = s.engine->stats().log_syncs;
  persist(ready(ents(1, 11, 1), raft::HardState{1, 1, 0}), false);
  CHECK(s.engine->stats().log_syncs == syncs0 + 1);  // one Ready, one sync
  s.reopen();
  r = &s.engine->raft();
  check_same(m, *r);
  // Truncate-and-append: a conflicting suffix from 7 with a new term, shorter than before.
  persist(ready(ents(7, 9, 2), raft::HardState{2, 0, 5}));
  // And one that ends past the old end.
  persist(ready(ents(5, 14, 3)));
  // Entries already covered: partly below the compaction point after a compaction.
  both([](raft::LogStorage& x) { x.create_snapshot(6, kConf, "state@6", 4); });
  CHECK(r->first_index() == 5);
  persist(ready(ents(2, 16, 3)));
  both([](raft::LogStorage& x) { x.append(ents(16, 20, 4)); });
  both([](raft::LogStorage& x) { x.set_hard_state(raft::HardState{4, 2, 12}); });
  // A snapshot newer than the compaction point, without compaction; then compaction to it.
  both([](raft::LogStorage& x) { x.create_snapshot(12, ConfState{{1, 2}, {}}, "s12", 4); });
  both([](raft::LogStorage& x) { x.create_snapshot(15, ConfState{{1, 2}, {}}, "s15", 15); });
  // Compaction of everything.
  both([](raft::LogStorage& x) { x.create_snapshot(19, kConf, "s19", 19); });
  CHECK(r->first_index() == 20);
  CHECK(r->last_index() == 19);
  persist(ready(ents(20, 25, 5)));
  // A snapshot from the leader (with entries and hard state in the same Ready).
  persist(ready(ents(31, 34, 6), raft::HardState{6, 1, 30},
                snapshot_at(30, 6, ConfState{{1, 2, 3, 5}, {}}, "leader")));
  CHECK(r->first_index() == 31);
  CHECK(r->snapshot()->meta.index == 30);
  // A snapshot behind the log's end replaces it all, too.
  both([](raft::LogStorage& x) { x.apply_snapshot(snapshot_at(32, 6, kConf, "again")); });
  CHECK(r->last_index() == 32);
  persist(ready({}, raft::HardState{7, 0, 32}));
}

TEST_CASE("raftlog: same observable state as MemoryStorage, random operations", "[raftlog]") {
  test::Store s;
  raft::MemoryStorage m(kConf);
  RaftStorage* r = &s.engine->raft();
  REQUIRE(r->bootstrap(kConf).ok());
  std::mt19937_64 rng(42);
  uint64_t term = 1;
  for (int op = 0; op < 300; op++) {
    INFO("op " << op);
    uint64_t dice = rng() % 100;
    if (dice < 50) {  // append, possibly overwriting a suffix, with a Ready's hard state
      const uint64_t last = m.last_index(), first = m.first_index();
      const uint64_t snap_index = m.snapshot()->meta.index;
      const uint64_t lo_min = first > 3 ? first - 3 : 1;
      const uint64_t lo = rng() % 3 == 0 ? lo_min + rng() % (last + 2 - lo_min) : last + 1;
      uint64_t n = 1 + rng() % 20;
      if (lo + n - 1 < snap_index) n = snap_index - lo + 1;  // never cut below the snapshot
      if (rng() % 4 == 0) term++;
      std::vector<Entry> e;
      for (uint64_t i = 0; i < n; i++)
        e.push_back(ent(lo + i, term, std::string(rng() % 60, static_cast<char>('a' + i % 26))));
      raft::Ready rd = ready(std::move(e));
      if (rng() % 2) rd.hard_state = raft::HardState{term, rng() % 4, m.hard_state().commit};
      persist_mem(m, rd);
      r->persist(rd);
    } else if (dice < 70) {
      const uint64_t lo = m.snapshot()->meta.index, hi = m.last_index();
      const uint64_t index = lo + rng() % (hi - lo + 1);
      uint64_t compact = rng() % 2 ? index - rng() % 5 : 0;
      if (compact > index) compact = 0;
      m.create_snapshot(index, kConf, "s" + std::to_string(index), compact);
      r->create_snapshot(index, kConf, "s" + std::to_string(index), compact);
    } else if (dice < 75) {
      auto snap = snapshot_at(m.last_index() + rng() % 10, term, kConf, "x");
      if (snap->meta.index < m.snapshot()->meta.index) continue;
      raft::Ready rd = ready({}, raft::HardState{term, 0, snap->meta.index}, snap);
      persist_mem(m, rd);
      r->persist(rd);
    } else if (dice < 90) {
      raft::HardState hs{term, rng() % 4, m.last_index()};
      m.set_hard_state(hs);
      r->set_hard_state(hs);
    } else {
      s.reopen();
      r = &s.engine->raft();
    }
    check_same(m, *r);
  }
}

TEST_CASE("raftlog: reads that straddle the tail cache and WiredTiger", "[raftlog]") {
  test::Store s;
  raft::MemoryStorage m;
  RaftStorage& r = s.engine->raft();
  for (uint64_t i = 1; i <= 6000; i += 500) {
    auto e = ents(i, i + 500, 1);
    m.append(e);
    r.persist(ready(e));
  }
  CHECK(r.tail_cache_bytes() > 0);
  for (uint64_t lo : {1, 1900, 1905, 1906, 5999, 6000}) {
    INFO("lo " << lo);
    CHECK(same_entries(read(r, lo, 6001), read(m, lo, 6001)));
    CHECK(same_entries(read(r, lo, 6001, 1000), read(m, lo, 6001, 1000)));
  }
  // At least one entry even if it alone is over max_bytes.
  auto big = ents(6001, 6002, 1);
  big[0].data.assign(100000, 'x');
  m.append(big);
  r.append(big);
  CHECK(read(r, 6001, 6002, 10).size() == 1);
  CHECK(read(r, 6000, 6002, 100).size() == 1);
  check_same(m, r);
}

TEST_CASE("raftlog: cluster identity", "[raftlog]") {
  test::Store s;
  CHECK_FALSE(s.engine->raft().identity().has_value());
  REQUIRE(s.engine->raft().set_identity(7, 2).ok());
  REQUIRE(s.engine->raft().set_identity(7, 2).ok());
  CHECK(s.engine->raft().set_identity(8, 2).error().code == ErrorCode::invalid_argument);
  CHECK(s.engine->raft().set_identity(7, 3).error().code == ErrorCode::invalid_argument);
  s.reopen();
  REQUIRE(s.engine->raft().identity().has_value());
  CHECK(*s.engine->raft().identity() == std::make_pair(uint64_t{7}, uint64_t{2}));
  CHECK_FALSE(s.engine->raft().initialized());  // identity is not a raft state
}

TEST_CASE("raftlog: a joining member is initialized by its first write", "[raftlog]") {
  test::Store s;
  s.engine->raft().set_hard_state(raft::HardState{3, 0, 0});
  s.reopen();
  CHECK(s.engine->raft().initialized());
  CHECK(s.engine->raft().snapshot()->meta.conf == ConfState{});
  CHECK_FALSE(s.engine->raft().bootstrap(kConf).ok());
}

// The child persists one Ready at a time (with sync) and acknowledges it over a pipe; it is
// killed with SIGKILL mid-stream. Every acknowledged Ready must be there after reopen.
TEST_CASE("raftlog: acknowledged Readys survive kill -9", "[raftlog][crash]") {
  test::TempDir dir;
  auto data = [](uint64_t i) { return std::string(100 + i % 50, static_cast<char>('a' + i % 26)); };
  const uint64_t acked = test::kill9_after(
      [&](auto ack) {
        auto e = open_engine(test::test_options(dir.path));
        if (!e) ::_exit(2);
        RaftStorage& r = e.value()->raft();
        if (!r.bootstrap(kConf)) ::_exit(3);
        for (uint64_t i = 1;; i++) {
          // Each Ready: entry i plus the hard state committing it.
          raft::Ready rd = ready({Entry{i, 1 + i / 100, EntryType::normal, data(i)}},
                                 raft::HardState{1 + i / 100, 1, i});
          r.persist(rd);
          if (i % 50 == 0) r.create_snapshot(i - 10, kConf, "s", i - 20);  // unsynced compaction
          if (!ack(i)) ::_exit(4);
        }
      },
      300);

  auto e = open_engine(test::test_options(dir.path));
  REQUIRE(e.ok());
  RaftStorage& r = e.value()->raft();
  CHECK(r.initialized());
  CHECK(r.last_index() >= acked);
  CHECK(r.hard_state().commit >= acked);
  // Compaction never went past what was acknowledged minus its lag.
  CHECK(r.first_index() <= acked - 18);  // the child may have compacted once more
  CHECK(r.first_index() >= 1);
  auto all = read(r, r.first_index(), acked + 1);
  REQUIRE(all.size() == acked - r.first_index() + 1);
  for (const Entry& x : all) {
    INFO("index " << x.index);
    CHECK(x.term == 1 + x.index / 100);
    CHECK(x.data == data(x.index));
    CHECK(r.term(x.index) == x.term);
  }
}

// A single-member cluster on RaftStorage: elects itself, commits, and after a reopen of the
// engine restarts from the log and keeps going.
struct Driver : raft::ReadyHandler {
  RaftStorage* storage;
  std::vector<std::string> applied;
  uint64_t applied_index = 0;
  bool persist(const raft::Ready& rd) override {
    storage->persist(rd);
    return true;
  }
  bool send(std::vector<raft::Message>& msgs) override {
    CHECK(msgs.empty());
    return true;
  }
  bool apply(const raft::Ready& rd) override {
    for (const Entry& e : rd.committed_entries) {
      CHECK(e.index == applied_index + 1);
      applied_index = e.index;
      if (e.type == EntryType::normal && !e.data.empty()) applied.push_back(e.data);
    }
    return true;
  }
};

TEST_CASE("raftlog: a single-member RawNode on RaftStorage across a reopen", "[raftlog]") {
  test::Store s;
  REQUIRE(s.engine->raft().bootstrap(ConfState{{1}, {}}).ok());
  Driver d;
  auto start = [&](uint64_t applied) {
    d.storage = &s.engine->raft();
    raft::Config cfg;
    cfg.id = 1;
    cfg.storage = d.storage;
    cfg.seed = 1;
    cfg.applied = applied;
    return std::make_unique<raft::RawNode>(cfg);
  };
  auto node = start(0);
  node->campaign();
  REQUIRE(raft::drive_ready(*node, d));
  REQUIRE(node->role() == raft::Role::leader);
  for (const char* v : {"a", "b", "c"}) {
    REQUIRE(node->propose(v).ok());
    REQUIRE(raft::drive_ready(*node, d));
  }
  CHECK(d.applied == std::vector<std::string>{"a", "b", "c"});
  const uint64_t term = node->term(), last = node->last_index(), applied = d.applied_index;
  CHECK(s.engine->raft().hard_state().commit == last);

  node.reset();
  s.reopen();
  node = start(applied);
  CHECK(node->term() == term);
  CHECK(node->last_index() == last);
  CHECK(node->commit_index() == last);
  node->campaign();
  REQUIRE(raft::drive_ready(*node, d));
  REQUIRE(node->role() == raft::Role::leader);
  CHECK(node->term() > term);
  REQUIRE(node->propose("d").ok());
  REQUIRE(raft::drive_ready(*node, d));
  CHECK(d.applied == std::vector<std::string>{"a", "b", "c", "d"});

  // Compaction under a running node, then a restart from the compacted log.
  s.engine->raft().create_snapshot(d.applied_index, ConfState{{1}, {}}, "", d.applied_index - 1);
  const uint64_t last2 = node->last_index();
  node.reset();
  s.reopen();
  node = start(d.applied_index);
  CHECK(node->last_index() == last2);
  CHECK(node->first_index() == d.applied_index);
  node->campaign();
  REQUIRE(raft::drive_ready(*node, d));
  REQUIRE(node->propose("e").ok());
  REQUIRE(raft::drive_ready(*node, d));
  CHECK(d.applied.back() == "e");
}

}  // namespace
}  // namespace keel::storage
