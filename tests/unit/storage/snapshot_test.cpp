// Streamed snapshots: SnapshotSource -> chunks -> SnapshotSink -> Engine::install_snapshot.
#include <map>

#include "cluster/raft/raft.hpp"
#include "cluster/storage/raft_storage.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

const raft::ConfState kConf{{1, 2, 3}, {}};

// Fills a store with puts, overwrites, deletes and a compaction, so that current, index and
// history all differ; records the configuration and a member blob with the last batch.
void fill(test::Store& s, int keys, size_t value_bytes = 40) {
  for (int i = 0; i < keys; i++)
    s.put("k" + std::to_string(i), std::string(value_bytes, static_cast<char>('a' + i % 26)));
  for (int i = 0; i < keys; i += 3)
    s.put("k" + std::to_string(i), "second-" + std::to_string(i));
  for (int i = 0; i < keys; i += 7)
    s.del("k" + std::to_string(i));
  const int64_t mid = s.rev() - 5;
  REQUIRE(s.apply(CompactRequest{mid}).ok());
  s.put("after-compaction", "x");
  const std::string members = "opaque member list";
  s.store().apply({}, ++s.index, &kConf, &members, 777000);  // cluster time 777 s
}

// Every chunk of `src` into `sink`; returns the number of chunks.
int stream(SnapshotSource& src, SnapshotSink& sink, size_t chunk_bytes) {
  std::string chunk;
  int n = 0;
  for (;;) {
    auto more = src.next(chunk_bytes, &chunk);
    REQUIRE(more.ok());
    if (!*more) break;
    REQUIRE(sink.add(chunk).ok());
    n++;
  }
  return n;
}

raft::Ready snapshot_ready(const SnapshotInfo& info, uint64_t term) {
  raft::Ready rd;
  auto snap = std::make_shared<raft::Snapshot>();
  snap->meta.index = info.applied_index;
  snap->meta.term = term;
  snap->meta.conf = info.conf;
  rd.snapshot = snap;
  rd.hard_state = raft::HardState{term, 0, info.applied_index};
  return rd;
}

// The observable state: every live key now, every key at a few old revisions, every event.
struct Observed {
  std::vector<KeyValue> now;
  std::map<int64_t, std::vector<KeyValue>> at;
  std::vector<std::string> events;
  int64_t revision = 0, compact = 0;
  uint64_t applied = 0;
  raft::ConfState conf;
  std::string members;
  uint64_t cluster_ms = 0;
  bool operator==(const Observed&) const = default;
};

Observed observe(test::Store& s) {
  Observed o;
  o.now = s.range(test::all_keys()).kvs;
  o.revision = s.rev();
  o.compact = s.store().compact_revision();
  for (int64_t r = o.compact; r <= o.revision; r += 7)
    o.at[r] = s.range(test::all_keys(r)).kvs;
  auto ev = s.rd->events(
      o.compact + 1, 0, std::string(1, '\0'), std::string(1, '\0'), true, SIZE_MAX,
      [&](const Event& e) {
        o.events.push_back(std::to_string(e.kv.mod_revision) + " " + e.kv.key + "=" + e.kv.value);
        return true;
      });
  REQUIRE(ev.ok());
  o.applied = s.store().applied_index();
  o.conf = s.store().applied_conf();
  o.members = s.store().applied_members();
  o.cluster_ms = s.store().applied_cluster_ms();
  return o;
}

bool has_file(const std::string& dir, const std::string& name) {
  return std::filesystem::exists(std::filesystem::path(dir) / name);
}

TEST_CASE("snapshot: a streamed copy installs the same state, across a reopen", "[snapshot]") {
  test::Store a;
  fill(a, 300);
  test::Store b;
  b.put("stale", "this key must be gone after the install");
  auto src = a.store().snapshot_source();
  REQUIRE(src.ok());
  CHECK((*src)->info().applied_index == a.store().applied_index());
  CHECK((*src)->info().conf == kConf);
  CHECK((*src)->info().members == "opaque member list");
  // Writes after the source opened are not in it (one WiredTiger snapshot).
  const Observed before = observe(a);
  a.put("later", "not in the snapshot");

  auto sink = b.store().snapshot_sink();
  REQUIRE(sink.ok());
  const int chunks = stream(**src, **sink, 512);
  CHECK(chunks > 10);
  CHECK((*sink)->bytes() == (*src)->bytes());
  auto info = (*sink)->finish();
  REQUIRE(info.ok());
  CHECK(info->applied_index == before.applied);
  REQUIRE(b.engine->install_snapshot(**sink, snapshot_ready(*info, 4)).ok());
  sink->reset();

  CHECK(observe(b) == before);
  CHECK(b.get("stale") == "<none>");
  CHECK(b.get("later") == "<none>");
  RaftStorage& log = b.engine->raft();
  CHECK(log.snapshot()->meta.index == before.applied);
  CHECK(log.first_index() == before.applied + 1);
  CHECK(log.last_index() == before.applied);
  CHECK(log.hard_state().commit == before.applied);

  CHECK(b.store().applied_cluster_ms() == 777000);
  // It keeps applying on top (cluster time never goes back), and the old generation's files
  // are gone.
  b.index = before.applied;
  b.put("on-top", "y");
  b.store().apply({}, ++b.index, nullptr, nullptr, 5);
  CHECK(b.store().applied_cluster_ms() == 777000);
  CHECK(b.store().drop_retired() == 0);
  CHECK_FALSE(has_file(b.dir.path, "current.wt"));
  CHECK(has_file(b.dir.path, "current_g1.wt"));
  const Observed after = observe(b);
  b.reopen();
  CHECK(observe(b) == after);
  CHECK(b.engine->raft().snapshot()->meta.index == before.applied);
}

