// Faults that are not crashes, on real keeld processes: a leader paused with SIGSTOP for
// longer than the election timeout, and a leader cut off by a real network partition
// (network namespaces and veth links, see netlab.hpp). Worker threads record every call with
// its invoke and return time on one monotonic clock; the main thread asserts after joining.
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "cluster_harness.hpp"
#include "netlab.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

// One call a worker made: a put of key=value through `member`, or a linearizable read.
struct Call {
  int member = 0;
  bool read = false;
  std::string key, value;
  uint64_t invoke = 0, ret = 0;
  bool ok = false;
  ErrorCode code = ErrorCode::ok;
  std::string message;
};

// Workers that put s/<tag><thread>/<i> = <i> (a new key every call) through one member each, and
// optionally read through one member, until stopped. Each thread appends to its own log; the
// main thread reads the logs only after joining. Counters are for waiting on progress.
struct Load {
  explicit Load(KeelCluster& cluster) : c(cluster) {}
  KeelCluster& c;
  std::atomic<bool> stop{false};
  std::string pad;  // appended to every value (a bigger state)
  std::string tag;  // in every key: s/<tag><thread>/<i> (two Loads on one cluster differ)
  std::vector<std::vector<Call>> logs;
  std::vector<int> target;
  std::vector<std::unique_ptr<std::atomic<int>>> acked_by_member, errors_by_member;
  // Errors of calls invoked at or after `mark` (a now_ns() time; set by the main thread).
  std::atomic<uint64_t> mark{UINT64_MAX};
  std::vector<std::unique_ptr<std::atomic<int>>> errors_after_mark;

  // Call before spawning: one log per thread.
  void plan(const std::vector<int>& writers, int reader_member = -1) {
    for (int i = 0; i < c.size(); ++i) {
      acked_by_member.push_back(std::make_unique<std::atomic<int>>(0));
      errors_by_member.push_back(std::make_unique<std::atomic<int>>(0));
      errors_after_mark.push_back(std::make_unique<std::atomic<int>>(0));
    }
    target = writers;
    if (reader_member >= 0) target.push_back(reader_member);
    reader = reader_member >= 0;
    logs.resize(target.size());
  }
  bool reader = false;

  void run(size_t t) {
    const int m = target[t];
    const bool is_reader = reader && t + 1 == target.size();
    std::unique_ptr<client::Client> cl;
    for (int i = 0; !stop; ++i) {
      if (!cl) cl = c.member(m).client();
      if (!cl) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      Call call;
      call.member = m;
      call.read = is_reader;
      call.key = is_reader ? "probe" : "s/" + tag + std::to_string(t) + "/" + std::to_string(i);
      call.value = std::to_string(i) + pad;
      call.invoke = now_ns();
      Status st = ok_status();
      if (is_reader) {
        storage::RangeRequest r;
        r.key = call.key;
        auto got = cl->range(r);
        if (!got) st = got.error();
      } else {
        auto got = cl->put(put(call.key, call.value));
        if (!got) st = got.error();
      }
      call.ret = now_ns();
      call.ok = st.ok();
      if (!st.ok()) {
        call.code = st.error().code;
        call.message = st.error().message;
        ++*errors_by_member[m];
        if (call.invoke >= mark) ++*errors_after_mark[m];
        if (call.code == ErrorCode::internal) cl.reset();  // the connection failed
      } else if (!is_reader) {
        ++*acked_by_member[m];
      }
      logs[t].push_back(std::move(call));
    }
  }

  int acked(const std::vector<int>& members) const {
    int n = 0;
    for (int m : members)
      n += *acked_by_member[m];
    return n;
  }
};

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

std::string describe(const client::StatusInfo& s) {
  return s.name + ": role " + s.role + ", term " + std::to_string(s.raft_term) + ", leader " +
         s.leader_name + ", commit " + std::to_string(s.commit_index) + ", applied " +
         std::to_string(s.applied_index);
}

