// prim_bench: figures for keel's coordination primitives (README "Leases, locks and
// semaphores") on a running cluster, through the members' Unix sockets (keel_client only).
//
//   prim_bench --socket S0,S1,S2 [--only lock,handoff,grant,keepalive] [--smoke] [options]
//
// Phases (each prints one line of key=value figures per measurement, for run.sh):
//   lock       uncontended lock + unlock pairs: 1 and --clients clients, each on its own lock
//              name, each with a lease granted once (LockOptions.lease), so a pair is two
//              proposals and no lease grant. Clients go to the sockets in turn.
//   handoff    --waiters waiters queued on one lock (each its own thread, client and lease);
//              the holder unlocks; sample = from just before the holder's unlock call to the
//              return of the next waiter's lock(); that waiter then unlocks at once, and so on
//              through the queue; --rounds rounds.
//   grant      lease grants, 1 and --clients clients: (a) a session lease then its revoke(),
//              both timed (revoke included); (b) a kept lease of --short-ttl-ms dropped at once,
//              neither renewed nor revoked: it expires (revoke excluded).
//   keepalive  --leases leases held (one Lease object each, TTL --ttl-ms) spread evenly over
//              the agents, --threads-per-agent connections each, renewed by the agents; over
//              --window seconds: renewal messages (sum over agents of status().renew_messages),
//              leases renewed, the leader's time entries, the leader keeld's CPU
//              (/proc/PID/stat; PID from SO_PEERCRED on its socket) and RSS; before it, the
//              leader's CPU over --idle seconds with no lease held.
// One Client per thread (a Client belongs to the thread that made it). It prints figures and
// asserts nothing about them; it fails (exit 1) when an operation fails or a held lease ends.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/client.hpp"

