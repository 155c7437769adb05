// Only the Raft log is journaled: the state comes back from the last checkpoint after a
// crash, and is re-derived from the log above its applied index.
#include <wiredtiger.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "cluster/raft/raft.hpp"
#include "cluster/storage/raft_storage.hpp"
#include "cluster/storage/wt_internal.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

const raft::ConfState kConf{{1}, {}};

// Checkpoints only when asked (Engine::checkpoint, install, close).
EngineOptions manual_checkpoints(const std::string& dir) {
  EngineOptions o = test::test_options(dir);
  o.checkpoint_interval_ms = 0;
  o.checkpoint_log_mb = 0;
  return o;
}

// Entry i of the test log: a put of k<i % 37> = v<i>.
Command command_at(uint64_t i) {
  return test::put_req("k" + std::to_string(i % 37), "v" + std::to_string(i));
}

// Appends entry i to the log (synced, committed) and applies it, as the node does.
void append_and_apply(Engine& e, uint64_t i) {
  raft::Ready rd;
  raft::Entry entry;
  entry.index = i;
  entry.term = 1;
  entry.data = encode_command(command_at(i));
  rd.entries.push_back(entry);
  rd.hard_state = raft::HardState{1, 1, i};
  e.raft().persist(rd);
  Command c = command_at(i);
  auto r = e.store().apply({{i, &c}}, i, i == 1 ? &kConf : nullptr);
  REQUIRE(r.size() == 1);
  REQUIRE(r[0].ok());
}

// Re-applies the log entries above the store's applied index, as the node does after a
// restart (the Raft core hands them over as committed entries).
void reapply_log(Engine& e) {
  RaftStorage& log = e.raft();
  const uint64_t commit = log.hard_state().commit;
  for (uint64_t i = e.store().applied_index() + 1; i <= commit; i++) {
    std::vector<raft::Entry> one;
    log.entries(i, i + 1, UINT64_MAX, &one);
    REQUIRE(one.size() == 1);
    auto c = decode_command(one[0].data);
    REQUIRE(c.ok());
    auto r = e.store().apply({{i, &*c}}, i, nullptr);
    REQUIRE(r.size() == 1);
    REQUIRE(r[0].ok());
  }
}

// Every live key with its numbers, and every key at every revision.
std::map<std::string, std::string> observe(MvccStore& store) {
  std::map<std::string, std::string> o;
  auto rd = store.reader();
  for (int64_t rev = 1; rev <= store.current_revision(); rev++) {
    auto r = rd->range(test::all_keys(rev), 1 << 30);
    REQUIRE(r.ok());
    for (const auto& kv : r->kvs) {
      o["@" + std::to_string(rev) + " " + kv.key] =
          kv.value + " c" + std::to_string(kv.create_revision) + " m" +
          std::to_string(kv.mod_revision) + " v" + std::to_string(kv.version);
    }
  }
  o["revision"] = std::to_string(store.current_revision());
  return o;
}

TEST_CASE(
    "checkpoint: after kill -9 the state is the last checkpoint's and re-applying the "
    "log from its applied index gives the same state and revisions",
    "[checkpoint][crash]") {
  constexpr uint64_t kCheckpointAt = 300, kLast = 600;
  test::TempDir dir;
  // The child appends and applies 1..600, checkpointing after 300, then waits to be killed.
  test::kill9_after(
      [&](auto ack) {
        auto e = open_engine(manual_checkpoints(dir.path));
        if (!e) ::_exit(2);
        if (!(*e)->raft().bootstrap(kConf)) ::_exit(3);
        for (uint64_t i = 1; i <= kLast; i++) {
          append_and_apply(**e, i);
          if (i == kCheckpointAt && !(*e)->checkpoint()) ::_exit(4);
        }
        ack(kLast);
        for (;;)
          ::pause();
      },
      1);

  auto e = open_engine(manual_checkpoints(dir.path));
  REQUIRE(e.ok());
  Engine& engine = **e;
  // The state tables are back at the checkpoint; the log (journaled, synced) is whole.
  CHECK(engine.store().applied_index() == kCheckpointAt);
  CHECK(engine.store().current_revision() == static_cast<int64_t>(kCheckpointAt) + 1);
  CHECK(engine.store().applied_conf() == kConf);
  CHECK(engine.durable_applied().applied_index == kCheckpointAt);
  CHECK(engine.durable_applied().conf == kConf);
  CHECK(engine.raft().last_index() == kLast);
  CHECK(engine.raft().hard_state().commit == kLast);
  reapply_log(engine);
  CHECK(engine.store().applied_index() == kLast);

  // The same entries applied once, without a crash: identical, revision by revision.
  test::TempDir ref_dir;
  auto ref = open_engine(manual_checkpoints(ref_dir.path));
  REQUIRE(ref.ok());
  REQUIRE((*ref)->raft().bootstrap(kConf).ok());
  for (uint64_t i = 1; i <= kLast; i++)
    append_and_apply(**ref, i);
  CHECK(observe(engine.store()) == observe((*ref)->store()));
  CHECK(engine.store().current_revision() == static_cast<int64_t>(kLast) + 1);
}