// Waits until member `old` is a follower of `leader` in the leader's current term.
bool wait_follows(KeelCluster& c, int old, int leader, std::string* last) {
  return wait_until(
      [&] {
        auto o = c.status(old);
        auto l = c.status(leader);
        if (!o || !l) return false;
        *last = describe(*o) + " / " + describe(*l);
        return o->role == "follower" && o->leader == l->member_id && l->role == "leader" &&
               o->raft_term == l->raft_term;
      },
      20s);
}

// After the load stopped: every member applies up to the leader's commit index; then each
// member's local replica (serializable read) holds every acknowledged put. Returns what is
// missing, "member: key=value" per line. Every put has its own key, so a put answered
// unavailable or overloaded ("not applied") must be absent everywhere: those found are added
// to *refused_but_applied; and every key must have version 1 (one put each): a key put more
// than once means a write was applied twice (*applied_twice).
std::vector<std::string> missing_acked(KeelCluster& c, int leader,
                                       const std::vector<std::vector<Call>>& logs,
                                       std::vector<std::string>* refused_but_applied,
                                       std::vector<std::string>* applied_twice) {
  std::vector<std::string> missing;
  auto l = c.status(leader);
  if (!l) return {"the leader does not answer status"};
  const uint64_t commit = l->commit_index;
  for (int i = 0; i < c.size(); ++i) {
    const bool caught_up = wait_until(
        [&] {
          auto s = c.status(i);
          return s && s->applied_index >= commit;
        },
        20s);
    if (!caught_up) {
      missing.push_back(c.name(i) + ": did not apply up to index " + std::to_string(commit));
      continue;
    }
    auto cl = c.member(i).client();
    if (!cl) {
      missing.push_back(c.name(i) + ": no client connection");
      continue;
    }
    std::map<std::string, std::string> held;
    storage::RangeRequest r;
    r.key = "s/";
    r.range_end = storage::prefix_end("s/");
    r.serializable = true;
    auto got = cl->range_all(r, [&](const storage::KeyValue& kv) {
      held[kv.key] = kv.value;
      if (kv.version != 1) {
        applied_twice->push_back(c.name(i) + ": " + kv.key + " version " +
                                 std::to_string(kv.version) + ", create revision " +
                                 std::to_string(kv.create_revision) + ", mod revision " +
                                 std::to_string(kv.mod_revision));
      }
    });
    if (!got) {
      missing.push_back(c.name(i) + ": range failed: " + got.error().message);
      continue;
    }
    for (const auto& log : logs) {
      for (const auto& call : log) {
        if (call.read) continue;
        if (!call.ok) {
          if ((call.code == ErrorCode::unavailable || call.code == ErrorCode::overloaded) &&
              held.count(call.key)) {
            refused_but_applied->push_back(c.name(i) + ": " + call.key + " (" +
                                           error_code_name(call.code) + ": " + call.message + ")");
          }
          continue;
        }
        auto it = held.find(call.key);
        if (it == held.end() || it->second != call.value) {
          missing.push_back(c.name(i) + ": " + call.key + "=" + call.value);
        }
      }
    }
  }
  return missing;
}

std::string first_lines(const std::vector<std::string>& lines, size_t n) {
  std::string s;
  for (size_t i = 0; i < lines.size() && i < n; ++i)
    s += lines[i] + "\n";
  if (lines.size() > n) s += "... " + std::to_string(lines.size() - n) + " more\n";
  return s;
}

std::vector<int> others(int n, int but) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i)
    if (i != but) v.push_back(i);
  return v;
}

}  // namespace

// On the test's main thread, after the load stopped: every acknowledged put is on every
// member, none answered "not applied" was applied, none was applied twice, and the members
// are at one revision (see missing_acked).
void check_converged(KeelCluster& c, int leader, const Load& load) {
  std::vector<std::string> refused;
  std::vector<std::string> twice;
  const auto missing = missing_acked(c, leader, load.logs, &refused, &twice);
  {
    INFO("missing (first 20):\n" << first_lines(missing, 20));
    CHECK(missing.empty());
  }
  {
    INFO("answered \"not applied\" but applied (first 20):\n" << first_lines(refused, 20));
    CHECK(refused.empty());
  }
  {
    INFO("applied more than once (first 20):\n" << first_lines(twice, 20));
    CHECK(twice.empty());
  }
  std::set<int64_t> revisions;
  for (int i = 0; i < 3; ++i) {
    auto s = c.status(i);
    REQUIRE(s);
    revisions.insert(s->revision);
  }
  CHECK(revisions.size() == 1);
}