namespace {

using keel::client::Client;
using keel::client::Lease;
using keel::client::LockHandle;
using keel::client::LockOptions;
using keel::client::StatusInfo;
using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<std::string> sockets;
  std::string only = "lock,handoff,grant,keepalive";
  bool smoke = false;
  double seconds = 4;           // each lock and grant measurement
  unsigned clients = 16;        // the concurrent lock and grant measurements
  unsigned waiters = 16;        // hand-off queue length
  unsigned rounds = 6;          // hand-off rounds (waiters samples each)
  int64_t lock_ttl_ms = 10000;  // the lease each lock client holds
  int64_t short_ttl_ms = 2000;  // grant (b)
  uint64_t leases = 30000;      // keepalive
  int64_t ttl_ms = 10000;       // keepalive
  double window = 20;           // keepalive measurement window (s)
  double idle = 5;              // idle baseline before it (s)
  double warmup = 2;            // after the last grant, before the window (s)
  unsigned threads_per_agent = 8;
};

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "prim_bench: %s\n", why);
  std::fprintf(
      stderr,
      "usage: prim_bench --socket PATH[,PATH...] [--only lock,handoff,grant,keepalive] [--smoke]\n"
      "         [--seconds S] [--clients N] [--waiters N] [--rounds N] [--short-ttl-ms MS]\n"
      "         [--leases N] [--ttl-ms MS] [--window S] [--idle S] [--warmup S]\n"
      "         [--threads-per-agent N]\n"
      "  --socket LIST        the members' sockets; clients go to them in turn\n"
      "  --seconds S          each lock and grant measurement (default 4)\n"
      "  --clients N          clients of the concurrent lock and grant runs (default 16)\n"
      "  --waiters N          waiters queued in the hand-off (default 16)\n"
      "  --rounds N           hand-off rounds (default 6)\n"
      "  --short-ttl-ms MS    TTL of the kept leases of grant (b) (default 2000)\n"
      "  --leases N           leases held in keepalive (default 30000)\n"
      "  --ttl-ms MS          their TTL (default 10000)\n"
      "  --window S           keepalive window (default 20)\n"
      "  --idle S             idle baseline of the leader's CPU first (default 5)\n"
      "  --warmup S           wait after the last grant before the window (default 2)\n"
      "  --threads-per-agent N  connections (threads) per agent holding leases (default 8)\n"
      "  --smoke              tiny counts and windows: checks that every phase works\n");
  std::exit(2);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  bool seconds = false, clients = false, waiters = false, rounds = false, leases = false,
       ttl = false, window = false, idle = false, warmup = false, tpa = false;
  auto value = [&](int& i) -> const char* {
    if (i + 1 >= argc) usage("missing value");
    return argv[++i];
  };
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--socket") {
      o.sockets = split_commas(value(i));
    } else if (a == "--only") {
      o.only = value(i);
    } else if (a == "--smoke") {
      o.smoke = true;
    } else if (a == "--seconds") {
      o.seconds = std::atof(value(i)), seconds = true;
    } else if (a == "--clients") {
      o.clients = static_cast<unsigned>(std::strtoul(value(i), nullptr, 10)), clients = true;
    } else if (a == "--waiters") {
      o.waiters = static_cast<unsigned>(std::strtoul(value(i), nullptr, 10)), waiters = true;
    } else if (a == "--rounds") {
      o.rounds = static_cast<unsigned>(std::strtoul(value(i), nullptr, 10)), rounds = true;
    } else if (a == "--short-ttl-ms") {
      o.short_ttl_ms = std::strtoll(value(i), nullptr, 10);
    } else if (a == "--leases") {
      o.leases = std::strtoull(value(i), nullptr, 10), leases = true;
    } else if (a == "--ttl-ms") {
      o.ttl_ms = std::strtoll(value(i), nullptr, 10), ttl = true;
    } else if (a == "--window") {
      o.window = std::atof(value(i)), window = true;
    } else if (a == "--idle") {
      o.idle = std::atof(value(i)), idle = true;
    } else if (a == "--warmup") {
      o.warmup = std::atof(value(i)), warmup = true;
    } else if (a == "--threads-per-agent") {
      o.threads_per_agent = static_cast<unsigned>(std::strtoul(value(i), nullptr, 10)), tpa = true;
    } else if (a == "-h" || a == "--help") {
      usage(nullptr);
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  if (o.smoke) {  // explicit flags still win
    if (!seconds) o.seconds = 0.5;
    if (!clients) o.clients = 4;
    if (!waiters) o.waiters = 4;
    if (!rounds) o.rounds = 1;
    if (!leases) o.leases = 200;
    if (!ttl) o.ttl_ms = 2000;  // renewed after 0.67 s: renewals happen in a 2 s window
    if (!window) o.window = 2;
    if (!idle) o.idle = 0.5;
    if (!warmup) o.warmup = 0.5;
    if (!tpa) o.threads_per_agent = 2;
  }
  if (o.sockets.empty()) usage("--socket is required");
  if (o.clients == 0 || o.clients > 1000) usage("--clients must be 1..1000");
  if (o.waiters == 0 || o.waiters > 1000) usage("--waiters must be 1..1000");
  if (o.rounds == 0) usage("--rounds must be >= 1");
  if (o.threads_per_agent == 0 || o.threads_per_agent > 300) {
    usage("--threads-per-agent must be 1..300");
  }
  if (!(o.seconds > 0 && o.seconds <= 600)) usage("--seconds must be in (0, 600]");
  if (!(o.window > 0 && o.window <= 600)) usage("--window must be in (0, 600]");
  if (!(o.idle >= 0 && o.idle <= 600) || !(o.warmup >= 0 && o.warmup <= 600)) {
    usage("--idle and --warmup must be in [0, 600]");
  }
  if (o.leases == 0) usage("--leases must be >= 1");
  return o;
}

bool wanted(const Options& o, const char* phase) {
  for (const auto& p : split_commas(o.only))
    if (p == phase) return true;
  return false;
}

void log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "prim_bench: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
}

std::string describe(const keel::Error& e) {
  return std::string(keel::error_code_name(e.code)) + ": " + e.message;
}

// ---- failures: recorded by any thread; a phase that saw one ends the run -----------------

std::mutex g_errors_mu;
std::vector<std::string> g_errors;

void fail(const std::string& what) {
  std::lock_guard<std::mutex> l(g_errors_mu);
  if (g_errors.size() < 20) g_errors.push_back(what);
}

