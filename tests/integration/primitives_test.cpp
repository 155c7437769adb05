// Leases and locks on a 3-member cluster of real keeld processes, driven through keelctl (and
// the client library for polling): a dead client's lock passes on at once, a dead agent's only
// after its TTL, a leader failover keeps holder, token and remaining TTL, stale fencing tokens
// are refused, `lock -- CMD` stops its command when the lock is lost, lease expiry deletes
// keys in one revision, bad input gets typed errors, and a dead client's session lease goes.
//
// Every keelctl a test leaves running is a Proc (fork/exec, stdout/stderr to files in the
// test's temp dir), killed by PID when the Proc goes; every wait is bounded; assertions run
// on the main thread only (no threads here at all).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "cluster_harness.hpp"
#include "lock_helpers.hpp"
#include "proc.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

struct Held {
  int64_t token = 0;
  int64_t lease = 0;
};

// Waits (bounded) for `keelctl lock NAME` (no command) to print "NAME token=T lease=L".
std::optional<Held> wait_held(Proc& p, const std::string& name,
                              std::chrono::milliseconds deadline = 15s) {
  const std::regex line("(^|\n)" + name + " token=([0-9]+) lease=([0-9]+)\n");
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    std::smatch m;
    const std::string out = p.out();
    if (std::regex_search(out, m, line)) return Held{std::stoll(m[2]), std::stoll(m[3])};
    if (!p.running()) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  return std::nullopt;
}

// Waits (bounded) until `path` holds a complete line; returns it without the newline.
std::optional<std::string> wait_line(const std::string& path, std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    std::string s = read_file(path);
    if (!s.empty() && s.back() == '\n') {
      s.pop_back();
      return s;
    }
    std::this_thread::sleep_for(5ms);
  }
  return std::nullopt;
}

// Any live (not zombie) process in process group `pgid`.
bool group_alive(pid_t pgid) {
  DIR* d = opendir("/proc");
  if (d == nullptr) return ::kill(-pgid, 0) == 0;
  bool alive = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string stat = read_file(std::string("/proc/") + e->d_name + "/stat");
    auto rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    std::istringstream rest(stat.substr(rp + 2));
    char state = 0;
    long ppid = 0, pgrp = 0;
    rest >> state >> ppid >> pgrp;
    if (pgrp == pgid && state != 'Z' && state != 'X') {
      alive = true;
      break;
    }
  }
  closedir(d);
  return alive;
}

std::optional<std::string> get_value(Keeld& member, const std::string& key) {
  auto c = member.client();
  if (!c) return std::nullopt;
  storage::RangeRequest r;
  r.key = key;
  auto got = c->range(r);
  if (!got || got->kvs.empty()) return std::nullopt;
  return got->kvs[0].value;
}

// `lease timetolive ID -w json` through keelctl, retried (bounded) while the member has no
// leader yet; the remaining_ms it printed, or nullopt (last run in *last).
std::optional<int64_t> remaining_ms(const std::string& socket, int64_t lease, Run* last,
                                    std::chrono::milliseconds deadline = 10s) {
  const std::regex field("\"remaining_ms\":\"([0-9]+)\"");
  const auto until = Clock::now() + deadline;
  for (;;) {
    *last = keelctl(socket, {"lease", "timetolive", std::to_string(lease), "-w", "json"});
    std::smatch m;
    if (last->status == 0 && std::regex_search(last->out, m, field)) return std::stoll(m[1]);
    if (Clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(50ms);
  }
}

// SIGTERM to a `keelctl lock -- CMD`: it passes the signal to its command's group, waits for
// it and unlocks; the Proc's SIGKILL (and the command's PR_SET_PDEATHSIG) if it does not.
void stop_waiter(Proc& p) {
  p.signal(SIGTERM);
  if (!p.wait_exit(10s)) p.kill9();
}

}  // namespace

