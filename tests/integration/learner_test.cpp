// Learner agents (--role learner) on real keeld processes on 127.0.0.1: 3 voters and learners
// fed through the relay tree. Each test names the property it checks; assertions run on the
// main thread.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <set>
#include <thread>

#include "cluster_harness.hpp"
#include "netlab.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

// relay.fanout 1 by default: each voter feeds one learner, so a fourth learner must hang
// under a learner.
std::string learner_config(int fanout = 1) {
  return std::string(KeelCluster::kFastRaft) + "[relay]\nfanout = " + std::to_string(fanout) +
         "\nheartbeat_ms = 100\ntimeout_ms = 1000\n";
}

// Polls (bounded) until member i's replica holds key = value.
bool wait_value(KeelCluster& c, int i, const std::string& key, const std::string& value,
                std::chrono::milliseconds deadline = 10s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (auto cl = c.member(i).client()) {
      if (get_value(*cl, key, true) == value) return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// Polls (bounded) until every learner reports a parent.
bool wait_attached(KeelCluster& c, const std::vector<int>& learners,
                   std::chrono::milliseconds deadline = 15s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    bool all = true;
    for (int i : learners) {
      auto s = c.status(i);
      if (!s || s->upstream == 0) all = false;
    }
    if (all) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

struct Cluster {
  KeelCluster c;
  std::vector<int> learners;
  Cluster(const std::string& root, int n_learners, const std::string& config) : c(root, 3, config) {
    for (int i = 0; i < n_learners; ++i)
      learners.push_back(c.add_learner("l" + std::to_string(i)));
  }
  bool start() {
    if (!c.start_all() || !c.wait_leader()) return false;
    for (int i : learners)
      if (!c.start(i)) return false;
    return wait_attached(c, learners);
  }
};

// What a learner cut off from its voters answers: a serializable read of "before" (and the
// reply header that says how stale it may be), a linearizable read, a write, and a watch of
// "before" from revision 1 (which replays the replica's history). Asserts nothing: the
// caller checks after it has restored the network.
struct CutOffAnswers {
  std::optional<std::string> serializable;
  client::ReplyHeader stale_header;
  Result<storage::RangeResponse> linearizable = make_error(ErrorCode::internal, "not asked");
  Result<storage::PutResponse> write = make_error(ErrorCode::internal, "not asked");
  Status watched = ok_status();
  std::vector<std::string> seen;  // keys the watch delivered
};

CutOffAnswers ask_cut_off(client::Client& lc, const std::string& write_key) {
  CutOffAnswers a;
  a.serializable = get_value(lc, "before", true);
  a.stale_header = lc.last_header();
  storage::RangeRequest lin;
  lin.key = "before";
  a.linearizable = lc.range(lin);
  a.write = lc.put(put(write_key, "x"));
  client::WatchOptions wo;
  wo.key = "before";
  wo.start_revision = 1;
  a.watched = lc.watch(
      wo,
      [&](int64_t, const std::vector<storage::Event>& events) {
        for (const auto& e : events)
          a.seen.push_back(e.kv.key);
        return false;
      },
      nullptr);
  return a;
}

// Polls (bounded) until learner i reports no parent.
bool wait_detached(KeelCluster& c, int i) {
  for (int tries = 0; tries < 200; ++tries) {
    auto s = c.status(i);
    if (s && s->upstream == 0) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

}  // namespace

TEST_CASE(
    "[learner] with relay.fanout 2, 10 learners form a tree: no agent feeds more than two, "
    "every path ends at a voter, and member list shows each learner with its parent",
    "[integration][learner]") {
  TempDir dir;
  Cluster k(dir.path, 10, learner_config(2));
  REQUIRE(k.start());
  std::set<uint64_t> voters, learner_ids;
  for (int i = 0; i < 3; ++i)
    voters.insert(k.c.status(i)->member_id);
  int deeper = 0;
  for (int i = 0; i < k.c.size(); ++i) {
    auto s = k.c.status(i);
    REQUIRE(s);
    CHECK(s->relay_children <= 2);
    if (!k.c.is_learner(i)) {
      CHECK(s->role != "learner");
      continue;
    }
    learner_ids.insert(s->member_id);
    CHECK(s->role == "learner");
    REQUIRE(!s->upstream_path.empty());
    CHECK(s->upstream_path.front() == s->upstream);
    CHECK(voters.count(s->upstream_path.back()) == 1);
    if (s->upstream_path.size() > 1) deeper++;
  }
  CHECK(deeper == 4);  // 3 voters feed two learners each; the other four hang below learners

  // Reports travel up the tree about once a second: wait until all five are listed.
  std::vector<client::MemberInfo> members;
  for (int tries = 0; tries < 100; ++tries) {
    auto cl = k.c.member(0).client();
    auto r = cl->member_list();
    REQUIRE(r);
    members = *r;
    if (members.size() == 13) break;
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(members.size() == 13);
  int listed = 0;
  for (const auto& m : members) {
    if (m.relay_parent == 0) {
      CHECK(voters.count(m.id) == 1);
      continue;
    }
    CHECK(learner_ids.count(m.id) == 1);
    CHECK((voters.count(m.relay_parent) + learner_ids.count(m.relay_parent)) == 1);
    listed++;
  }
  CHECK(listed == 10);
}

TEST_CASE(
    "[learner] a write through a learner two hops below a voter is read back at once on "
    "that learner, and a linearizable read on any learner sees a write acknowledged "
    "elsewhere",
    "[integration][learner]") {
  TempDir dir;
  Cluster k(dir.path, 5, learner_config());
  REQUIRE(k.start());
  int deep = -1;
  for (int i : k.learners) {
    if (k.c.status(i)->upstream_path.size() > 1) deep = i;
  }
  REQUIRE(deep >= 0);
  auto lc = k.c.member(deep).client();
  REQUIRE(lc);
  for (int n = 0; n < 20; ++n) {
    const std::string key = "rw" + std::to_string(n);
    REQUIRE(lc->put(put(key, std::to_string(n))));
    // Read-your-writes from the replica itself: no wait, no loop.
    CHECK(get_value(*lc, key, true) == std::to_string(n));
  }
  auto vc = k.c.member(1).client();
  for (int n = 0; n < 20; ++n) {
    const std::string key = "lin" + std::to_string(n);
    REQUIRE(vc->put(put(key, std::to_string(n))));
    for (int i : k.learners) {
      auto c = k.c.member(i).client();
      CHECK(get_value(*c, key, false) == std::to_string(n));  // linearizable: ReadIndex
    }
  }
  for (int i = 0; i < k.c.size(); ++i)
    CHECK(wait_value(k.c, i, "rw19", "19"));
}

TEST_CASE("[learner] kill -9 of a relay learner: its child attaches elsewhere and catches up",
          "[integration][learner]") {
  TempDir dir;
  Cluster k(dir.path, 5, learner_config());
  REQUIRE(k.start());
  int relay = -1, child = -1;
  for (int i : k.learners) {
    auto s = k.c.status(i);
    if (s->upstream_path.size() < 2) continue;
    child = i;
    for (int j : k.learners) {
      if (k.c.status(j)->member_id == s->upstream) relay = j;
    }
  }
  REQUIRE(relay >= 0);
  REQUIRE(child >= 0);
  const uint64_t old_parent = k.c.status(child)->upstream;
  k.c.member(relay).kill9();
  k.c.running[relay] = false;
  auto vc = k.c.member(0).client();
  for (int n = 0; n < 50; ++n)
    REQUIRE(vc->put(put("after" + std::to_string(n), std::to_string(n))));
  CHECK(wait_value(k.c, child, "after49", "49"));
  auto s = k.c.status(child);
  REQUIRE(s);
  CHECK(s->upstream != 0);
  CHECK(s->upstream != old_parent);
  auto cc = k.c.member(child).client();
  for (int n = 0; n < 50; ++n)
    CHECK(get_value(*cc, "after" + std::to_string(n), true) == std::to_string(n));
}

TEST_CASE(
    "[learner] the Raft leader feeds at most relay.leader_fanout learners, also after "
    "leadership moves (the new leader redirects its extra children), and every learner keeps "
    "applying",
    "[integration][learner]") {
  TempDir dir;
  KeelCluster c(dir.path, 3,
                std::string(KeelCluster::kFastRaft) +
                    "[relay]\nfanout = 4\nleader_fanout = 1\nheartbeat_ms = 100\n"
                    "timeout_ms = 1000\n");
  std::vector<int> learners;
  for (int i = 0; i < 6; ++i)
    learners.push_back(c.add_learner("l" + std::to_string(i)));
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  for (int i : learners)
    REQUIRE(c.start(i));
  REQUIRE(wait_attached(c, learners));
  auto children_of = [&](int i) -> uint64_t {
    auto s = c.status(i);
    return s ? s->relay_children : 999;
  };
  const uint64_t fed_by_first_leader = children_of(*leader);
  // Leadership moves (SIGTERM hands it over); the old leader comes back as a follower.
  REQUIRE(c.member(*leader).terminate() == 0);
  c.running[*leader] = false;
  std::vector<int> rest;
  for (int i = 0; i < 3; ++i)
    if (i != *leader) rest.push_back(i);
  auto next = c.wait_leader_among(rest, 20s);
  REQUIRE(next);
  REQUIRE(c.start(*leader));
  // Within a few relay ticks the new leader is down to its fan-out.
  uint64_t fed_by_next = 999;
  for (int k = 0; k < 100 && fed_by_next > 1; ++k) {
    fed_by_next = children_of(*next);
    if (fed_by_next > 1) std::this_thread::sleep_for(50ms);
  }
  auto vc = c.member(*next).client();
  REQUIRE(vc);
  REQUIRE(vc->put(put("after-move", "1")));
  bool all = true;
  for (int i : learners)
    all = wait_value(c, i, "after-move", "1", 15s) && all;
  CHECK(fed_by_first_leader <= 1);
  CHECK(fed_by_next <= 1);
  CHECK(all);
  CHECK(wait_attached(c, learners));
}

TEST_CASE(
    "[learner] a learner fed by a learner catches up from that learner's snapshot (every "
    "learner starts from a snapshot, so it knows the voters, which no log entry names)",
    "[integration][learner]") {
  // fanout 1: the three voters feed one learner each, so the fourth hangs under a learner;
  // a 4 KiB ring: that learner holds too little log to feed a new child from index 1.
  TempDir dir;
  KeelCluster c(dir.path, 3,
                std::string(KeelCluster::kFastRaft) +
                    "[relay]\nfanout = 1\nheartbeat_ms = 100\ntimeout_ms = 1000\n"
                    "ring_bytes = 4096\n");
  std::vector<int> first;
  for (int i = 0; i < 3; ++i)
    first.push_back(c.add_learner("l" + std::to_string(i)));
  const int late = c.add_learner("late");
  REQUIRE(c.start_all());
  REQUIRE(c.wait_leader());
  for (int i : first)
    REQUIRE(c.start(i));
  REQUIRE(wait_attached(c, first));
  auto vc = c.member(0).client();
  for (int n = 0; n < 200; ++n)
    REQUIRE(vc->put(put("k" + std::to_string(n), std::string(100, 'v'))));
  for (int i : first)
    REQUIRE(wait_value(c, i, "k199", std::string(100, 'v')));
  REQUIRE(c.start(late));
  CHECK(wait_value(c, late, "k199", std::string(100, 'v'), 20s));
  // It hangs under a learner (bounded wait: a status taken while it re-attaches has no path).
  size_t hops = 0;
  for (int k = 0; k < 100 && hops < 2; ++k) {
    auto s = c.status(late);
    hops = s ? s->upstream_path.size() : 0;
    if (hops < 2) std::this_thread::sleep_for(50ms);
  }
  INFO("upstream path of the late learner has " << hops << " hops");
  CHECK(hops >= 2);
  CHECK(c.member(late).log().find("refused") == std::string::npos);
  auto lc = c.member(late).client();
  for (int n = 0; n < 200; n += 23)
    CHECK(get_value(*lc, "k" + std::to_string(n), true) == std::string(100, 'v'));
}

TEST_CASE("[learner] a learner started after the log was compacted catches up from a snapshot",
          "[integration][learner]") {
  // A short retained log: the voters drop their log prefix after a hundred entries.
  TempDir dir;
  KeelCluster small(dir.path, 3,
                    "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
                    "request_timeout_ms = 5000\nlog_retain_entries = 50\n[storage]\n"
                    "cache_size_mb = 32\n[relay]\nfanout = 2\nheartbeat_ms = 100\n"
                    "timeout_ms = 1000\n");
  const int l = small.add_learner("late");
  REQUIRE(small.start_all());
  REQUIRE(small.wait_leader());
  auto vc = small.member(0).client();
  for (int n = 0; n < 300; ++n)
    REQUIRE(vc->put(put("snap" + std::to_string(n), std::to_string(n))));
  REQUIRE(small.start(l));
  CHECK(wait_value(small, l, "snap299", "299"));
  auto lc = small.member(l).client();
  for (int n = 0; n < 300; n += 37)
    CHECK(get_value(*lc, "snap" + std::to_string(n), true) == std::to_string(n));
  // Its reads see the installed state once the switch is committed, a checkpoint before the
  // install is durable and logged: wait (bounded) for the log line.
  bool installed = false;
  for (int k = 0; k < 500 && !installed; ++k) {
    installed = small.member(l).log().find("installed the snapshot") != std::string::npos;
    if (!installed) std::this_thread::sleep_for(20ms);
  }
  CHECK(installed);
  REQUIRE(lc->put(put("after-snapshot", "yes")));  // and it keeps applying after it
  CHECK(get_value(*lc, "after-snapshot", true) == "yes");
}

TEST_CASE(
    "[learner] a learner partitioned from everyone (netns) serves serializable reads and "
    "watches from its replica, refuses linearizable reads and writes with unavailable, never "
    "slows the voters' commits, and catches up once healed (SKIPPED with a warning where "
    "network namespaces cannot be created)",
    "[integration][learner][netns]") {
  if (auto why = NetLab::unavailable()) {
    WARN("SKIPPED: network namespaces are not usable here: " << *why);
    return;
  }
  NetLab lab(4);  // three voters, then the learner
  INFO(lab.error());
  REQUIRE(lab.error().empty());
  TempDir dir;
  // Short waits, so that the cut-off learner's refusals come within the test.
  const std::string config =
      "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 1000\n"
      "request_timeout_ms = 2000\n[storage]\ncache_size_mb = 32\n"
      "[relay]\nfanout = 1\nheartbeat_ms = 100\ntimeout_ms = 1000\n";
  KeelCluster c(dir.path, 3, config, ClusterNet{lab.hosts(), lab.netns(), 2380});
  const int l = c.add_learner("l0");
  REQUIRE(c.start_all());
  REQUIRE(c.wait_leader());
  REQUIRE(c.start(l));
  REQUIRE(wait_attached(c, {l}));
  auto vc = c.member(0).client();
  REQUIRE(vc);
  REQUIRE(vc->put(put("before", "1")));
  REQUIRE(wait_value(c, l, "before", "1"));

  REQUIRE(lab.cut(l));
  const bool detached = wait_detached(c, l);
  // The voters commit without it.
  bool committed = true;
  for (int i = 0; i < 20; ++i)
    committed = committed && vc->put(put("during/" + std::to_string(i), "v")).ok();
  auto lc = c.member(l).client();
  REQUIRE(lc);
  const std::optional<std::string> not_yet = get_value(*lc, "during/0", true);
  const CutOffAnswers a = ask_cut_off(*lc, "from-learner");
  REQUIRE(lab.heal(l));

  CHECK(detached);
  CHECK(committed);
  CHECK(a.serializable == "1");
  CHECK_FALSE(not_yet);  // its replica stopped at the cut
  CHECK(a.stale_header.possibly_stale);
  REQUIRE_FALSE(a.linearizable);
  CHECK(a.linearizable.error().code == ErrorCode::unavailable);
  REQUIRE_FALSE(a.write);
  CHECK(a.write.error().code == ErrorCode::unavailable);
  CHECK(a.watched);
  CHECK(a.seen == std::vector<std::string>{"before"});
  // Healed, it attaches again, catches up on what was committed without it, and serves
  // linearizable reads and writes.
  REQUIRE(wait_attached(c, {l}, 30s));
  CHECK(wait_value(c, l, "during/19", "v", 30s));
  CHECK(get_value(*lc, "during/0", false) == "v");
  CHECK_FALSE(lc->last_header().possibly_stale);
  CHECK(lc->put(put("after", "2")).ok());
  CHECK(get_value(*vc, "after", false) == "2");
}

TEST_CASE(
    "[learner] a learner cut off from every voter serves serializable reads and watches "
    "from its replica and refuses linearizable reads and writes with unavailable",
    "[integration][learner]") {
  TempDir dir;
  Cluster k(dir.path, 1, learner_config());
  REQUIRE(k.start());
  const int l = k.learners[0];
  auto vc = k.c.member(0).client();
  REQUIRE(vc->put(put("before", "1")));
  REQUIRE(wait_value(k.c, l, "before", "1"));
  for (int i = 0; i < 3; ++i)
    ::kill(k.c.member(i).pid(), SIGSTOP);
  // The learner notices its parent is silent (relay.timeout_ms) and detaches.
  const bool detached = wait_detached(k.c, l);
  auto lc = k.c.member(l).client();
  const CutOffAnswers a = ask_cut_off(*lc, "during");
  for (int i = 0; i < 3; ++i)
    ::kill(k.c.member(i).pid(), SIGCONT);
  CHECK(detached);
  CHECK(a.serializable == "1");
  CHECK(a.stale_header.possibly_stale);  // and it says so, with how old its replica is
  CHECK(a.stale_header.applied_index > 0);
  CHECK(a.stale_header.member_id == k.c.status(l)->member_id);
  REQUIRE_FALSE(a.linearizable);
  CHECK(a.linearizable.error().code == ErrorCode::unavailable);
  REQUIRE_FALSE(a.write);
  CHECK(a.write.error().code == ErrorCode::unavailable);
  CHECK(a.watched);
  CHECK(a.seen == std::vector<std::string>{"before"});
  // Back with its voters, it attaches again and serves linearizable reads.
  REQUIRE(wait_attached(k.c, {l}));
  REQUIRE(vc->put(put("after", "2")));
  CHECK(get_value(*lc, "after", false) == "2");
  CHECK_FALSE(lc->last_header().possibly_stale);
}

TEST_CASE(
    "[learner] a lock held through a learner is refused to a voter's client until its "
    "command ends, then granted with a greater fencing token",
    "[integration][learner]") {
  TempDir dir;
  Cluster k(dir.path, 2, learner_config());
  REQUIRE(k.start());
  const std::string voter = k.c.member(0).socket();
  const std::string learner = k.c.member(k.learners[1]).socket();
  // CMD runs while the learner's agent holds the lock: a --try through a voter must fail.
  auto held = run_command({KEELCTL_PATH, "--socket", learner, "lock", "reboot", "--", "sh", "-c",
                           "echo token=$KEEL_LOCK_TOKEN; " + std::string(KEELCTL_PATH) +
                               " --socket " + voter + " lock --try reboot -- true; echo try=$?"});
  auto after = run_command({KEELCTL_PATH, "--socket", voter, "lock", "reboot", "--", "sh", "-c",
                            "echo token=$KEEL_LOCK_TOKEN"});
  CHECK(held.status == 0);
  CHECK(held.out.find("try=1") != std::string::npos);
  CHECK(after.status == 0);
  auto token = [](const std::string& out) {
    auto p = out.find("token=");
    return p == std::string::npos ? -1 : std::atoll(out.c_str() + p + 6);
  };
  CHECK(token(held.out) > 0);
  CHECK(token(after.out) > token(held.out));
}