TEST_CASE("checkpoint: a clean close is a checkpoint: reopening re-applies nothing",
          "[checkpoint]") {
  test::TempDir dir;
  {
    auto e = open_engine(manual_checkpoints(dir.path));
    REQUIRE(e.ok());
    REQUIRE((*e)->raft().bootstrap(kConf).ok());
    for (uint64_t i = 1; i <= 50; i++)
      append_and_apply(**e, i);
    CHECK((*e)->durable_applied().applied_index == 0);
  }
  auto e = open_engine(manual_checkpoints(dir.path));
  REQUIRE(e.ok());
  CHECK((*e)->store().applied_index() == 50);
  CHECK((*e)->durable_applied().applied_index == 50);
}

TEST_CASE(
    "checkpoint: the engine's thread checkpoints by time and on request, and "
    "durable_applied follows",
    "[checkpoint]") {
  test::TempDir dir;
  EngineOptions o = test::test_options(dir.path);
  o.checkpoint_interval_ms = 100;
  o.checkpoint_log_mb = 0;
  auto e = open_engine(o);
  REQUIRE(e.ok());
  Engine& engine = **e;
  REQUIRE(engine.raft().bootstrap(kConf).ok());
  for (uint64_t i = 1; i <= 20; i++)
    append_and_apply(engine, i);
  auto eventually = [](auto pred) {
    for (int k = 0; k < 500 && !pred(); k++)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return pred();
  };
  CHECK(eventually([&] { return engine.durable_applied().applied_index == 20; }));
  CHECK(engine.durable_applied().conf == kConf);
  CHECK(engine.stats().checkpoints >= 1);

  test::TempDir dir2;
  auto m = open_engine(manual_checkpoints(dir2.path));
  REQUIRE(m.ok());
  REQUIRE((*m)->raft().bootstrap(kConf).ok());
  for (uint64_t i = 1; i <= 5; i++)
    append_and_apply(**m, i);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK((*m)->durable_applied().applied_index == 0);  // no trigger: no checkpoint
  (*m)->request_checkpoint();
  CHECK(eventually([&] { return (*m)->durable_applied().applied_index == 5; }));
}

// The journal holds only the Raft log: every state table is created with logging off.
TEST_CASE("checkpoint: only raft_entries and meta are journaled", "[checkpoint]") {
  test::TempDir dir;
  {
    auto e = open_engine(manual_checkpoints(dir.path));
    REQUIRE(e.ok());
    REQUIRE((*e)->raft().bootstrap(kConf).ok());
    append_and_apply(**e, 1);
    // A snapshot sink's tables too.
    auto sink = (*e)->store().snapshot_sink();
    REQUIRE(sink.ok());
  }
  WT_CONNECTION* conn = nullptr;
  REQUIRE(wiredtiger_open(dir.path.c_str(), nullptr, "log=(enabled=true)", &conn) == 0);
  WT_SESSION* s = nullptr;
  REQUIRE(conn->open_session(conn, nullptr, nullptr, &s) == 0);
  WT_CURSOR* c = nullptr;
  REQUIRE(s->open_cursor(s, "metadata:", nullptr, nullptr, &c) == 0);
  std::map<std::string, bool> logged;  // file -> journaled
  while (c->next(c) == 0) {
    const char *key = nullptr, *value = nullptr;
    REQUIRE(c->get_key(c, &key) == 0);
    REQUIRE(c->get_value(c, &value) == 0);
    std::string k(key), v(value);
    if (k.rfind("file:", 0) != 0 || k.rfind("file:WiredTiger", 0) == 0) continue;
    logged[k] = v.find("log=(enabled=false)") == std::string::npos;
  }
  c->close(c);
  conn->close(conn, nullptr);
  CHECK(logged.at("file:raft_entries.wt"));
  CHECK(logged.at("file:meta.wt"));
  size_t state_files = 0;
  for (const auto& [file, journaled] : logged) {
    if (file == "file:raft_entries.wt" || file == "file:meta.wt" || file == "file:raftlog.wt")
      continue;
    INFO(file);
    CHECK_FALSE(journaled);
    state_files++;
  }
  CHECK(state_files == 5);  // statemeta, current, index, history, ext (the sink's went)
}

