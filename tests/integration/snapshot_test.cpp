// A new member of a real keeld cluster, behind the leader's compacted log, is caught up by a
// streamed snapshot larger than its WiredTiger cache, while writes go on.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "cluster_harness.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // ASan's quarantine and shadow memory inflate RSS
#else
constexpr bool kSanitized = false;
#endif

long peak_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// Values that do not compress and that identify their key.
std::string big_value(int i, size_t bytes) {
  std::string v(bytes, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1);
  for (auto& c : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>('!' + x % 90);
  }
  return std::to_string(i) + ":" + v;
}

}  // namespace

TEST_CASE("a new member catches up from a streamed snapshot larger than its cache",
          "[integration][cluster][snapshot]") {
  TempDir dir;
  // A 4 MiB cache everywhere, a short retained log, 256 KiB chunks.
  KeelCluster c(dir.path, 3,
                "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
                "request_timeout_ms = 5000\nlog_retain_entries = 200\n"
                "snapshot_chunk_bytes = 262144\n[storage]\ncache_size_mb = 4\n");
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  auto cl = c.member(*leader).client();
  REQUIRE(cl);
  const int keys = 2000;
  const size_t value_bytes = 12000;  // about 24 MB of values: current and history hold them
  for (int i = 0; i < keys; ++i) {
    auto r = cl->put(put("big/" + std::to_string(i), big_value(i, value_bytes)));
    INFO("put " << i << ": " << (r ? "" : r.error().message));
    REQUIRE(r.ok());
  }

  // Writes go on while the new member joins and catches up.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::map<std::string, std::string> acked;
  std::thread writer([&] {
    auto wc = c.member(*leader).client();
    for (int i = 0; wc && !stop; ++i) {
      auto p = put("live/" + std::to_string(i % 50), std::to_string(i));
      if (!wc->put(p)) continue;
      std::lock_guard lock(mu);
      acked[p.key] = p.value;
    }
  });

  const int j = c.add_joiner("m3");
  auto add = keelctl(c.member(*leader).socket(), {"member", "add", "m3", c.peer(j)});
  INFO(add.err);
  REQUIRE(add.status == 0);
  REQUIRE(c.start(j));
  bool caught_up = false;
  const auto until = std::chrono::steady_clock::now() + 120s;
  while (!caught_up && std::chrono::steady_clock::now() < until) {
    auto s = c.status(j);
    auto l = c.status(*leader);
    caught_up = s && l && s->applied_index > 0 && s->applied_index + 20 >= l->commit_index &&
                s->revision > keys;
    if (!caught_up) std::this_thread::sleep_for(50ms);
  }
  stop = true;
  writer.join();
  REQUIRE(caught_up);
  const std::string log = c.member(j).log();
  INFO(log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
  CHECK(log.find("installed the snapshot") != std::string::npos);
  const long peak_kib = peak_rss_kib(c.member(j).pid());
  WARN("new member's peak RSS " << peak_kib << " KiB while receiving about "
                                << 2 * keys * value_bytes / 1024 << " KiB of state");
  if (!kSanitized) CHECK(peak_kib * 1024 < static_cast<long>(2 * keys * value_bytes));

  // Its replica holds every key (serializable reads: its own state), and every write
  // acknowledged before the end.
  auto jc = c.member(j).client();
  REQUIRE(jc);
  std::vector<std::string> wrong;
  for (int i = 0; i < keys; i += 7) {
    storage::RangeRequest r;
    r.key = "big/" + std::to_string(i);
    r.serializable = true;
    auto got = jc->range(r);
    if (!got || got->kvs.size() != 1 || got->kvs[0].value != big_value(i, value_bytes)) {
      wrong.push_back(r.key);
    }
  }
  CHECK(wrong.empty());
  for (const auto& [k, v] : acked) {
    storage::RangeRequest r;
    r.key = k;  // linearizable: through the new member's ReadIndex
    auto got = jc->range(r);
    if (!got || got->kvs.empty() || std::stoll(got->kvs[0].value) < std::stoll(v)) {
      wrong.push_back(k + "=" + v);
    }
  }
  CHECK(wrong.empty());
}

TEST_CASE(
    "a member killed with state only in its checkpoint, restarted after the leader compacted "
    "its log past that member's log, is caught up by a snapshot, not across a gap",
    "[integration][cluster][snapshot][checkpoint]") {
  TempDir dir;
  // A short retained log and checkpoints far apart: after kill -9 the follower's state is an
  // old checkpoint and its own log ends where the leader's retained log no longer reaches.
  KeelCluster c(dir.path, 3,
                "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
                "request_timeout_ms = 5000\nlog_retain_entries = 50\n[storage]\n"
                "cache_size_mb = 16\ncheckpoint_interval_ms = 600000\n");
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  const int f = (*leader + 1) % 3;
  auto cl = c.member(*leader).client();
  REQUIRE(cl);
  for (int i = 0; i < 100; ++i)
    REQUIRE(cl->put(put("before/" + std::to_string(i), std::to_string(i))));
  c.member(f).kill9();
  c.running[f] = false;
  // Far past the follower's last entry: the leader drops that prefix (after its own
  // checkpoint, which log compaction waits for).
  for (int i = 0; i < 1500; ++i)
    REQUIRE(cl->put(put("after/" + std::to_string(i % 300), std::to_string(i))));
  REQUIRE(c.start(f));
  auto fc = c.member(f).client();
  REQUIRE(fc);
  bool caught_up = false;
  for (int tries = 0; tries < 400 && !caught_up; ++tries) {
    caught_up = get_value(*fc, "after/299", true) == "1499";
    if (!caught_up) std::this_thread::sleep_for(50ms);
  }
  REQUIRE(caught_up);
  // The install logs once its checkpoint is done, after the state is already served.
  std::string log;
  for (int tries = 0; tries < 200; ++tries) {
    log = c.member(f).log();
    if (log.find("installed the snapshot") != std::string::npos) break;
    std::this_thread::sleep_for(50ms);
  }
  INFO(log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
  CHECK(log.find("installed the snapshot") != std::string::npos);
  for (int i = 0; i < 100; i += 9)
    CHECK(get_value(*fc, "before/" + std::to_string(i), true) == std::to_string(i));
  for (int i = 1200; i < 1500; i += 37)
    CHECK(get_value(*fc, "after/" + std::to_string(i % 300), true) == std::to_string(i));
}