TEST_CASE(
    "SIGSTOP of the leader past the election timeout: the others elect a leader and commit, "
    "the old leader steps down and follows in the new term, no acknowledged write is lost",
    "[integration][cluster][fault][sigstop]") {
  // Run twice: the resumed member catches up from the log, then (a 100-entry retained log,
  // compacted past 200 applied entries while it is stopped) from a streamed snapshot that
  // replaces its uncommitted tail.
  const bool small_log = GENERATE(false, true);
  INFO((small_log ? "retained log: 100 entries (catch-up by snapshot)" : "retained log: default"));
  TempDir dir;
  // tick 20 ms, election timeout 10 ticks (200-400 ms randomized), as kFastRaft.
  KeelCluster c(dir.path, 3,
                std::string("[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
                            "request_timeout_ms = 5000\n") +
                    (small_log ? "log_retain_entries = 100\n" : "") +
                    "[storage]\ncache_size_mb = 32\n");
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  const int old = *leader;
  const auto rest = others(3, old);
  auto before = c.status(old);
  REQUIRE(before);
  const pid_t old_pid = c.member(old).pid();

  Load load(c);
  // Two writers through each other member, three through the leader (their calls block while it
  // is stopped and are answered after SIGCONT: success only if really committed).
  load.plan({rest[0], rest[1], rest[0], rest[1], old, old, old});
  {
    Workers w([&] {
      load.stop = true;
      ::kill(old_pid, SIGCONT);
    });
    for (size_t t = 0; t < load.target.size(); ++t)
      w.spawn([&load, t] { load.run(t); });
    REQUIRE(wait_until([&] { return load.acked({0, 1, 2}) >= 100; }, 30s));

    REQUIRE(::kill(old_pid, SIGSTOP) == 0);
    // Stopped for longer than the election timeout: stays stopped until the others have
    // elected a new leader and committed writes without it.
    auto next = c.wait_leader_among(rest, 20s);
    REQUIRE(next);
    CHECK(*next != old);
    auto elected = c.status(*next);
    REQUIRE(elected);
    INFO("new leader " << describe(*elected) << "; old leader was in term " << before->raft_term);
    CHECK(elected->raft_term > before->raft_term);
    const int acked_at_election = load.acked(rest);
    CHECK(wait_until(
        [&] { return load.acked(rest) >= acked_at_election + (small_log ? 400 : 200); }, 30s));

    REQUIRE(::kill(old_pid, SIGCONT) == 0);
    std::string seen;
    const bool follows = wait_follows(c, old, *next, &seen);
    INFO("old leader / new leader: " << seen);
    CHECK(follows);
    // Pre-vote and check-quorum: the resumed member does not disrupt the new leader.
    auto after = c.status(*next);
    REQUIRE(after);
    CHECK(after->role == "leader");
    CHECK(after->raft_term == elected->raft_term);
    // Writes through the old leader work again (forwarded).
    const int via_old = *load.acked_by_member[old];
    CHECK(wait_until([&] { return *load.acked_by_member[old] >= via_old + 20; }, 30s));
    load.stop = true;
    REQUIRE(w.join_within(60s));
    CHECK(w.errors().empty());
  }
  auto final_leader = c.wait_leader();
  REQUIRE(final_leader);
  std::vector<std::string> refused;
  std::vector<std::string> twice;
  const auto missing = missing_acked(c, *final_leader, load.logs, &refused, &twice);
  size_t acked = 0;
  for (const auto& log : load.logs)
    for (const auto& call : log)
      acked += call.ok;
  {
    INFO(acked << " acknowledged puts; missing (first 20):\n" << first_lines(missing, 20));
    CHECK(missing.empty());
  }
  {
    INFO("answered \"not applied\" but applied (first 20):\n" << first_lines(refused, 20));
    CHECK(refused.empty());
  }
  {
    INFO("applied more than once (first 20):\n" << first_lines(twice, 20));
    CHECK(twice.empty());
  }
  if (small_log) {
    INFO(c.member(old).log());
    CHECK(c.member(old).log().find("installed the snapshot") != std::string::npos);
  }
}

