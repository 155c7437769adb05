// Semaphores and elections on a 3-member cluster of real keeld processes, driven through
// keelctl: a max-2 semaphore never has 3 holders (checked from a watch history), bad
// semaphore input gets typed errors and a dead client's slot frees at once, the same holder
// id gets its own slot back, an election observer sees each leader once and in order, and a
// leader whose agent dies loses leadership only after its TTL.
//
// Every keelctl a test leaves running is a Proc (fork/exec, stdout/stderr to files in the
// test's temp dir), killed by PID when the Proc goes; every wait is bounded; assertions run
// on the main thread only (no threads here at all).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "cluster_harness.hpp"
#include "lock_helpers.hpp"
#include "proc.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

// Waits (bounded) until p's stdout matches `re`; the match and its groups, or nullopt if p
// exited first or the deadline passed.
std::optional<std::vector<std::string>> wait_out(Proc& p, const std::regex& re,
                                                 std::chrono::milliseconds deadline = 15s) {
  const auto until = Clock::now() + deadline;
  auto look = [&]() -> std::optional<std::vector<std::string>> {
    const std::string out = p.out();
    std::smatch m;
    if (!std::regex_search(out, m, re)) return std::nullopt;
    std::vector<std::string> groups;
    for (const auto& g : m)
      groups.push_back(g.str());
    return groups;
  };
  for (;;) {
    if (auto g = look()) return g;
    if (!p.running()) return look();  // it may have printed just before it exited
    if (Clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
}

// `keelctl sem acquire NAME ...` without a command prints "NAME holder=ID lease=L" once held.
std::optional<int64_t> wait_slot(Proc& p, const std::string& name, const std::string& id,
                                 std::chrono::milliseconds deadline = 15s) {
  auto m =
      wait_out(p, std::regex("(^|\n)" + name + " holder=" + id + " lease=([0-9]+)\n"), deadline);
  if (!m) return std::nullopt;
  return std::stoll((*m)[2]);
}

// `keelctl elect NAME VALUE` prints the leader key (NAME/<16 hex digits of the lease>), then
// the value, once it leads.
struct Led {
  std::string key;
  int64_t lease = 0;
};
std::optional<Led> wait_leading(Proc& p, const std::string& name, const std::string& value,
                                std::chrono::milliseconds deadline = 15s) {
  auto m = wait_out(p, std::regex("^(" + name + "/([0-9a-f]{16}))\n" + value + "\n"), deadline);
  if (!m) return std::nullopt;
  return Led{(*m)[1], static_cast<int64_t>(std::stoull((*m)[2], nullptr, 16))};
}

// "holder_id" -> lease of `sem holders NAME -w json` (holders only; waiters separately).
struct SemView {
  int64_t max = 0;
  std::map<std::string, int64_t> holders;
  std::map<std::string, int64_t> waiters;
};
std::optional<SemView> sem_holders(const std::string& socket, const std::string& name, Run* last) {
  *last = keelctl(socket, {"sem", "holders", name, "-w", "json"});
  if (last->status != 0) return std::nullopt;
  SemView v;
  std::smatch m;
  if (std::regex_search(last->out, m, std::regex("\"max\":\"([0-9]+)\""))) v.max = std::stoll(m[1]);
  const auto hpos = last->out.find("\"holders\":[");
  const auto wpos = last->out.find("\"waiters\":[");
  if (hpos == std::string::npos || wpos == std::string::npos) return std::nullopt;
  const std::regex row("\\{\"holder_id\":\"([^\"]*)\",\"lease\":\"([0-9]+)\"");
  auto scan = [&](const std::string& part, std::map<std::string, int64_t>& into) {
    for (std::sregex_iterator it(part.begin(), part.end(), row), end; it != end; ++it)
      into[(*it)[1]] = std::stoll((*it)[2]);
  };
  scan(last->out.substr(hpos, wpos - hpos), v.holders);
  scan(last->out.substr(wpos), v.waiters);
  return v;
}

std::string base64_decode(const std::string& in) {
  static const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char ch : in) {
    auto pos = chars.find(ch);
    if (pos == std::string::npos) break;  // '=' padding
    buf = (buf << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xff);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("a semaphore with max 2 and 5 contenders never has 3 holders, per the watch history",
          "[integration][coordination]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  REQUIRE(roles(c).leader >= 0);

  // The recorder watches from a revision taken before any contender starts: it cannot miss
  // an event however late its watch is set up. 5 puts + 5 deletes, then it exits by itself.
  auto mark = keelctl(c.member(0).socket(), {"put", "marker", "x", "-w", "json"});
  INFO("marker put: " << mark.out << mark.err);
  REQUIRE(mark.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(mark.out, m, std::regex("\"revision\":\"([0-9]+)\"")));
  const int64_t from = std::stoll(m[1]) + 1;
  auto recorder = Proc::keelctl(c.member(1).socket(),
                                {"watch", "sem/", "--prefix", "--rev", std::to_string(from),
                                 "--max-events", "10", "-w", "json"},
                                dir.path, "recorder");

  std::vector<std::unique_ptr<Proc>> contenders;
  const auto t0 = Clock::now();
  for (int i = 1; i <= 5; ++i) {
    const std::string id = "c" + std::to_string(i);
    const std::string s = c.member(i % 3).socket();
    const std::string k = std::string(KEELCTL_PATH) + " --socket " + s;
    contenders.push_back(Proc::keelctl(
        s,
        {"sem", "acquire", "slots", "--max", "2", "--id", id, "--ttl", "30", "--", "sh", "-c",
         k + " put sem/" + id + " held && sleep 0.3 && " + k + " del sem/" + id},
        dir.path, id));
  }
  for (int i = 0; i < 5; ++i) {
    auto st = contenders[i]->wait_exit(30s);
    INFO("contender c" << i + 1 << " stdout: " << contenders[i]->out()
                       << " stderr: " << contenders[i]->err());
    REQUIRE(st);
    CHECK(*st == 0);
  }
  const double all_done = seconds_since(t0);
  auto rst = recorder->wait_exit(10s);
  const std::string history = recorder->out();
  INFO("recorder stdout: " << history << " stderr: " << recorder->err());
  REQUIRE(rst);
  CHECK(*rst == 0);

  struct Ev {
    int64_t revision = 0;
    bool put = false;
    std::string key;
  };
  std::vector<Ev> events;
  const std::regex key_re("\"key\":\"([^\"]*)\"");
  const std::regex mod_re("\"mod_revision\":\"([0-9]+)\"");
  const std::regex rev_re("^\\{\"revision\":\"([0-9]+)\"");
  std::istringstream lines(history);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("\"event\"") == std::string::npos) continue;
    Ev e;
    e.put = line.find("\"type\":\"delete\"") == std::string::npos;
    std::smatch km, rm;
    REQUIRE(std::regex_search(line, km, key_re));
    e.key = base64_decode(km[1]);
    if (std::regex_search(line, rm, mod_re) || std::regex_search(line, rm, rev_re))
      e.revision = std::stoll(rm[1]);
    events.push_back(e);
  }
  REQUIRE(events.size() == 10);
  std::stable_sort(events.begin(), events.end(),
                   [](const Ev& a, const Ev& b) { return a.revision < b.revision; });
  std::set<std::string> live;
  std::map<std::string, int> puts, dels;
  size_t peak = 0;
  std::string when_over;
  for (const auto& e : events) {
    if (e.put) {
      live.insert(e.key);
      ++puts[e.key];
    } else {
      CHECK(live.count(e.key) == 1);  // each delete follows its own put
      live.erase(e.key);
      ++dels[e.key];
    }
    if (live.size() > peak) peak = live.size();
    if (live.size() > 2 && when_over.empty()) {
      for (const auto& k : live)
        when_over += k + " ";
      when_over += "at revision " + std::to_string(e.revision);
    }
  }
  std::printf("coordination: sem max 2, 5 contenders: all done in %.3f s; peak live holders %zu\n",
              all_done, peak);
  INFO("live at the first excess: " << when_over);
  CHECK(peak <= 2);  // never 3 holders at once
  CHECK(peak == 2);  // and both slots were used (it is not a mutex)
  CHECK(puts.size() == 5);
  for (int i = 1; i <= 5; ++i) {
    const std::string k = "sem/c" + std::to_string(i);
    CHECK(puts[k] == 1);  // each held once
    CHECK(dels[k] == 1);
  }
  CHECK(live.empty());
  // Every slot went with its holder's command.
  Run last;
  auto view = sem_holders(c.member(2).socket(), "slots", &last);
  INFO("sem holders: " << last.out << last.err);
  REQUIRE(last.status == 0);
  if (view) CHECK(view->holders.empty());
}

TEST_CASE("semaphore bad input is refused typed, and kill -9 of a holder's client frees its slot",
          "[integration][coordination]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string s0 = c.member(r.followers[0]).socket();
  const std::string s1 = c.member(r.followers[1]).socket();
  const std::string sl = c.member(r.leader).socket();

  // Two holders with 30 s session leases: a slot freed within seconds is not a TTL expiry.
  auto a = Proc::keelctl(s0, {"sem", "acquire", "slots", "--max", "2", "--id", "a", "--ttl", "30"},
                         dir.path, "a");
  auto la = wait_slot(*a, "slots", "a");
  INFO("a stderr: " << a->err());
  REQUIRE(la);
  auto b = Proc::keelctl(s1, {"sem", "acquire", "slots", "--max", "2", "--id", "b", "--ttl", "30"},
                         dir.path, "b");
  auto lb = wait_slot(*b, "slots", "b");
  INFO("b stderr: " << b->err());
  REQUIRE(lb);

  auto mismatch = keelctl(sl, {"sem", "acquire", "slots", "--max", "3", "--id", "x", "--try"});
  INFO("--max 3: " << mismatch.out << mismatch.err);
  CHECK(mismatch.status == 1);
  CHECK(mismatch.err.find("semaphore_max_mismatch") != std::string::npos);
  CHECK(mismatch.err.find("max 2") != std::string::npos);

  auto nobody = keelctl(sl, {"sem", "release", "slots", "--id", "nobody"});
  INFO("release --id nobody: " << nobody.out << nobody.err);
  CHECK(nobody.status == 1);
  CHECK(nobody.err.find("lock_not_held") != std::string::npos);
  CHECK(nobody.err.find("nobody") != std::string::npos);

  auto full = keelctl(sl, {"sem", "acquire", "slots", "--max", "2", "--id", "c", "--try"});
  INFO("--try while full: " << full.out << full.err);
  CHECK(full.status == 1);
  CHECK(full.err.find("taken") != std::string::npos);

  Run last;
  auto view = sem_holders(sl, "slots", &last);
  INFO("sem holders: " << last.out << last.err);
  REQUIRE(view);
  CHECK(view->max == 2);
  CHECK(view->holders == std::map<std::string, int64_t>{{"a", *la}, {"b", *lb}});
  CHECK(view->waiters.empty());
  // The human-readable form names them too.
  auto plain = keelctl(sl, {"sem", "holders", "slots"});
  INFO("sem holders (simple): " << plain.out << plain.err);
  CHECK(plain.out.find("max 2, 2 held, 0 waiting") != std::string::npos);
  CHECK(plain.out.find("holder a lease " + std::to_string(*la)) != std::string::npos);
  CHECK(plain.out.find("holder b lease " + std::to_string(*lb)) != std::string::npos);

  // kill -9 of a's keelctl: its session lease is revoked when its connection closes, and the
  // slot with it. `--try` by another id, retried (bounded), gets it.
  const auto t0 = Clock::now();
  a->kill9();
  std::unique_ptr<Proc> cp;
  std::optional<int64_t> lc;
  for (int attempt = 0; Clock::now() < t0 + 5s; ++attempt) {
    cp = Proc::keelctl(sl, {"sem", "acquire", "slots", "--max", "2", "--id", "c", "--try"},
                       dir.path, "c" + std::to_string(attempt));
    lc = wait_slot(*cp, "slots", "c", 5s);
    if (lc) break;
    std::this_thread::sleep_for(10ms);
  }
  const double freed = seconds_since(t0);
  INFO("c stderr: " << (cp ? cp->err() : ""));
  REQUIRE(lc);
  std::printf(
      "coordination: slot free for a --try acquire %.3f s after kill -9 of its holder's "
      "client (session TTL 30 s)\n",
      freed);
  CHECK(freed < 5.0);
  view = sem_holders(s0, "slots", &last);
  INFO("sem holders after: " << last.out << last.err);
  REQUIRE(view);
  CHECK(view->holders == std::map<std::string, int64_t>{{"b", *lb}, {"c", *lc}});
  CHECK(b->running());
  CHECK(b->interrupt() == std::optional<int>(0));
  CHECK(cp->interrupt() == std::optional<int>(0));
}

TEST_CASE("the same semaphore holder id gets its own slot back on its new lease",
          "[integration][coordination]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const std::string sa = c.member(r.followers[0]).socket();
  const std::string sb = c.member(r.followers[1]).socket();

  auto grant = keelctl(sa, {"lease", "grant", "30", "-w", "json"});  // kept
  INFO("grant: " << grant.out << grant.err);
  REQUIRE(grant.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(grant.out, m, std::regex("\"id\":\"([0-9]+)\"")));
  const int64_t l1 = std::stoll(m[1]);
  auto p1 = Proc::keelctl(
      sa, {"sem", "acquire", "s1", "--max", "1", "--id", "host1", "--lease", std::to_string(l1)},
      dir.path, "p1");
  auto got1 = wait_slot(*p1, "s1", "host1");
  INFO("p1 stderr: " << p1->err());
  REQUIRE(got1);
  CHECK(*got1 == l1);

  auto other = keelctl(sb, {"sem", "acquire", "s1", "--max", "1", "--id", "host2", "--try"});
  INFO("host2 --try: " << other.out << other.err);
  CHECK(other.status == 1);
  CHECK(other.err.find("taken") != std::string::npos);

  // host1 again, from another member, with a new session lease: its own slot.
  auto p2 = Proc::keelctl(sb, {"sem", "acquire", "s1", "--max", "1", "--id", "host1", "--try"},
                          dir.path, "p2");
  auto got2 = wait_slot(*p2, "s1", "host1", 10s);
  INFO("p2 stdout: " << p2->out() << " stderr: " << p2->err());
  REQUIRE(got2);
  CHECK(*got2 != l1);
  Run last;
  auto view = sem_holders(sa, "s1", &last);
  INFO("sem holders: " << last.out << last.err);
  REQUIRE(view);
  CHECK(view->holders == std::map<std::string, int64_t>{{"host1", *got2}});  // rebound
  CHECK(view->waiters.empty());

  other = keelctl(sa, {"sem", "acquire", "s1", "--max", "1", "--id", "host2", "--try"});
  INFO("host2 --try again: " << other.out << other.err);
  CHECK(other.status == 1);

  // The first process no longer holds the slot through its lease; however it ends, the slot
  // stays with host1's new lease.
  auto p1_exit = p1->wait_exit(3s);
  std::printf("coordination: the first host1 process after the rebinding: %s\n",
              p1_exit ? ("exited " + std::to_string(*p1_exit)).c_str() : "still running");
  if (!p1_exit) p1->interrupt();
  std::this_thread::sleep_for(300ms);  // a release p1 sent on its way out would be applied
  view = sem_holders(sb, "s1", &last);
  INFO("sem holders after p1 ended: " << last.out << last.err << " p1 stderr: " << p1->err());
  REQUIRE(view);
  CHECK(view->holders == std::map<std::string, int64_t>{{"host1", *got2}});
  CHECK(p2->running());
  CHECK(p2->interrupt() == std::optional<int>(0));
  keelctl(sa, {"lease", "revoke", std::to_string(l1)});
}

TEST_CASE("an election observer sees each leader once, in campaign order",
          "[integration][coordination]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const int lm = r.followers[1];  // the listener's member

  // The listener first; its watch is registered before anyone campaigns.
  auto before = c.status(lm);
  REQUIRE(before);
  auto listener =
      Proc::keelctl(c.member(lm).socket(), {"elect", "--listen", "e1"}, dir.path, "listener");
  {
    const auto until = Clock::now() + 10s;
    bool watching = false;
    while (!watching && Clock::now() < until && listener->running()) {
      auto st = c.status(lm);
      watching = st && st->watchers > before->watchers;
      if (!watching) std::this_thread::sleep_for(10ms);
    }
    INFO("listener stderr: " << listener->err());
    REQUIRE(watching);
  }

  std::vector<std::unique_ptr<Proc>> cand;
  std::vector<Led> led(3);
  std::set<int64_t> seen;
  cand.push_back(
      Proc::keelctl(c.member(0).socket(), {"elect", "e1", "v1", "--ttl", "30"}, dir.path, "cand1"));
  {
    auto l = wait_leading(*cand[0], "e1", "v1");
    INFO("cand1 stderr: " << cand[0]->err());
    REQUIRE(l);
    led[0] = *l;
    seen.insert(l->lease);
    auto shown = wait_out(*listener, std::regex("^" + l->key + "\nv1\n"));
    INFO("listener: " << listener->out() << listener->err());
    REQUIRE(shown);
  }
  // The next two queue, in this order (each one's lock request applied before the next).
  for (int i = 1; i < 3; ++i) {
    const std::string v = "v" + std::to_string(i + 1);
    cand.push_back(Proc::keelctl(c.member(i).socket(), {"elect", "e1", v, "--ttl", "30"}, dir.path,
                                 "cand" + std::to_string(i + 1)));
    auto q = wait_lease_on_lock(c.member(lm), "election/e1", seen);
    INFO("cand" << i + 1 << " stderr: " << cand[i]->err());
    REQUIRE(q);
    seen.insert(*q);
    CHECK(cand[i]->out().empty());  // queued, not leading
  }

  // 1: resigns on SIGINT (exit 0); 2 leads.
  const auto t_resign = Clock::now();
  CHECK(cand[0]->interrupt() == std::optional<int>(0));
  {
    auto l = wait_leading(*cand[1], "e1", "v2");
    INFO("cand2 stderr: " << cand[1]->err());
    REQUIRE(l);
    led[1] = *l;
    std::printf("coordination: next leader %.3f s after the resign\n", seconds_since(t_resign));
  }
  CHECK(cand[2]->out().empty());
  // 2: kill -9 of its keelctl; its session lease (30 s) is revoked at once; 3 leads.
  const auto t_kill = Clock::now();
  cand[1]->kill9();
  {
    auto l = wait_leading(*cand[2], "e1", "v3", 10s);
    INFO("cand3 stderr: " << cand[2]->err());
    REQUIRE(l);
    led[2] = *l;
    const double took = seconds_since(t_kill);
    std::printf(
        "coordination: next leader %.3f s after kill -9 of the leader's keelctl "
        "(session TTL 30 s)\n",
        took);
    CHECK(took < 10.0);
  }
  // 3: resigns.
  CHECK(cand[2]->interrupt() == std::optional<int>(0));

  const std::string want = led[0].key + "\nv1\n" + led[1].key + "\nv2\n" + led[2].key + "\nv3\n";
  wait_out(*listener,
           std::regex("^" + led[0].key + "\nv1\n" + led[1].key + "\nv2\n" + led[2].key + "\nv3\n"),
           10s);
  std::this_thread::sleep_for(500ms);  // room for a duplicate or a late extra value
  const std::string got = listener->out();
  INFO("listener stderr: " << listener->err());
  CHECK(got == want);
  CHECK(listener->running());
  CHECK(led[0].key != led[1].key);
  CHECK(led[1].key != led[2].key);
  // Nobody leads now.
  auto none = keelctl(c.member(0).socket(), {"get", "e1/", "--prefix", "--count-only"});
  CHECK(none.out == "0\n");
  listener->kill9();
}

TEST_CASE(
    "a leader whose agent is killed loses leadership only after its TTL, then the next "
    "candidate leads",
    "[integration][coordination]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  Roles r = roles(c);
  REQUIRE(r.leader >= 0);
  const int x = r.followers[0], y = r.followers[1];
  const double ttl_s = 3.0;

  auto a = Proc::keelctl(c.member(x).socket(), {"elect", "e2", "A", "--ttl", "3"}, dir.path, "a");
  auto la = wait_leading(*a, "e2", "A");
  INFO("a stderr: " << a->err());
  REQUIRE(la);
  auto b = Proc::keelctl(c.member(y).socket(), {"elect", "e2", "B", "--ttl", "30"}, dir.path, "b");
  REQUIRE(wait_lease_on_lock(c.member(y), "election/e2", {la->lease}));
  CHECK(b->out().empty());

  // Kill X right after a renewal of A's lease is applied (its remaining TTL went up): the
  // lease then ends ~TTL after the kill, so the lower bound below is tight to the polling
  // interval (without this it could only be TTL * 2/3, as the agent renews after TTL/3).
  auto cy = c.member(y).client();
  REQUIRE(cy);
  int64_t prev = -1, renewed_at = -1;
  const auto until = Clock::now() + 8s;
  while (Clock::now() < until) {
    auto info = cy->lease_time_to_live(la->lease, false);
    if (!info) {
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

  auto lb =
      wait_leading(*b, "e2", "B", std::chrono::milliseconds(static_cast<int>(ttl_s * 1000)) + 10s);
  const double elapsed = seconds_since(t0);
  INFO("b stderr: " << b->err());
  REQUIRE(lb);
  std::printf(
      "coordination: next leader %.3f s after kill -9 of the leader's agent (TTL %.1f s; "
      "remaining at the kill %lld ms)\n",
      elapsed, ttl_s, static_cast<long long>(renewed_at));
  // Not before the old leader's lease ended (0.5 s of slack for polling and stamps)...
  CHECK(elapsed >= renewed_at / 1000.0 - 0.5);
  CHECK(elapsed >= ttl_s - 0.5);
  // ...and soon after it (a time entry at most every second, then the hand-off).
  CHECK(elapsed < ttl_s + 3.0);
  CHECK(lb->key != la->key);
  // The leader's key is B's, on both survivors.
  for (int i : {r.leader, y}) {
    auto got = keelctl(c.member(i).socket(), {"get", "e2/", "--prefix"});
    INFO("member " << c.name(i) << ": " << got.out << got.err);
    CHECK(got.out == lb->key + "\nB\n");
  }
  // A's keelctl lost its agent: it exits non-zero.
  auto st = a->wait_exit(10s);
  CHECK(st);
  if (st) CHECK(*st != 0);
  CHECK(b->interrupt() == std::optional<int>(0));
}