void check_errors(const char* phase) {
  std::lock_guard<std::mutex> l(g_errors_mu);
  if (g_errors.empty()) return;
  for (const auto& e : g_errors)
    std::fprintf(stderr, "prim_bench: %s: %s\n", phase, e.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  // Threads may still be blocked in calls that will never return: do not join them.
  std::_Exit(1);
}

// A thread stuck in a call: report and leave without joining (a hang is a finding).
[[noreturn]] void stalled(const std::string& what) {
  std::fprintf(stderr, "prim_bench: STALLED: %s\n", what.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}

// ---- small synchronisation helpers --------------------------------------------------------

class Gate {  // opened once; waiters block until then
 public:
  void open() {
    {
      std::lock_guard<std::mutex> l(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

class Counter {  // counts arrivals; the main thread waits for a number, bounded
 public:
  void add() {
    {
      std::lock_guard<std::mutex> l(mu_);
      n_++;
    }
    cv_.notify_all();
  }
  bool wait_for(uint64_t n, double seconds) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::duration<double>(seconds), [&] { return n_ >= n; });
  }
  uint64_t value() {
    std::lock_guard<std::mutex> l(mu_);
    return n_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t n_ = 0;
};

// ---- figures --------------------------------------------------------------------------------

double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}
double secs_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Lat {
  size_t n = 0;
  double p50 = 0, p99 = 0, max = 0;
};
Lat lat_of(std::vector<double> v) {
  Lat l;
  l.n = v.size();
  if (v.empty()) return l;
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {  // nearest rank
    size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::min(v.size(), std::max<size_t>(i, 1)) - 1];
  };
  l.p50 = rank(0.50);
  l.p99 = rank(0.99);
  l.max = v.back();
  return l;
}
std::vector<double> merged(const std::vector<std::vector<double>>& parts) {
  std::vector<double> all;
  for (const auto& p : parts)
    all.insert(all.end(), p.begin(), p.end());
  return all;
}

// ---- processes -------------------------------------------------------------------------------

// The pid of the process serving `path` (SO_PEERCRED), or -1.
pid_t server_pid(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  pid_t pid = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) pid = cred.pid;
  }
  ::close(fd);
  return pid;
}

// utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat); -1 if unknown.
long long cpu_ticks(pid_t pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  const char* p = stat.c_str() + paren + 1;
  long long ticks = 0;
  for (int field = 3; field <= 15; field++) {
    while (*p == ' ')
      p++;
    char* end = nullptr;
    long long v = std::strtoll(p, &end, 10);
    if (field >= 14) ticks += v;
    while (*p && *p != ' ')
      p++;
  }
  return ticks;
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

std::unique_ptr<Client> connect_or_fail(const std::string& socket) {
  auto c = Client::connect(socket);
  if (!c) {
    fail(describe(c.error()));
    return nullptr;
  }
  return std::move(c).value();
}

// ---- the members, as the main thread sees them ------------------------------------------------

struct Members {
  std::vector<std::string> sockets;
  std::vector<pid_t> pids;
  std::vector<std::unique_ptr<Client>> clients;  // main thread's, one per member

  struct Sample {
    Clock::time_point t;
    std::vector<StatusInfo> status;
    std::vector<long long> ticks;
    int leader = -1;
  };
  Sample sample() {
    Sample s;
    for (size_t i = 0; i < clients.size(); i++) {
      auto st = clients[i]->status();
      if (!st) {
        fail("status of " + sockets[i] + ": " + describe(st.error()));
        check_errors("status");
      }
      if (st->role == "leader") s.leader = static_cast<int>(i);
      s.status.push_back(*st);
      s.ticks.push_back(cpu_ticks(pids[i]));
    }
    s.t = Clock::now();
    return s;
  }
  int leader() {  // bounded: 10 s
    for (int k = 0; k < 200; k++) {
      auto s = sample();
      if (s.leader >= 0) return s.leader;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    fail("no member says it leads");
    check_errors("leader");
    return -1;
  }
};

// ---- 1. uncontended lock + unlock ----------------------------------------------------------

void lock_phase(const Options& o, unsigned n) {
  std::vector<std::vector<double>> lats(n);
  std::vector<Clock::time_point> ends(n);
  Counter ready;
  Gate go;
  Clock::time_point start, deadline;
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < n; i++) {
    threads.emplace_back([&, i] {
      auto c = connect_or_fail(o.sockets[i % o.sockets.size()]);
      std::unique_ptr<Lease> lease;
      if (c) {
        auto l = c->lease_grant(o.lock_ttl_ms, false);
        if (l) {
          lease = std::move(l).value();
        } else {
          fail("lease_grant: " + describe(l.error()));
        }
      }
      ready.add();
      go.wait();
      if (!lease) return;
      const std::string name = "bench/lock/" + std::to_string(n) + "/" + std::to_string(i);
      LockOptions lo;
      lo.lease = lease->id();
      auto& v = lats[i];
      v.reserve(100000);
      while (Clock::now() < deadline) {
        auto t0 = Clock::now();
        auto h = c->lock(name, lo);
        if (!h || !*h) {
          fail("lock " + name + ": " + (h ? std::string("not acquired") : describe(h.error())));
          break;
        }
        auto u = (*h)->unlock();
        auto t1 = Clock::now();
        if (!u) {
          fail("unlock " + name + ": " + describe(u.error()));
          break;
        }
        h->reset();
        v.push_back(us_between(t0, t1));
        ends[i] = t1;
      }
    });
  }
  if (!ready.wait_for(n, 60)) stalled("lock clients did not connect within 60 s");
  start = Clock::now();
  deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  for (auto& e : ends)
    e = start;
  go.open();
  for (auto& t : threads)
    t.join();
  check_errors("lock");
  auto all = merged(lats);
  auto end = *std::max_element(ends.begin(), ends.end());
  double secs = secs_between(start, end);
  Lat l = lat_of(all);
  std::printf(
      "lock_c%u clients=%u ops=%zu secs=%.2f rate=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f\n", n, n,
      l.n, secs, secs > 0 ? static_cast<double>(l.n) / secs : 0.0, l.p50, l.p99, l.max);
  std::fflush(stdout);
}

// ---- 2. hand-off through a queue of waiters ---------------------------------------------------

void handoff_phase(const Options& o, Members& m) {
  const unsigned n = o.waiters;
  const std::string name = "bench/handoff";
  std::atomic<int64_t> unlock_start_ns{0};  // set by the holder just before its unlock call
  auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  };
  std::vector<std::vector<double>> lats(n);
  std::vector<int64_t> lease_ids(n, 0);
  Counter ready, acquired;
  std::vector<std::unique_ptr<Gate>> round_go;
  for (unsigned r = 0; r < o.rounds; r++)
    round_go.push_back(std::make_unique<Gate>());
  std::vector<std::thread> threads;
  // The holder is the main thread, on the first member; waiter j on member j + 1 (mod).
  for (unsigned j = 0; j < n; j++) {
    threads.emplace_back([&, j] {
      auto c = connect_or_fail(o.sockets[(j + 1) % o.sockets.size()]);
      std::unique_ptr<Lease> lease;
      if (c) {
        auto l = c->lease_grant(o.lock_ttl_ms, false);
        if (l) {
          lease = std::move(l).value();
          lease_ids[j] = lease->id();
        } else {
          fail("lease_grant: " + describe(l.error()));
        }
      }
      ready.add();
      if (!lease) return;
      LockOptions lo;
      lo.lease = lease->id();
      for (unsigned r = 0; r < o.rounds; r++) {
        round_go[r]->wait();
        auto h = c->lock(name, lo);
        auto t = now_ns();
        if (!h || !*h) {
          fail("lock " + name + ": " + (h ? std::string("not acquired") : describe(h.error())));
          acquired.add();
          return;
        }
        lats[j].push_back(static_cast<double>(t - unlock_start_ns.load()) / 1e3);
        unlock_start_ns.store(now_ns());
        auto u = (*h)->unlock();
        if (!u) fail("unlock " + name + ": " + describe(u.error()));
        h->reset();
        acquired.add();
        if (!u) return;
      }
    });
  }
  if (!ready.wait_for(n, 60)) stalled("hand-off waiters did not connect within 60 s");
  check_errors("handoff");
  Client& holder_client = *m.clients[0];
  auto hl = holder_client.lease_grant(o.lock_ttl_ms, false);
  if (!hl) {
    fail("lease_grant (holder): " + describe(hl.error()));
    check_errors("handoff");
  }
  std::unique_ptr<Lease> holder_lease = std::move(hl).value();
  LockOptions lo;
  lo.lease = holder_lease->id();
  lo.wait = false;  // the lock is free between rounds
  double queue_ms_max = 0;
  for (unsigned r = 0; r < o.rounds; r++) {
    auto h = holder_client.lock(name, lo);
    if (!h || !*h) {
      fail("holder lock: " + (h ? std::string("held by someone (round " + std::to_string(r) + ")")
                                : describe(h.error())));
      check_errors("handoff");
    }
    auto q0 = Clock::now();
    round_go[r]->open();
    // Every waiter queued: its lease names the lock (LeaseInfo.locks: held or waited for).
    // Bounded: 20 s.
    std::vector<bool> queued(n, false);
    unsigned nq = 0;
    for (int k = 0; nq < n; k++) {
      if (k >= 4000)
        stalled(std::to_string(n - nq) + " of " + std::to_string(n) + " waiters not queued on " +
                name + " within 20 s");
      for (unsigned j = 0; j < n; j++) {
        if (queued[j]) continue;
        auto info = holder_client.lease_time_to_live(lease_ids[j], false);
        if (!info) {
          fail("lease_time_to_live: " + describe(info.error()));
          check_errors("handoff");
        }
        if (std::find(info->locks.begin(), info->locks.end(), name) != info->locks.end()) {
          queued[j] = true;
          nq++;
        }
      }
      if (nq < n) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    queue_ms_max = std::max(queue_ms_max, us_between(q0, Clock::now()) / 1e3);
    unlock_start_ns.store(now_ns());
    auto u = (*h)->unlock();
    if (!u) {
      fail("holder unlock: " + describe(u.error()));
      check_errors("handoff");
    }
    h->reset();
    if (!acquired.wait_for(uint64_t{r + 1} * n, 30)) {
      stalled("hand-off round " + std::to_string(r) + ": " +
              std::to_string(acquired.value() - uint64_t{r} * n) + " of " + std::to_string(n) +
              " waiters acquired " + name + " within 30 s of the holder's unlock");
    }
    check_errors("handoff");
  }
  for (auto& t : threads)
    t.join();
  check_errors("handoff");
  Lat l = lat_of(merged(lats));
  std::printf(
      "handoff waiters=%u rounds=%u samples=%zu p50_us=%.0f p99_us=%.0f max_us=%.0f "
      "queue_ms_max=%.0f\n",
      n, o.rounds, l.n, l.p50, l.p99, l.max, queue_ms_max);
  std::fflush(stdout);
}

// ---- 3. lease grants --------------------------------------------------------------------------

// revoke: a session lease, then Lease::revoke(); expire: a kept lease of short_ttl_ms, dropped.
void grant_phase(const Options& o, unsigned n, bool revoke) {
  std::vector<std::vector<double>> grant_lats(n), pair_lats(n);
  std::vector<Clock::time_point> ends(n);
  Counter ready;
  Gate go;
  Clock::time_point start, deadline;
  std::vector<std::thread> threads;
  const int64_t ttl = revoke ? o.lock_ttl_ms : o.short_ttl_ms;
  for (unsigned i = 0; i < n; i++) {
    threads.emplace_back([&, i] {
      auto c = connect_or_fail(o.sockets[i % o.sockets.size()]);
      ready.add();
      go.wait();
      if (!c) return;
      while (Clock::now() < deadline) {
        auto t0 = Clock::now();
        auto l = c->lease_grant(ttl, /*keep=*/!revoke);
        auto t1 = Clock::now();
        if (!l) {
          fail("lease_grant: " + describe(l.error()));
          break;
        }
        grant_lats[i].push_back(us_between(t0, t1));
        if (revoke) {
          auto st = (*l)->revoke();
          auto t2 = Clock::now();
          if (!st) {
            fail("revoke: " + describe(st.error()));
            break;
          }
          pair_lats[i].push_back(us_between(t0, t2));
          t1 = t2;
        }
        l->reset();  // kept: no longer renewed, not revoked; it expires after ttl
        ends[i] = t1;
      }
    });
  }
  if (!ready.wait_for(n, 60)) stalled("grant clients did not connect within 60 s");
  start = Clock::now();
  deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  for (auto& e : ends)
    e = start;
  go.open();
  for (auto& t : threads)
    t.join();
  check_errors("grant");
  auto end = *std::max_element(ends.begin(), ends.end());
  double secs = secs_between(start, end);
  Lat g = lat_of(merged(grant_lats));
  double rate = secs > 0 ? static_cast<double>(g.n) / secs : 0.0;
  if (revoke) {
    Lat p = lat_of(merged(pair_lats));
    std::printf(
        "grant_revoke_c%u clients=%u ops=%zu secs=%.2f rate=%.0f grant_p50_us=%.0f "
        "grant_p99_us=%.0f pair_p50_us=%.0f pair_p99_us=%.0f\n",
        n, n, g.n, secs, rate, g.p50, g.p99, p.p50, p.p99);
  } else {
    std::printf(
        "grant_expire_c%u clients=%u ops=%zu secs=%.2f rate=%.0f grant_p50_us=%.0f "
        "grant_p99_us=%.0f ttl_ms=%lld\n",
        n, n, g.n, secs, rate, g.p50, g.p99, static_cast<long long>(ttl));
  }
  std::fflush(stdout);
}

// ---- 4. keepalive load --------------------------------------------------------------------------

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++)
    s += (i ? "/" : "") + v[i];
  return s;
}
std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Leases in the cluster (linearizable, through the first member).
size_t lease_count(Members& m) {
  auto ids = m.clients[0]->lease_list();
  if (!ids) {
    fail("lease_list: " + describe(ids.error()));
    check_errors("lease_list");
  }
  return ids->size();
}