TEST_CASE(
    "netns partition of the leader: its clients get errors and never a stale success, the "
    "majority elects a leader and commits, and once healed the old leader follows and "
    "converges (SKIPPED with a warning where network namespaces cannot be created)",
    "[integration][cluster][fault][netns]") {
  if (auto why = NetLab::unavailable()) {
    WARN("SKIPPED: network namespaces are not usable here: " << *why);
    return;
  }
  NetLab lab(3);
  INFO(lab.error());
  REQUIRE(lab.error().empty());
  // Run twice: the healed member catches up from the log, then from a streamed snapshot.
  const bool small_log = GENERATE(false, true);
  INFO((small_log ? "retained log: 100 entries (catch-up by snapshot)" : "retained log: default"));
  TempDir dir;
  // Short waits so that the partitioned member's clients are answered within the test.
  const std::string config =
      std::string(
          "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 1000\n"
          "request_timeout_ms = 2000\n") +
      (small_log ? "log_retain_entries = 100\n" : "") + "[storage]\ncache_size_mb = 32\n";
  KeelCluster c(dir.path, 3, config, ClusterNet{lab.hosts(), lab.netns(), 2380});
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  const int old = *leader;
  const auto rest = others(3, old);
  auto before = c.status(old);
  REQUIRE(before);

  Load load(c);
  load.plan({rest[0], rest[1], old, old}, old);
  uint64_t cut_done = 0, heal_start = 0;
  {
    Workers w([&] {
      load.stop = true;
      lab.heal(old);
    });
    for (size_t t = 0; t < load.target.size(); ++t)
      w.spawn([&load, t] { load.run(t); });
    REQUIRE(wait_until([&] { return load.acked({0, 1, 2}) >= 100; }, 30s));

    REQUIRE(lab.cut(old));
    cut_done = now_ns();
    load.mark = cut_done;
    auto next = c.wait_leader_among(rest, 20s);
    REQUIRE(next);
    CHECK(*next != old);
    const int acked_at_election = load.acked(rest);
    CHECK(wait_until(
        [&] { return load.acked(rest) >= acked_at_election + (small_log ? 400 : 200); }, 30s));
    // The cut-off member's clients are answered with errors (bounded by
    // raft.request_timeout_ms and raft.leader_wait_ms) for calls made after the cut, and it
    // no longer calls itself leader.
    CHECK(wait_until([&] { return *load.errors_after_mark[old] >= 3; }, 30s));
    std::string seen;
    const bool stepped_down = wait_until(
        [&] {
          auto s = c.status(old);
          if (s) seen = describe(*s);
          return s && s->role != "leader";
        },
        20s);
    {
      INFO("cut-off member: " << seen);
      CHECK(stepped_down);
    }

    heal_start = now_ns();
    REQUIRE(lab.heal(old));
    const bool follows = wait_follows(c, old, *next, &seen);
    INFO("old leader / new leader: " << seen);
    CHECK(follows);
    const int via_old = *load.acked_by_member[old];
    CHECK(wait_until([&] { return *load.acked_by_member[old] >= via_old + 20; }, 30s));
    load.stop = true;
    REQUIRE(w.join_within(60s));
    CHECK(w.errors().empty());
  }

  // Through the cut-off member, between the cut and the heal: nothing called after the cut
  // succeeded (no quorum can confirm it), and every error is a typed "not now" or "maybe".
  std::vector<std::string> stale, odd;
  std::map<std::string, int> codes;
  for (const auto& log : load.logs) {
    for (const auto& call : log) {
      if (call.member != old || call.invoke < cut_done || call.ret > heal_start) continue;
      const std::string what = (call.read ? "get " : "put ") + call.key + " [" +
                               std::to_string((call.invoke - cut_done) / 1000000) + " ms, " +
                               std::to_string((call.ret - cut_done) / 1000000) +
                               " ms after the cut]";
      if (call.ok) {
        stale.push_back(what);
        continue;
      }
      codes[error_code_name(call.code)]++;
      if (call.code != ErrorCode::unavailable && call.code != ErrorCode::outcome_unknown &&
          call.code != ErrorCode::overloaded)
        odd.push_back(what + ": " + error_code_name(call.code) + ": " + call.message);
    }
  }
  std::string summary;
  for (const auto& [code, n] : codes)
    summary += code + " x" + std::to_string(n) + " ";
  INFO("errors through the cut-off member during the partition: " << summary);
  {
    INFO("stale successes (first 20):\n" << first_lines(stale, 20));
    CHECK(stale.empty());
  }
  {
    INFO("unexpected errors (first 20):\n" << first_lines(odd, 20));
    CHECK(odd.empty());
  }
  CHECK(!codes.empty());

  // Converged: every member holds every acknowledged put, and all are at one revision.
  auto final_leader = c.wait_leader();
  REQUIRE(final_leader);
  check_converged(c, *final_leader, load);
  if (small_log) {
    INFO(c.member(old).log());
    CHECK(c.member(old).log().find("installed the snapshot") != std::string::npos);
  }
}