TEST_CASE("kill -9 of a lock holder's client passes the lock to the next waiter at once",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  Keeld& a = c.member(r.followers[0]);
  Keeld& b = c.member(r.followers[1]);

  auto holder = Proc::keelctl(a.socket(), {"lock", "job", "--ttl", "30"}, dir.path, "holder");
  auto held = wait_held(*holder, "job");
  INFO("holder stderr: " << holder->err());
  REQUIRE(held);
  const std::string file = dir.path + "/waiter.txt";
  auto waiter = Proc::keelctl(b.socket(),
                              {"lock", "job", "--ttl", "30", "--", "sh", "-c",
                               "echo got $KEEL_LOCK_TOKEN > " + file + "; exec sleep 60"},
                              dir.path, "waiter");
  // The waiter's lock request is in the queue before the holder dies.
  REQUIRE(wait_lease_on_lock(b, "job", {held->lease}));
  REQUIRE_FALSE(std::filesystem::exists(file));

  const auto t0 = Clock::now();
  holder->kill9();
  auto line = wait_line(file, 10s);  // far below the 30 s TTL
  const double handoff = seconds_since(t0);
  INFO("waiter stderr: " << waiter->err());
  REQUIRE(line);
  std::printf("primitives: hand-off after kill -9 of the holder's client: %.3f s\n", handoff);
  REQUIRE(line->rfind("got ", 0) == 0);
  const int64_t token = std::stoll(line->substr(4));
  CHECK(token > held->token);
  CHECK(handoff < 10.0);
  // The holder's lease went with its connection: the lock's new holder is the waiter.
  CHECK(keelctl(a.socket(), {"check-fence", "job", std::to_string(token)}).status == 0);
  CHECK(keelctl(a.socket(), {"check-fence", "job", std::to_string(held->token)}).status == 1);
  stop_waiter(*waiter);
}

TEST_CASE("kill -9 of the holder's agent passes the lock only after the lease TTL",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const int x = r.followers[0], y = r.followers[1];
  const int64_t ttl_ms = 4000;

  auto holder =
      Proc::keelctl(c.member(x).socket(), {"lock", "job", "--ttl", "4"}, dir.path, "holder");
  auto held = wait_held(*holder, "job");
  INFO("holder stderr: " << holder->err());
  REQUIRE(held);
  const std::string file = dir.path + "/waiter.txt";
  auto waiter = Proc::keelctl(c.member(y).socket(),
                              {"lock", "job", "--ttl", "30", "--", "sh", "-c",
                               "echo got $KEEL_LOCK_TOKEN > " + file + "; exec sleep 60"},
                              dir.path, "waiter");
  REQUIRE(wait_lease_on_lock(c.member(y), "job", {held->lease}));

  // Kill X right after a renewal of the holder's lease has been applied (its remaining TTL
  // went up), so the lease's end is ~TTL after the kill and the lower bound below is exact
  // to the polling interval.
  auto cy = c.member(y).client();
  REQUIRE(cy);
  int64_t prev = -1, renewed_at = -1;
  const auto until = Clock::now() + 8s;
  while (Clock::now() < until) {
    auto info = cy->lease_time_to_live(held->lease, false);
    if (!info) {  // a transient failure: ask again
      std::this_thread::sleep_for(10ms);
      continue;
    }
    if (prev >= 0 && info->remaining_ms > prev) {
      renewed_at = info->remaining_ms;
      break;
    }
    prev = info->remaining_ms;
    std::this_thread::sleep_for(10ms);
  }
  INFO("remaining before the renewal " << prev << " ms, after " << renewed_at << " ms");
  REQUIRE(renewed_at > 0);
  const auto t0 = Clock::now();
  c.member(x).kill9();
  c.running[x] = false;
  cy.reset();

  auto line = wait_line(file, std::chrono::milliseconds(ttl_ms) + 10s);
  const double elapsed = seconds_since(t0);
  INFO("waiter stderr: " << waiter->err());
  REQUIRE(line);
  std::printf("primitives: hand-off after kill -9 of the holder's agent: %.3f s (TTL %.1f s)\n",
              elapsed, ttl_ms / 1000.0);
  // The correctness property: the holder's lease did not end early.
  CHECK(elapsed >= ttl_ms / 1000.0 - 1.0);
  REQUIRE(line->rfind("got ", 0) == 0);
  CHECK(std::stoll(line->substr(4)) > held->token);
  // The holder's keelctl lost its agent: it says so and exits non-zero.
  auto st = holder->wait_exit(10s);
  CHECK(st);
  if (st) CHECK(*st != 0);
  stop_waiter(*waiter);
}

