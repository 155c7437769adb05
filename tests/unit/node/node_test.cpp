// The node's write path: propose -> durable log (group commit) -> apply -> completion, and
// recovery of entries that were logged but not applied.
#include <catch2/catch.hpp>
#include <filesystem>
#include <future>
#include <thread>

#include "cluster/node/node.hpp"

using namespace keel;
using namespace keel::storage;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/keel-node-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::unique_ptr<Engine> open_at(const TempDir& dir) {
  EngineOptions o;
  o.dir = dir.path.string();
  o.cache_size_mb = 16;
  o.log_file_max_mb = 1;
  auto e = open_engine(o);
  REQUIRE(e.ok());
  return std::move(e).value();
}

PutRequest put(std::string k, std::string v) {
  PutRequest p;
  p.key = std::move(k);
  p.value = std::move(v);
  return p;
}

}  // namespace

TEST_CASE("proposals from many threads are applied in one order and share fsyncs", "[node]") {
  TempDir dir;
  auto engine = open_at(dir);
  auto node = node::Node::open(*engine, {});
  REQUIRE(node.ok());
  std::atomic<int64_t> last_applied_revision{0};
  (*node)->start([&](int64_t rev) { last_applied_revision = rev; });

  constexpr int kThreads = 8, kPerThread = 200;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<int64_t> revisions;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::promise<Result<CommandResult>> done;
        auto f = done.get_future();
        (*node)->propose(put("k" + std::to_string(t) + "/" + std::to_string(i), "v"),
                         [&done](Result<CommandResult> r) { done.set_value(std::move(r)); });
        auto r = f.get();
        REQUIRE(r.ok());
        std::lock_guard lock(mu);
        revisions.push_back(std::get<PutResponse>(r.value()).revision);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  (*node)->stop();

  std::sort(revisions.begin(), revisions.end());
  REQUIRE(revisions.size() == kThreads * kPerThread);
  // Every put got its own revision: 2 .. N+1 (a new store is at revision 1).
  for (size_t i = 0; i < revisions.size(); ++i)
    CHECK(revisions[i] == int64_t(i) + 2);
  CHECK(last_applied_revision == kThreads * kPerThread + 1);
  auto stats = (*node)->stats();
  CHECK(stats.proposals == kThreads * kPerThread);
  CHECK(stats.applied_index == kThreads * kPerThread);
  // Group commit: with 8 concurrent writers, batches carry more than one proposal on average.
  CHECK(stats.batches < stats.proposals);
  CHECK(engine->stats().log_syncs == stats.batches);
}

TEST_CASE("entries logged but not applied are applied on open", "[node][recovery]") {
  TempDir dir;
  {
    auto engine = open_at(dir);
    // As if the process died between the log fsync and the apply.
    std::vector<LogEntry> entries;
    for (uint64_t i = 1; i <= 5; ++i) {
      entries.push_back(LogEntry{i, 1, encode_command(put("key" + std::to_string(i), "v"))});
    }
    REQUIRE(engine->log().append(entries).ok());
    REQUIRE(engine->store().applied_index() == 0);
  }
  auto engine = open_at(dir);
  auto node = node::Node::open(*engine, {});
  REQUIRE(node.ok());
  CHECK(engine->store().applied_index() == 5);
  CHECK(engine->store().current_revision() == 6);
  auto reader = engine->store().reader();
  RangeRequest all;
  all.key = "key";
  all.range_end = prefix_end("key");
  auto r = reader->range(all, 1 << 20);
  REQUIRE(r.ok());
  CHECK(r->count == 5);
}

TEST_CASE("a stopped node answers shutting_down and keeps what it committed", "[node]") {
  TempDir dir;
  auto engine = open_at(dir);
  auto node = node::Node::open(*engine, {});
  REQUIRE(node.ok());
  (*node)->start(nullptr);
  std::promise<Result<CommandResult>> first;
  (*node)->propose(put("a", "1"), [&](Result<CommandResult> r) { first.set_value(std::move(r)); });
  (*node)->stop();
  REQUIRE(first.get_future().get().ok());  // queued before stop: finished
  std::promise<Result<CommandResult>> late;
  (*node)->propose(put("b", "2"), [&](Result<CommandResult> r) { late.set_value(std::move(r)); });
  auto r = late.get_future().get();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::shutting_down);
}

TEST_CASE("failed commands change nothing and do not move the revision", "[node]") {
  TempDir dir;
  auto engine = open_at(dir);
  auto node = node::Node::open(*engine, {});
  REQUIRE(node.ok());
  (*node)->start(nullptr);
  PutRequest p = put("missing", "");
  p.ignore_value = true;
  std::promise<Result<CommandResult>> done;
  (*node)->propose(p, [&](Result<CommandResult> r) { done.set_value(std::move(r)); });
  auto r = done.get_future().get();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::key_not_found);
  CHECK(engine->store().current_revision() == 1);
  (*node)->stop();
}