TEST_CASE(
    "kill -9 of a member while it receives a streamed snapshot, three times, then restart: it "
    "converges and holds every acknowledged write",
    "[integration][cluster][fault][snapshot]") {
  TempDir dir;
  // A 100-entry retained log and 4 KiB chunks: a member that missed a few hundred writes is
  // caught up by a snapshot of 1-2 MB in hundreds of chunks, long enough to be killed in it.
  KeelCluster c(dir.path, 3,
                "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
                "request_timeout_ms = 5000\nlog_retain_entries = 100\n"
                "snapshot_chunk_bytes = 4096\nsnapshot_window_chunks = 2\n"
                // Short, in case a dead transfer is only timed out (see the test below).
                "snapshot_timeout_ms = 1000\n"
                "[storage]\ncache_size_mb = 32\n");
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  const int victim = (*leader + 1) % 3;
  const auto rest = others(3, victim);
  Load load(c);
  load.pad = std::string(1000, 'x');
  load.plan({rest[0], rest[1], rest[0], rest[1]});
  int receiving = 0;
  {
    Workers w([&] { load.stop = true; });
    for (size_t t = 0; t < load.target.size(); ++t)
      w.spawn([&load, t] { load.run(t); });
    REQUIRE(wait_until([&] { return load.acked(rest) >= 800; }, 60s));
    c.member(victim).kill9();
    c.running[victim] = false;
    for (int round = 0; round < 3; ++round) {
      const int acked = load.acked(rest);
      REQUIRE(wait_until([&] { return load.acked(rest) >= acked + 250; }, 60s));
      const size_t seen = c.member(victim).log().size();
      REQUIRE(c.start(victim));
      // Killed as soon as it logs that a snapshot is coming (bounded: if it never does, the
      // round ends after the deadline and the member is killed anyway).
      if (wait_until(
              [&] {
                return c.member(victim).log().find("receiving a snapshot", seen) !=
                       std::string::npos;
              },
              20s))
        ++receiving;
      c.member(victim).kill9();
      c.running[victim] = false;
    }
    const int acked = load.acked(rest);
    REQUIRE(wait_until([&] { return load.acked(rest) >= acked + 250; }, 60s));
    REQUIRE(c.start(victim));
    load.stop = true;
    REQUIRE(w.join_within(60s));
    CHECK(w.errors().empty());
  }
  CHECK(receiving == 3);
  auto final_leader = c.wait_leader();
  REQUIRE(final_leader);
  check_converged(c, *final_leader, load);
  const std::string log = c.member(victim).log();
  INFO(log.substr(log.size() > 6000 ? log.size() - 6000 : 0));
  CHECK(log.find("installed the snapshot") != std::string::npos);
}