TEST_CASE("kill -9 of the leader keeps the lock's holder, token and remaining TTL",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const int f = r.followers[0], other = r.followers[1];
  const std::string fs = c.member(f).socket();

  auto grant = keelctl(fs, {"lease", "grant", "60", "-w", "json"});
  INFO("grant: " << grant.out << grant.err);
  REQUIRE(grant.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(grant.out, m, std::regex("\"id\":\"([0-9]+)\"")));
  const int64_t lease = std::stoll(m[1]);
  auto holder =
      Proc::keelctl(fs, {"lock", "job", "--lease", std::to_string(lease)}, dir.path, "holder");
  auto held = wait_held(*holder, "job");
  INFO("holder stderr: " << holder->err());
  REQUIRE(held);
  REQUIRE(held->lease == lease);
  // Let cluster time move past the grant's stamp, so "reset to the full TTL" is visible.
  std::this_thread::sleep_for(1500ms);

  Run last;
  auto before = remaining_ms(fs, lease, &last);
  INFO("timetolive: " << last.out << last.err);
  REQUIRE(before);
  const auto t_before = Clock::now();
  c.member(r.leader).kill9();
  c.running[r.leader] = false;
  auto new_leader = c.wait_leader_among({f, other}, 20s);
  REQUIRE(new_leader);
  auto after = remaining_ms(fs, lease, &last);
  const double elapsed = seconds_since(t_before);
  INFO("timetolive: " << last.out << last.err);
  REQUIRE(after);
  std::printf(
      "primitives: remaining TTL before the failover %lld ms, after %lld ms (%.3f s between "
      "the reads; new leader %s)\n",
      static_cast<long long>(*before), static_cast<long long>(*after), elapsed,
      c.name(*new_leader).c_str());
  CHECK(*after < 60000);     // not reset to the full TTL
  CHECK(*after <= *before);  // nor renewed by the failover
  CHECK(*after >= *before - static_cast<int64_t>((elapsed + 2.0) * 1000));  // nor shortened
  CHECK(last.out.find("\"locks\":[\"job\"]") != std::string::npos);
  // Cluster time moves again under the new leader: the lease still counts down.
  std::optional<int64_t> later;
  const auto until = Clock::now() + 5s;
  while (Clock::now() < until) {
    later = remaining_ms(fs, lease, &last);
    if (later && *later < *after) break;
    std::this_thread::sleep_for(100ms);
  }
  INFO("timetolive later: " << last.out << last.err);
  REQUIRE(later);
  std::printf("primitives: remaining TTL under the new leader later: %lld ms\n",
              static_cast<long long>(*later));
  CHECK(*later < *after);

  // Same holder, same token, on both survivors; the holder never saw a loss.
  for (int i : {f, other}) {
    auto fence = keelctl(c.member(i).socket(), {"check-fence", "job", std::to_string(held->token)});
    INFO("member " << c.name(i) << ": " << fence.out << fence.err);
    CHECK(fence.status == 0);
  }
  CHECK(holder->running());
  INFO("holder stderr: " << holder->err());
  CHECK(holder->err().find("lost") == std::string::npos);
  holder->signal(SIGTERM);  // unlocks on the way out
  CHECK(holder->wait_exit(10s) == std::optional<int>(0));
  keelctl(fs, {"lease", "revoke", std::to_string(lease)});
}