TEST_CASE(
    "checkpoint: a data dir of the older format (every table journaled) is refused "
    "with a message that says what to do",
    "[checkpoint]") {
  test::TempDir dir;
  {
    // Format 1: the state row in table:meta, no format row.
    WT_CONNECTION* conn = nullptr;
    REQUIRE(wiredtiger_open(dir.path.c_str(), nullptr, "create,log=(enabled=true)", &conn) == 0);
    WT_SESSION* s = nullptr;
    REQUIRE(conn->open_session(conn, nullptr, nullptr, &s) == 0);
    REQUIRE(s->create(s, "table:meta", "key_format=u,value_format=u") == 0);
    WT_CURSOR* c = nullptr;
    REQUIRE(s->open_cursor(s, "table:meta", nullptr, nullptr, &c) == 0);
    wt::State st;
    st.applied_index = 7;
    REQUIRE(wt::put_row(c, "state", wt::encode_state(st)) == 0);
    c->close(c);
    conn->close(conn, nullptr);
  }
  auto e = open_engine(test::test_options(dir.path));
  REQUIRE_FALSE(e.ok());
  CHECK_THAT(e.error().message, Catch::Contains("older keeld") &&
                                    Catch::Contains("storage format 1") &&
                                    Catch::Contains("empty data dir"));
}

// A crash after an install's checkpoint and before the log's snapshot record leaves the
// state ahead of the log; open completes the install from the installed row.
TEST_CASE(
    "checkpoint: kill -9 between a snapshot install's checkpoint and its log commit, then "
    "the reopened log takes the snapshot",
    "[checkpoint][snapshot][crash]") {
  test::TempDir dir;
  test::kill9_after(
      [&](auto ack) {
        // The leader's state: 40 applied entries.
        test::TempDir src_dir;
        auto a = open_engine(manual_checkpoints(src_dir.path));
        if (!a || !(*a)->raft().bootstrap(kConf)) ::_exit(2);
        for (uint64_t i = 1; i <= 40; i++)
          append_and_apply(**a, i);
        // This member: 5 entries, then a snapshot of the leader's state.
        auto b = open_engine(manual_checkpoints(dir.path));
        if (!b || !(*b)->raft().bootstrap(kConf)) ::_exit(3);
        for (uint64_t i = 1; i <= 5; i++)
          append_and_apply(**b, i);
        auto src = (*a)->store().snapshot_source();
        auto sink = (*b)->store().snapshot_sink();
        if (!src || !sink) ::_exit(4);
        std::string chunk;
        for (;;) {
          auto more = (*src)->next(4096, &chunk);
          if (!more) ::_exit(5);
          if (!*more) break;
          if (!(*sink)->add(chunk)) ::_exit(6);
        }
        if (!(*sink)->finish()) ::_exit(7);
        raft::Snapshot snap;
        snap.meta.index = 40;
        snap.meta.term = 3;
        snap.meta.conf = kConf;
        (void)(*b)->store().install(**sink, wt::encode_raft_snapshot(snap), [&] {
          if (!(*b)->checkpoint()) ::_exit(8);
          ack(1);  // the new state is durable; the log's record never comes
          for (;;)
            ::pause();
        });
        ::_exit(9);
      },
      1);

  auto e = open_engine(manual_checkpoints(dir.path));
  REQUIRE(e.ok());
  Engine& engine = **e;
  CHECK(engine.store().applied_index() == 40);
  CHECK(engine.store().current_revision() == 41);
  CHECK(engine.raft().snapshot()->meta.index == 40);
  CHECK(engine.raft().snapshot()->meta.term == 3);
  CHECK(engine.raft().snapshot()->meta.conf == kConf);
  CHECK(engine.raft().first_index() == 41);
  CHECK(engine.raft().hard_state().commit == 40);
  CHECK(engine.raft().hard_state().term == 1);  // term and vote are the member's own
  // Reopening again changes nothing.
  e->reset();
  auto again = open_engine(manual_checkpoints(dir.path));
  REQUIRE(again.ok());
  CHECK((*again)->raft().snapshot()->meta.index == 40);
  CHECK((*again)->store().applied_index() == 40);
}