// Bounded wait until no lease is left; seconds it took, or -1 (and a message) when some were.
double wait_no_leases(Members& m, double bound_s, const char* what) {
  auto t0 = Clock::now();
  size_t n = 0;
  while ((n = lease_count(m)) > 0) {
    if (secs_between(t0, Clock::now()) > bound_s) {
      std::fprintf(stderr, "prim_bench: %zu leases still exist %.0f s after %s\n", n, bound_s,
                   what);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return secs_between(t0, Clock::now());
}

void keepalive_phase(const Options& o, Members& m) {
  const size_t agents = o.sockets.size();
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  // Quiet first: the earlier phases' leases are gone from every agent (bounded, 30 s).
  for (int k = 0;; k++) {
    auto s = m.sample();
    uint64_t renewing = 0;
    for (const auto& st : s.status)
      renewing += st.leases_renewing;
    if (renewing == 0) break;
    if (k >= 300)
      stalled(std::to_string(renewing) + " leases still renewed 30 s after the earlier phases");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // And gone from the cluster: the kept leases of grant (b) have expired (bounded, 30 s).
  if (wait_no_leases(m, 30, "the earlier phases") < 0) std::exit(1);
  // Idle baseline of the leader.
  double idle_pct = -1;
  if (o.idle > 0) {
    int leader = m.leader();
    auto a = m.sample();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.idle));
    auto b = m.sample();
    if (a.leader == leader && b.leader == leader) {
      idle_pct = 100.0 * static_cast<double>(b.ticks[leader] - a.ticks[leader]) / hz /
                 secs_between(a.t, b.t);
    }
  }

  const size_t nthreads = agents * o.threads_per_agent;
  std::vector<size_t> counts(nthreads, o.leases / nthreads);
  for (size_t t = 0; t < o.leases % nthreads; t++)
    counts[t]++;
  Counter granted, checked;
  Gate check, drop;
  std::atomic<uint64_t> ended_early{0};
  std::vector<std::thread> threads;
  auto g0 = Clock::now();
  for (size_t t = 0; t < nthreads; t++) {
    threads.emplace_back([&, t] {
      std::vector<std::unique_ptr<Lease>> held;
      auto c = connect_or_fail(o.sockets[t % agents]);
      if (c) {
        held.reserve(counts[t]);
        for (size_t k = 0; k < counts[t]; k++) {
          auto l = c->lease_grant(o.ttl_ms, false);
          if (!l) {
            fail("lease_grant (" + std::to_string(k) + " of " + std::to_string(counts[t]) + " on " +
                 o.sockets[t % agents] + "): " + describe(l.error()));
            break;
          }
          held.push_back(std::move(l).value());
        }
      }
      granted.add();
      check.wait();
      // Every lease still there after the window (a few, each a call).
      for (size_t k = 0; k < held.size(); k += std::max<size_t>(1, held.size() / 4)) {
        auto info = held[k]->info(false);
        if (!info || info->remaining_ms <= 0) {
          ended_early++;
          fail("lease " + std::to_string(held[k]->id()) + " held on " + o.sockets[t % agents] +
               " ended or unreadable after the window: " +
               (info ? "remaining_ms=" + std::to_string(info->remaining_ms)
                     : describe(info.error())));
        }
      }
      checked.add();
      drop.wait();
      held.clear();  // session leases: the agent revokes each
      c.reset();
    });
  }
  // Bounded: 10 minutes for the grants.
  if (!granted.wait_for(nthreads, 600)) {
    stalled(std::to_string(nthreads - granted.value()) + " of " + std::to_string(nthreads) +
            " lease-holding threads did not finish granting within 600 s");
  }
  auto g1 = Clock::now();
  {
    std::lock_guard<std::mutex> l(g_errors_mu);
    if (!g_errors.empty()) {  // let the threads go, then report
      check.open();
      drop.open();
    }
  }
  check_errors("keepalive grants");
  const double grant_secs = secs_between(g0, g1);
  log("keepalive: %llu leases granted over %zu connections in %.1f s; warm-up %.1f s, window %.1f "
      "s",
      static_cast<unsigned long long>(o.leases), nthreads, grant_secs, o.warmup, o.window);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));

  auto a = m.sample();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.window));
  auto b = m.sample();
  std::vector<long> rss(agents);
  for (size_t i = 0; i < agents; i++)
    rss[i] = rss_kib(m.pids[i]);

  check.open();
  if (!checked.wait_for(nthreads, 60)) stalled("lease info checks did not finish within 60 s");
  drop.open();
  auto d0 = Clock::now();
  for (auto& t : threads)
    t.join();
  const double drop_secs = secs_between(d0, Clock::now());
  check_errors("keepalive");
  // Session leases: every one revoked once its holder dropped it (bounded, 120 s).
  const double gone_secs = wait_no_leases(m, 120, "their holders dropped them");
  const double revoked_secs = gone_secs < 0 ? -1 : drop_secs + gone_secs;

  const double w = secs_between(a.t, b.t);
  const int leader = b.leader;
  uint64_t msgs = 0, renewed = 0, renewing = 0;
  double all_cpu_s = 0;
  std::vector<std::string> by_agent, cpu_pct, rss_mib, renewing_by, names;
  for (size_t i = 0; i < agents; i++) {
    uint64_t dm = b.status[i].renew_messages - a.status[i].renew_messages;
    msgs += dm;
    renewed += b.status[i].leases_renewed - a.status[i].leases_renewed;
    renewing += b.status[i].leases_renewing;
    by_agent.push_back(fmt("%.1f", static_cast<double>(dm) / w));
    all_cpu_s += static_cast<double>(b.ticks[i] - a.ticks[i]) / hz;
    cpu_pct.push_back(fmt("%.1f", 100.0 * static_cast<double>(b.ticks[i] - a.ticks[i]) / hz / w));
    rss_mib.push_back(fmt("%.0f", static_cast<double>(rss[i]) / 1024));
    renewing_by.push_back(std::to_string(b.status[i].leases_renewing));
    names.push_back(b.status[i].name);
  }
  const bool leader_changed = a.leader != b.leader || leader < 0;
  double leader_cpu_s = -1, time_entries = 0;
  std::string leader_name = "-";
  if (leader >= 0) {
    leader_cpu_s = static_cast<double>(b.ticks[leader] - a.ticks[leader]) / hz;
    time_entries =
        static_cast<double>(b.status[leader].time_entries - a.status[leader].time_entries);
    leader_name = b.status[leader].name;
  }
  const double lease_secs = static_cast<double>(o.leases) * w;
  const double per_lease_s = leader_cpu_s >= 0 ? leader_cpu_s * 1e6 / lease_secs : -1;
  const double net_per_lease_s = (leader_cpu_s >= 0 && idle_pct >= 0)
                                     ? (leader_cpu_s - idle_pct / 100.0 * w) * 1e6 / lease_secs
                                     : -1;
  std::printf(
      "keepalive leases=%llu agents=%zu conns=%zu ttl_ms=%lld idle_s=%.1f grant_secs=%.2f "
      "grant_rate=%.0f window_s=%.2f leader=%s leader_changed=%d members=%s renew_msgs=%llu "
      "renew_msgs_per_s=%.1f renew_msgs_per_s_by_agent=%s leases_renewed_per_s=%.0f "
      "expected_renewed_per_s=%.0f time_entries_per_s=%.2f leader_cpu_s=%.2f "
      "leader_cpu_pct=%.1f idle_cpu_pct=%.1f cpu_pct_by_member=%s cpu_us_per_lease_s=%.3f "
      "net_cpu_us_per_lease_s=%.3f cluster_cpu_us_per_lease_s=%.3f leader_rss_mib=%.0f "
      "rss_mib_by_member=%s "
      "leases_renewing=%llu leases_renewing_by_member=%s drop_secs=%.2f revoked_secs=%.2f\n",
      static_cast<unsigned long long>(o.leases), agents, nthreads, static_cast<long long>(o.ttl_ms),
      o.idle, grant_secs, grant_secs > 0 ? static_cast<double>(o.leases) / grant_secs : 0.0, w,
      leader_name.c_str(), leader_changed ? 1 : 0, joined(names).c_str(),
      static_cast<unsigned long long>(msgs), static_cast<double>(msgs) / w,
      joined(by_agent).c_str(), static_cast<double>(renewed) / w,
      static_cast<double>(o.leases) * 3000.0 / static_cast<double>(o.ttl_ms), time_entries / w,
      leader_cpu_s, leader_cpu_s >= 0 ? 100.0 * leader_cpu_s / w : -1.0, idle_pct,
      joined(cpu_pct).c_str(), per_lease_s, net_per_lease_s, all_cpu_s * 1e6 / lease_secs,
      leader >= 0 ? static_cast<double>(rss[leader]) / 1024 : -1.0, joined(rss_mib).c_str(),
      static_cast<unsigned long long>(renewing), joined(renewing_by).c_str(), drop_secs,
      revoked_secs);
  std::fflush(stdout);
  if (revoked_secs < 0) std::exit(1);
  if (renewing != o.leases) {
    std::fprintf(stderr, "prim_bench: keepalive: the agents renew %llu leases, not %llu\n",
                 static_cast<unsigned long long>(renewing),
                 static_cast<unsigned long long>(o.leases));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  Members m;
  m.sockets = o.sockets;
  for (const auto& s : o.sockets) {
    m.pids.push_back(server_pid(s));
    if (m.pids.back() <= 0) {
      std::fprintf(stderr, "prim_bench: nothing serves %s\n", s.c_str());
      return 1;
    }
    auto c = connect_or_fail(s);
    check_errors("connect");
    m.clients.push_back(std::move(c));
  }
  m.leader();
  if (wanted(o, "lock")) {
    log("lock: 1 client, %.1f s", o.seconds);
    lock_phase(o, 1);
    log("lock: %u clients, %.1f s", o.clients, o.seconds);
    lock_phase(o, o.clients);
  }
  if (wanted(o, "handoff")) {
    log("handoff: %u waiters, %u rounds", o.waiters, o.rounds);
    handoff_phase(o, m);
  }
  if (wanted(o, "grant")) {
    for (unsigned n : {1u, o.clients}) {
      log("grant: %u client(s), grant + revoke, %.1f s", n, o.seconds);
      grant_phase(o, n, true);
    }
    for (unsigned n : {1u, o.clients}) {
      log("grant: %u client(s), kept %lld ms leases left to expire, %.1f s", n,
          static_cast<long long>(o.short_ttl_ms), o.seconds);
      grant_phase(o, n, false);
    }
    // Let them expire before anything else is measured (bounded: the TTL + 2 s).
    std::this_thread::sleep_for(std::chrono::milliseconds(o.short_ttl_ms + 2000));
  }
  if (wanted(o, "keepalive")) {
    log("keepalive: %llu leases, TTL %lld ms, idle baseline %.1f s",
        static_cast<unsigned long long>(o.leases), static_cast<long long>(o.ttl_ms), o.idle);
    keepalive_phase(o, m);
  }
  return 0;
}