TEST_CASE("a write with a stale fencing token is rejected as fenced", "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string s = c.member(r.followers[0]).socket();
  REQUIRE(keelctl(s, {"put", "k", "orig"}).status == 0);

  auto h1 = Proc::keelctl(s, {"lock", "job"}, dir.path, "h1");
  auto t1 = wait_held(*h1, "job");
  INFO("h1 stderr: " << h1->err());
  REQUIRE(t1);
  auto un = keelctl(s, {"unlock", "job", std::to_string(t1->lease)});
  INFO("unlock: " << un.out << un.err);
  REQUIRE(un.status == 0);
  // The first holder learns it lost the lock and exits 1.
  CHECK(h1->wait_exit(10s) == std::optional<int>(1));

  auto h2 = Proc::keelctl(c.member(r.leader).socket(), {"lock", "job"}, dir.path, "h2");
  auto t2 = wait_held(*h2, "job");
  INFO("h2 stderr: " << h2->err());
  REQUIRE(t2);
  CHECK(t2->token > t1->token);

  auto stale = keelctl(s, {"put", "k", "v1", "--fence", "job:" + std::to_string(t1->token)});
  INFO("stale put: " << stale.out << stale.err);
  CHECK(stale.status == 1);
  CHECK(stale.err.find("fenced") != std::string::npos);
  CHECK(get_value(c.member(r.followers[1]), "k") == std::optional<std::string>("orig"));

  auto fresh = keelctl(s, {"put", "k", "v2", "--fence", "job:" + std::to_string(t2->token)});
  INFO("current put: " << fresh.out << fresh.err);
  CHECK(fresh.status == 0);
  CHECK(get_value(c.member(r.followers[1]), "k") == std::optional<std::string>("v2"));

  auto old_fence = keelctl(s, {"check-fence", "job", std::to_string(t1->token)});
  INFO("check-fence T1: " << old_fence.out << old_fence.err);
  CHECK(old_fence.status == 1);
  CHECK(keelctl(s, {"check-fence", "job", std::to_string(t2->token)}).status == 0);
  h2->signal(SIGTERM);
  CHECK(h2->wait_exit(10s) == std::optional<int>(0));
}

TEST_CASE("lock -- CMD stops a SIGTERM-ignoring command within the grace when the lease is revoked",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string pidfile = dir.path + "/child.pid";
  auto holder = Proc::keelctl(c.member(r.followers[0]).socket(),
                              {"lock", "job", "--grace", "1", "--", "sh", "-c",
                               "trap '' TERM; echo $$ > " + pidfile + "; exec sleep 1000"},
                              dir.path, "holder");
  auto pid_line = wait_line(pidfile, 15s);
  INFO("holder stderr: " << holder->err());
  REQUIRE(pid_line);
  const pid_t child = std::stoi(*pid_line);
  REQUIRE(group_alive(child));

  // Another keelctl, on another member, finds the lock's lease and revokes it.
  const std::string other = c.member(r.followers[1]).socket();
  auto list = keelctl(other, {"lease", "list"});
  INFO("lease list: " << list.out << list.err);
  REQUIRE(list.status == 0);
  int64_t lease = 0;
  std::istringstream ids(list.out);
  for (std::string line; std::getline(ids, line);) {
    if (line.empty() || !std::isdigit(static_cast<unsigned char>(line[0]))) continue;
    auto ttl = keelctl(other, {"lease", "timetolive", line});
    if (ttl.status == 0 && ttl.out.find("lock job\n") != std::string::npos)
      lease = std::stoll(line);
  }
  REQUIRE(lease != 0);
  const auto t0 = Clock::now();
  auto revoke = keelctl(other, {"lease", "revoke", std::to_string(lease)});
  INFO("revoke: " << revoke.out << revoke.err);
  REQUIRE(revoke.status == 0);
  const auto until = t0 + 6s;  // grace 1 s + 5 s
  while (group_alive(child) && Clock::now() < until)
    std::this_thread::sleep_for(5ms);
  const double gone = seconds_since(t0);
  const bool still_alive = group_alive(child);
  std::printf("primitives: command gone %.3f s after the revoke (grace 1 s)\n", gone);
  CHECK_FALSE(still_alive);
  CHECK(gone >= 0.9);  // it ignores SIGTERM: only the SIGKILL after the grace ends it
  auto st = holder->wait_exit(5s);
  INFO("holder stderr: " << holder->err());
  REQUIRE(st);
  CHECK(*st != 0);
  CHECK(holder->err().find("was lost") != std::string::npos);
  if (still_alive) ::kill(-child, SIGKILL);
}