TEST_CASE("checkpoint: the Raft log's table shrinks back after its prefix is compacted",
          "[checkpoint][raftlog]") {
  test::TempDir dir;
  EngineOptions o = test::test_options(dir.path);
  o.checkpoint_interval_ms = 100;
  o.raft_log_reclaim_slack_mb = 1;
  auto e = open_engine(o);
  REQUIRE(e.ok());
  Engine& engine = **e;
  REQUIRE(engine.raft().bootstrap(kConf).ok());
  // 20 MB of log in batches of 100 entries.
  constexpr uint64_t kEntries = 20000;
  for (uint64_t first = 1; first <= kEntries; first += 100) {
    raft::Ready rd;
    for (uint64_t i = first; i < first + 100; i++) {
      raft::Entry entry;
      entry.index = i;
      entry.term = 1;
      entry.data = std::string(1000, static_cast<char>('a' + i % 26));
      rd.entries.push_back(std::move(entry));
    }
    rd.hard_state = raft::HardState{1, 1, first + 99};
    engine.raft().persist(rd);
  }
  REQUIRE(engine.checkpoint().ok());
  const std::string file = dir.path + "/raft_entries.wt";
  const auto full = std::filesystem::file_size(file);
  CHECK(full > 20'000'000);
  engine.raft().create_snapshot(kEntries - 10, kConf, "", kEntries - 10);
  auto eventually = [](auto pred) {
    for (int k = 0; k < 1000 && !pred(); k++)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return pred();
  };
  CHECK(eventually([&] { return std::filesystem::file_size(file) < full / 4; }));
  const auto after = std::filesystem::file_size(file);
  INFO("compactions: " << engine.stats().raft_log_compactions);
  INFO("raft_entries.wt: " << full << " bytes, then " << after);
  CHECK(after < full / 4);
  // The entries kept are intact.
  std::vector<raft::Entry> tail;
  engine.raft().entries(kEntries - 9, kEntries + 1, UINT64_MAX, &tail);
  REQUIRE(tail.size() == 10);
  CHECK(tail.back().data == std::string(1000, static_cast<char>('a' + kEntries % 26)));
}

// Each value is stored once: in its history row; the current row points at it.
TEST_CASE(
    "format: a value is stored once, in history, the current row holds none and reads "
    "still return it",
    "[checkpoint][format]") {
  test::TempDir dir;
  const std::string big(1000, 'z');
  {
    auto e = open_engine(manual_checkpoints(dir.path));
    REQUIRE(e.ok());
    MvccStore& store = (*e)->store();
    Command p1 = test::put_req("k", big), p2 = test::put_req("k", big + "2");
    REQUIRE(store.apply({{1, &p1}})[0].ok());
    REQUIRE(store.apply({{2, &p2}})[0].ok());
    auto rd = store.reader();
    RangeRequest q;
    q.key = "k";
    auto now = rd->range(q, 1 << 20);
    REQUIRE(now.ok());
    REQUIRE(now->kvs.size() == 1);
    CHECK(now->kvs[0].value == big + "2");
    CHECK(now->kvs[0].version == 2);
    CHECK(now->kvs[0].create_revision == 2);
    CHECK(now->kvs[0].mod_revision == 3);
    q.revision = 2;
    auto old = rd->range(q, 1 << 20);
    REQUIRE(old.ok());
    CHECK(old->kvs.at(0).value == big);
  }
  WT_CONNECTION* conn = nullptr;
  REQUIRE(wiredtiger_open(dir.path.c_str(), nullptr, "log=(enabled=true)", &conn) == 0);
  WT_SESSION* s = nullptr;
  REQUIRE(conn->open_session(conn, nullptr, nullptr, &s) == 0);
  auto bytes_of = [&](const char* uri) {
    WT_CURSOR* c = nullptr;
    REQUIRE(s->open_cursor(s, uri, nullptr, nullptr, &c) == 0);
    size_t n = 0;
    while (c->next(c) == 0)
      n += wt::value_view(c).size();
    c->close(c);
    return n;
  };
  CHECK(bytes_of("table:current") < 40);              // one row, numbers only
  CHECK(bytes_of("table:history") > 2 * big.size());  // both versions, with values
  conn->close(conn, nullptr);
}

}  // namespace
}  // namespace keel::storage