// A member killed while it receives a streamed snapshot and restarted must be sent a new
// snapshot without the leader first timing out the dead transfer for want of
// acknowledgements (raft.snapshot_timeout_ms later): until then it stays behind, and the
// cluster one failure from unavailable. Found by this test before main's 7e374e1 ("a snapshot
// transfer whose connection dropped is abandoned at once"), which fixed it. The check is on
// the order of events, not on time: when the restarted member logs that a new snapshot is
// coming, the leader must not have timed the old transfer out.
TEST_CASE(
    "a member killed during a snapshot transfer and restarted gets a new snapshot without the "
    "leader first timing out the dead transfer",
    "[integration][cluster][fault][snapshot]") {
  TempDir dir;
  KeelCluster c(dir.path, 3,
                "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 5000\n"
                "request_timeout_ms = 5000\nlog_retain_entries = 100\n"
                "snapshot_chunk_bytes = 4096\nsnapshot_window_chunks = 2\n"
                "snapshot_timeout_ms = 4000\n[storage]\ncache_size_mb = 32\n");
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  const int victim = (*leader + 1) % 3;
  const auto rest = others(3, victim);
  Load load(c);
  load.pad = std::string(1000, 'x');
  load.plan({rest[0], rest[1], rest[0], rest[1]});
  bool second_transfer = false;
  std::string leader_log;
  {
    Workers w([&] { load.stop = true; });
    for (size_t t = 0; t < load.target.size(); ++t)
      w.spawn([&load, t] { load.run(t); });
    REQUIRE(wait_until([&] { return load.acked(rest) >= 800; }, 60s));
    c.member(victim).kill9();
    c.running[victim] = false;
    int acked = load.acked(rest);
    REQUIRE(wait_until([&] { return load.acked(rest) >= acked + 250; }, 60s));
    size_t seen = c.member(victim).log().size();
    REQUIRE(c.start(victim));
    REQUIRE(wait_until(
        [&] {
          return c.member(victim).log().find("receiving a snapshot", seen) != std::string::npos;
        },
        20s));
    c.member(victim).kill9();  // in the middle of the transfer (hundreds of 4 KiB chunks)
    c.running[victim] = false;
    acked = load.acked(rest);
    REQUIRE(wait_until([&] { return load.acked(rest) >= acked + 250; }, 60s));
    auto l = c.wait_leader_among(rest, 20s);
    REQUIRE(l);
    const size_t leader_seen = c.member(*l).log().size();
    seen = c.member(victim).log().size();
    REQUIRE(c.start(victim));
    second_transfer = wait_until(
        [&] {
          return c.member(victim).log().find("receiving a snapshot", seen) != std::string::npos;
        },
        30s);
    leader_log = c.member(*l).log().substr(leader_seen);
    load.stop = true;
    REQUIRE(w.join_within(60s));
  }
  REQUIRE(second_transfer);
  INFO("leader's log after the restart:\n" << leader_log.substr(0, 4000));
  CHECK(leader_log.find("abandoned: no acknowledgement") == std::string::npos);
}