TEST_CASE("lease expiry deletes its keys in one revision, seen by a watcher",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string s = c.member(r.followers[0]).socket();
  const std::string ws = c.member(r.followers[1]).socket();

  auto grant = keelctl(s, {"lease", "grant", "2", "-w", "json"});  // kept; keelctl exits
  const auto t_grant = Clock::now();
  INFO("grant: " << grant.out << grant.err);
  REQUIRE(grant.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(grant.out, m, std::regex("\"id\":\"([0-9]+)\"")));
  const std::string lease = m[1];
  auto p1 = keelctl(s, {"put", "exp/a", "1", "--lease", lease, "-w", "json"});
  INFO("put: " << p1.out << p1.err);
  REQUIRE(p1.status == 0);
  REQUIRE(std::regex_search(p1.out, m, std::regex("\"revision\":\"([0-9]+)\"")));
  const std::string first_rev = m[1];
  REQUIRE(keelctl(s, {"put", "exp/b", "2", "--lease", lease}).status == 0);
  // From the first put's revision: the watch cannot miss the deletes, however late it starts.
  auto watch = Proc::keelctl(ws,
                             {"watch", "exp/", "--prefix", "--rev", first_rev, "--no-put",
                              "--max-events", "2", "-w", "json"},
                             dir.path, "watch");
  auto st = watch->wait_exit(15s);
  const double elapsed = seconds_since(t_grant);
  INFO("watch: " << watch->out() << watch->err());
  REQUIRE(st);
  CHECK(*st == 0);
  std::printf("primitives: TTL 2 s lease's keys deleted and seen %.3f s after the grant\n",
              elapsed);
  CHECK(elapsed >= 1.5);  // not before its TTL

  const std::string out = watch->out();
  const std::regex event("\"type\":\"delete\".*\"mod_revision\":\"([0-9]+)\"");
  std::vector<std::string> revs;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch e;
    if (std::regex_search(line, e, event)) revs.push_back(e[1]);
  }
  REQUIRE(revs.size() == 2);
  CHECK(revs[0] == revs[1]);
  CHECK(std::stoll(revs[0]) > std::stoll(first_rev) + 1);  // after both puts
  CHECK(out.find("\"ZXhwL2E=\"") != std::string::npos);    // base64 of exp/a
  CHECK(out.find("\"ZXhwL2I=\"") != std::string::npos);    // base64 of exp/b

  auto ttl = keelctl(s, {"lease", "timetolive", lease});
  INFO("timetolive: " << ttl.out << ttl.err);
  CHECK(ttl.status == 1);
  CHECK(ttl.err.find("lease_not_found") != std::string::npos);
  auto left = keelctl(s, {"get", "exp/", "--prefix", "--count-only"});
  CHECK(left.out == "0\n");
}