TEST_CASE("snapshot: a reader opened before the install follows it", "[snapshot]") {
  test::Store a;
  fill(a, 50);
  test::Store b;
  b.put("old", "1");
  auto other = b.store().reader();  // another thread's reader, idle during the install
  RangeRequest q;
  q.key = "old";
  REQUIRE(other->range(q, 1 << 20).value().kvs.size() == 1);

  auto src = a.store().snapshot_source();
  auto sink = b.store().snapshot_sink();
  REQUIRE((src.ok() && sink.ok()));
  stream(**src, **sink, 4096);
  auto info = (*sink)->finish();
  REQUIRE(info.ok());
  REQUIRE(b.engine->install_snapshot(**sink, snapshot_ready(*info, 2)).ok());
  // The idle reader still holds the old tables: they cannot be dropped yet.
  CHECK(b.store().drop_retired() > 0);
  CHECK(other->range(q, 1 << 20).value().kvs.empty());
  q.key = "k1";
  CHECK(other->range(q, 1 << 20).value().kvs.size() == 1);
  CHECK(b.store().drop_retired() > 0);  // the fixture's own reader has not read yet
  CHECK(b.get("k1") != "<none>");
  CHECK(b.store().drop_retired() == 0);
}

TEST_CASE("snapshot: malformed chunks are refused by name and change nothing", "[snapshot]") {
  test::Store b;
  b.put("keep", "me");
  const Observed before = observe(b);
  auto row = [](uint8_t tag, std::string key, std::string value) {
    std::string out(1, static_cast<char>(tag));
    out.push_back(static_cast<char>(key.size()));
    out += key;
    out.push_back(static_cast<char>(value.size()));
    out += value;
    return out;
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {std::string("\x01\x05"
                   "ab",
                   4),
       "truncated key"},
      {row(9, "k", "v"), "unknown row tag 9"},
      {row(0, "raft_hardstate", "x"), "unexpected meta row 'raft_hardstate'"},
      {row(0, "state", "\xff"), "undecodable state row"},
      {row(2, "plainkey", "12345"), "malformed index key"},
      {row(3, "short", "x"), "malformed history key"},
      {row(1, "k", ""), "undecodable current row"},
  };
  for (const auto& [chunk, what] : bad) {
    auto sink = b.store().snapshot_sink();
    REQUIRE(sink.ok());
    auto st = (*sink)->add(chunk);
    INFO(what);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == ErrorCode::invalid_argument);
    CHECK_THAT(st.error().message, Catch::Contains(what));
  }
  {
    auto sink = b.store().snapshot_sink();
    REQUIRE(sink.ok());
    auto info = (*sink)->finish();
    REQUIRE_FALSE(info.ok());
    CHECK_THAT(info.error().message, Catch::Contains("without a state row"));
  }
  CHECK(observe(b) == before);
  b.reopen();
  CHECK(observe(b) == before);
  CHECK_FALSE(has_file(b.dir.path, "current_g1.wt"));  // abandoned sinks' tables are dropped
}

// The child installs snapshots of growing stores again and again and is killed with SIGKILL
// at a random point; after reopen the state is one whole snapshot (or the first state), and
// the Raft log's snapshot record agrees with it.
TEST_CASE("snapshot: kill -9 during streaming and install leaves the old state or the new",
          "[snapshot][crash]") {
  test::TempDir src_dir, dst_dir;
  for (int trial = 0; trial < 4; trial++) {
    const uint64_t acked = test::kill9_after(
        [&](auto ack) {
          auto src_engine = open_engine(test::test_options(src_dir.path));
          auto dst_engine = open_engine(test::test_options(dst_dir.path));
          if (!src_engine || !dst_engine) ::_exit(2);
          MvccStore& src = src_engine.value()->store();
          // The source's applies are not synced: after a kill it may be behind the destination.
          uint64_t index =
              std::max(src.applied_index(), dst_engine.value()->store().applied_index());
          for (uint64_t round = 1;; round++) {
            std::vector<Command> cmds;
            for (int i = 0; i < 200; i++)
              cmds.emplace_back(test::put_req("k" + std::to_string(i), std::to_string(index + 1)));
            std::vector<std::pair<uint64_t, const Command*>> batch;
            for (auto& c : cmds)
              batch.emplace_back(++index, &c);
            src.apply(batch, index, &kConf);
            auto so = src.snapshot_source();
            auto si = dst_engine.value()->store().snapshot_sink();
            if (!so || !si) ::_exit(3);
            std::string chunk;
            while (so.value()->next(256, &chunk).value())
              if (!si.value()->add(chunk)) ::_exit(4);
            auto info = si.value()->finish();
            if (!info) ::_exit(5);
            if (!dst_engine.value()->install_snapshot(*si.value(), snapshot_ready(*info, 1)))
              ::_exit(6);
            if (!ack(index)) ::_exit(7);
          }
        },
        2 + trial, static_cast<useconds_t>(1000 * (trial * 7 % 5)));

    auto e = open_engine(test::test_options(dst_dir.path));
    REQUIRE(e.ok());
    MvccStore& st = e.value()->store();
    INFO("trial " << trial << ", acknowledged install at index " << acked);
    CHECK(st.applied_index() >= acked);  // an acknowledged install is durable
    CHECK(e.value()->raft().snapshot()->meta.index == st.applied_index());
    // One whole snapshot: every key holds the value of the same round.
    auto rd = st.reader();
    auto all = rd->range(test::all_keys(), 1 << 24);
    REQUIRE(all.ok());
    REQUIRE(all->kvs.size() == 200);
    for (const auto& kv : all->kvs)
      CHECK(kv.value == all->kvs.front().value);
  }
}

}  // namespace
}  // namespace keel::storage