// Where the contract "unavailable = not applied" meets a snapshot. The leader's inbound
// frames are dropped (netns, tc): its appends still reach the followers, their answers do
// not, so it never learns that its last writes committed. It steps down (check-quorum), a
// follower that holds those writes is elected and commits them, and compacts its log (100
// retained entries); healed, the old leader may be caught up by a snapshot that covers them.
// Its clients' writes must end as success (or outcome_unknown), never as unavailable: each
// put has its own key, so a put answered "not applied" must be absent from every member.
//
// This failed every run until installed_snapshot ended such writes as outcome_unknown
// (cluster/node/node.cpp): they were answered "not applied" though the snapshot held them.
// (Without reset_tcp below the old leader usually gets those entries by append, from the new
// leader's first appends still in TCP's retransmission queue.)
TEST_CASE(
    "a deposed leader whose writes a snapshot covers never answers them unavailable (not "
    "applied) (netns, SKIPPED with a warning where network namespaces cannot be created)",
    "[integration][cluster][fault][netns][snapshot]") {
  if (auto why = NetLab::unavailable()) {
    WARN("SKIPPED: network namespaces are not usable here: " << *why);
    return;
  }
  if (!NetLab::has_tc()) {
    WARN("SKIPPED: `tc` is not installed (needed for a one-way cut)");
    return;
  }
  NetLab lab(3);
  INFO(lab.error());
  REQUIRE(lab.error().empty());
  TempDir dir;
  // A long request timeout: the old leader's pending writes outlive the whole scenario, so
  // they are answered by what happens to them, not by the deadline.
  const std::string config =
      "[raft]\ntick_ms = 20\nelection_ticks = 10\nleader_wait_ms = 1000\n"
      "request_timeout_ms = 30000\nlog_retain_entries = 100\n[storage]\ncache_size_mb = 32\n";
  KeelCluster c(dir.path, 3, config, ClusterNet{lab.hosts(), lab.netns(), 2380});
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  const int old = *leader;
  const auto rest = others(3, old);
  Load via_old(c), via_rest(c);
  via_old.tag = "old";
  via_rest.tag = "rest";
  via_old.plan({old, old, old, old});
  via_rest.plan({rest[0], rest[1], rest[0], rest[1]});
  std::vector<std::vector<Call>> logs;
  uint64_t cut_done = 0;
  {
    Workers w([&] {
      via_old.stop = true;
      via_rest.stop = true;
      lab.heal(old);
    });
    for (size_t t = 0; t < via_old.target.size(); ++t)
      w.spawn([&via_old, t] { via_old.run(t); });
    REQUIRE(wait_until([&] { return via_old.acked({old}) >= 200; }, 30s));
    REQUIRE(lab.cut(old, NetLab::Cut::inbound));
    cut_done = now_ns();
    auto next = c.wait_leader_among(rest, 20s);
    REQUIRE(next);
    // The majority commits and compacts past the old leader's log (writers start now, so
    // none of them waits on a proposal forwarded to the cut-off member).
    for (size_t t = 0; t < via_rest.target.size(); ++t)
      w.spawn([&via_rest, t] { via_rest.run(t); });
    CHECK(wait_until([&] { return via_rest.acked(rest) >= 400; }, 30s));
    // The peers' connections to it end (as in a long partition): the appends they queued
    // for it in the new term are gone, so it is caught up from scratch, by a snapshot.
    lab.reset_tcp(old);
    REQUIRE(lab.heal(old));
    std::string seen;
    const bool follows = wait_follows(c, old, *next, &seen);
    INFO("old leader / new leader: " << seen);
    CHECK(follows);
    const int acked_old = via_old.acked({old});
    CHECK(wait_until([&] { return via_old.acked({old}) >= acked_old + 20; }, 30s));
    via_old.stop = true;
    via_rest.stop = true;
    REQUIRE(w.join_within(60s));
    CHECK(w.errors().empty());
  }
  // What the old leader's writes in flight at the cut were answered (for the record).
  std::map<std::string, int> in_flight;
  for (const auto& log : via_old.logs) {
    for (const auto& call : log) {
      if (call.invoke < cut_done && call.ret > cut_done)
        in_flight[call.ok ? "ok" : error_code_name(call.code)]++;
    }
  }
  std::string answers;
  for (const auto& [k, n] : in_flight)
    answers += k + " x" + std::to_string(n) + " ";
  INFO("the old leader's writes in flight at the cut were answered: " << answers);
  logs = via_old.logs;
  logs.insert(logs.end(), via_rest.logs.begin(), via_rest.logs.end());
  auto final_leader = c.wait_leader();
  REQUIRE(final_leader);
  std::vector<std::string> refused;
  std::vector<std::string> twice;
  const auto missing = missing_acked(c, *final_leader, logs, &refused, &twice);
  {
    INFO("missing (first 20):\n" << first_lines(missing, 20));
    CHECK(missing.empty());
  }
  {
    INFO("answered \"not applied\" but applied (first 20):\n" << first_lines(refused, 20));
    CHECK(refused.empty());
  }
  {
    INFO("applied more than once (first 20):\n" << first_lines(twice, 20));
    CHECK(twice.empty());
  }
  const std::string log = c.member(old).log();
  INFO(log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
  CHECK(log.find("installed the snapshot") != std::string::npos);
}