TEST_CASE("bad lease and lock input gets a typed error naming what was wrong",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string s = c.member(r.followers[0]).socket();

  auto short_ttl = keelctl(s, {"lease", "grant", "1"});
  INFO("lease grant 1: " << short_ttl.out << short_ttl.err);
  CHECK(short_ttl.status == 1);
  CHECK(short_ttl.err.find("ttl_out_of_range") != std::string::npos);
  CHECK(short_ttl.err.find("1000") != std::string::npos);

  auto revoke = keelctl(s, {"lease", "revoke", "12345"});
  INFO("lease revoke 12345: " << revoke.out << revoke.err);
  CHECK(revoke.status == 1);
  CHECK(revoke.err.find("lease_not_found") != std::string::npos);
  CHECK(revoke.err.find("12345") != std::string::npos);

  auto put = keelctl(s, {"put", "k", "v", "--lease", "12345"});
  INFO("put --lease 12345: " << put.out << put.err);
  CHECK(put.status == 1);
  CHECK(put.err.find("lease_not_found") != std::string::npos);
  CHECK(put.err.find("12345") != std::string::npos);
  CHECK_FALSE(get_value(c.member(r.leader), "k"));

  auto holder = Proc::keelctl(c.member(r.leader).socket(), {"lock", "job"}, dir.path, "holder");
  auto held = wait_held(*holder, "job");
  INFO("holder stderr: " << holder->err());
  REQUIRE(held);

  auto unlock = keelctl(s, {"unlock", "job", "12345"});
  INFO("unlock job 12345: " << unlock.out << unlock.err);
  CHECK(unlock.status == 1);
  CHECK(unlock.err.find("lock_not_held") != std::string::npos);
  CHECK(unlock.err.find("12345") != std::string::npos);

  auto try_lock = keelctl(s, {"lock", "job", "--try"});
  INFO("lock job --try: " << try_lock.out << try_lock.err);
  CHECK(try_lock.status == 1);
  CHECK(try_lock.err.find("held") != std::string::npos);
  CHECK(keelctl(s, {"check-fence", "job", std::to_string(held->token)}).status == 0);
  CHECK(holder->running());
  holder->signal(SIGTERM);
  CHECK(holder->wait_exit(10s) == std::optional<int>(0));
}

TEST_CASE("kill -9 of a client revokes its session lease", "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string s = c.member(r.followers[0]).socket();
  const std::string other = c.member(r.followers[1]).socket();

  auto holder = Proc::keelctl(s, {"lock", "job", "--ttl", "30"}, dir.path, "holder");
  auto held = wait_held(*holder, "job");
  INFO("holder stderr: " << holder->err());
  REQUIRE(held);
  const std::string id = std::to_string(held->lease);
  auto listed = [&](Run* last) {
    *last = keelctl(other, {"lease", "list"});
    return last->out.find("\n" + id + "\n") != std::string::npos;
  };
  Run last;
  REQUIRE(listed(&last));

  const auto t0 = Clock::now();
  holder->kill9();
  bool still = true;
  while ((still = listed(&last)) && Clock::now() < t0 + 5s)  // far below the 30 s TTL
    std::this_thread::sleep_for(10ms);
  const double gone = seconds_since(t0);
  INFO("lease list: " << last.out << last.err);
  CHECK(last.status == 0);
  CHECK_FALSE(still);
  std::printf("primitives: session lease gone from lease list %.3f s after kill -9 of its client\n",
              gone);
  // Its lock went with it.
  auto fence = keelctl(other, {"check-fence", "job", std::to_string(held->token)});
  INFO("check-fence: " << fence.out << fence.err);
  CHECK(fence.status == 1);
}

TEST_CASE("a handle whose lock was taken away is told, and its unlock is a typed error",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  auto holder = c.member(r.followers[0]).client();
  auto other = c.member(r.followers[1]).client();
  REQUIRE(holder);
  REQUIRE(other);
  auto lease = holder->lease_grant(30000);
  REQUIRE(lease.ok());
  client::LockOptions lo;
  lo.lease = (*lease)->id();
  auto h = holder->lock("foreign", lo);
  REQUIRE(h.ok());
  REQUIRE(*h != nullptr);
  auto lost = (*h)->wait_lost(100);
  REQUIRE(lost.ok());
  CHECK_FALSE(*lost);
  // Someone else ends the holder's lease (an operator's `keelctl lease revoke`).
  REQUIRE(other->lease_revoke((*lease)->id()).ok());
  lost = (*h)->wait_lost(5000);
  REQUIRE(lost.ok());
  CHECK(*lost);  // told, without asking
  auto unlock = (*h)->unlock();
  REQUIRE_FALSE(unlock.ok());
  CHECK(unlock.error().code == ErrorCode::lock_not_held);
  CHECK(unlock.error().message.find("foreign") != std::string::npos);
  auto info = (*lease)->info(false);
  REQUIRE_FALSE(info.ok());
  CHECK(info.error().code == ErrorCode::lease_not_found);
  // The lock is free for the next holder, with a greater token.
  auto lease2 = other->lease_grant(30000);
  REQUIRE(lease2.ok());
  lo.lease = (*lease2)->id();
  lo.wait = false;
  auto h2 = other->lock("foreign", lo);
  REQUIRE(h2.ok());
  REQUIRE(*h2 != nullptr);
  CHECK((*h2)->token() > (*h)->token());
}

TEST_CASE("kill -9 of keelctl lock -- CMD stops its command and passes the lock on at once",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string pidfile = dir.path + "/child.pid";
  auto holder = Proc::keelctl(c.member(r.followers[0]).socket(),
                              {"lock", "job", "--ttl", "30", "--", "sh", "-c",
                               "echo $$ > " + pidfile + "; exec sleep 1000"},
                              dir.path, "holder");
  auto pid_line = wait_line(pidfile, 15s);
  INFO("holder stderr: " << holder->err());
  REQUIRE(pid_line);
  const pid_t child = std::stoi(*pid_line);
  REQUIRE(group_alive(child));
  auto waiter = Proc::keelctl(c.member(r.followers[1]).socket(), {"lock", "job", "--ttl", "30"},
                              dir.path, "waiter");
  REQUIRE(wait_lease_on_lock(c.member(r.followers[1]), "job", {}));
  const auto t0 = Clock::now();
  holder->kill9();  // keelctl dies: the kernel kills its command (PR_SET_PDEATHSIG)
  while (group_alive(child) && Clock::now() < t0 + 5s)
    std::this_thread::sleep_for(5ms);
  const bool still_alive = group_alive(child);
  CHECK_FALSE(still_alive);
  // And the agent saw the connection close: the lock passes well before the 30 s TTL.
  auto got = wait_held(*waiter, "job", 10s);
  INFO("waiter stderr: " << waiter->err());
  CHECK(got.has_value());
  std::printf("primitives: keelctl killed -> command gone and lock passed in %.3f s\n",
              seconds_since(t0));
  if (still_alive) ::kill(-child, SIGKILL);
}

TEST_CASE("an agent renews at most limits.max_leases_per_agent leases: too_many_leases",
          "[integration][primitives]") {
  TempDir dir;
  KeelCluster c(dir.path, 3,
                std::string(KeelCluster::kFastRaft) + "[limits]\nmax_leases_per_agent = 2\n");
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  auto client = c.member(r.followers[0]).client();
  REQUIRE(client);
  auto a = client->lease_grant(30000);
  auto b = client->lease_grant(30000);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto third = client->lease_grant(30000);
  REQUIRE_FALSE(third.ok());
  CHECK(third.error().code == ErrorCode::too_many_leases);
  CHECK(third.error().message.find("limits.max_leases_per_agent") != std::string::npos);
  // Another agent has its own budget; and once one is given up, this one grants again.
  auto elsewhere = c.member(r.followers[1]).client();
  REQUIRE(elsewhere);
  CHECK(elsewhere->lease_grant(30000).ok());
  a.value().reset();
  bool granted = false;
  for (int i = 0; i < 100 && !granted; ++i) {
    granted = client->lease_grant(30000).ok();
    if (!granted) std::this_thread::sleep_for(20ms);
  }
  CHECK(granted);
}
