// kv_bench: a load generator for keeld over its Unix socket (Cap'n Proto RPC).
//
// Starts its own keeld on a fresh temporary data directory (or uses --socket PATH), then runs
// closed-loop workloads with 8-byte keys and 256-byte values:
//   put, 1 and N clients          throughput, latency p50/p99/p99.9, fsyncs/s, puts per fsync
//   serializable get, 1 and N     (a point Range with serializable=true)
//   watch delivery                one writer puts, one watcher receives; latency = put sent ->
//                                 event received
// and reports keeld's RSS before and after. Each client is its own connection (unless --conns
// says fewer) with one request outstanding; all clients share this process's single KJ event
// loop, so the generator costs one core at most. It prints figures and asserts nothing about
// them; it fails (exit 1) only when an operation fails.
//
// --workload put|get-l|get-s runs one workload only and prints one line of key=value figures,
// for scripts (tests/bench/cluster/run.sh); --socket may then name several members' sockets,
// the connections spread over them in turn.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/keel.capnp.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/timer.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef KEELD_PATH
#define KEELD_PATH "keeld"
#endif

namespace {

namespace rpc = keel::rpc;
using Clock = std::chrono::steady_clock;

constexpr size_t kKeyBytes = 8;
constexpr size_t kValueBytes = 256;

struct Options {
  std::string socket;  // empty: start our own keeld
  std::string keeld = KEELD_PATH;
  double seconds = 5;  // per workload, unless ops > 0
  uint64_t ops = 0;    // fixed op count per workload
  unsigned clients = 64;
  unsigned conns = 0;  // 0 = one per client
  uint64_t keys = 10000;
  bool smoke = false;
  std::string only = "put,get,watch";  // workloads to run
  std::string workload;                // put | get-l | get-s: one workload, key=value output
  bool prefill = true;                 // --no-prefill: gets find what earlier puts left
  bool random_values = false;          // --random-values: fresh random bytes for every put
  double rate = 0;                     // --rate: ops/s over all clients (0 = as fast as they go)
};

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

[[noreturn]] void usage(const char* argv0, const char* why) {
  if (why) std::fprintf(stderr, "kv_bench: %s\n", why);
  std::fprintf(
      stderr,
      "usage: %s [--socket PATH] [--keeld PATH] [--seconds S | --ops N] [--clients N]\n"
      "          [--conns N] [--keys N] [--only put,get,watch] [--smoke]\n"
      "       %s --socket PATH[,PATH...] --workload put|get-l|get-s [--clients N] [--conns N]\n"
      "          [--keys N] [--ops N | --seconds S] [--no-prefill]\n"
      "  --socket PATH  use the agent serving PATH instead of starting keeld (it writes keys\n"
      "                 k0000000.. and w0000000.. there and leaves them)\n"
      "  --seconds S    duration of each workload (default 5)\n"
      "  --ops N        a fixed number of operations per workload instead\n"
      "  --clients N    concurrent clients of the concurrent workloads (default 64)\n"
      "  --conns N      connections they share (default: one per client)\n"
      "  --keys N       key space (default 10000)\n"
      "  --only LIST    workloads to run, of put,get,watch (default all)\n"
      "  --smoke        a few hundred ops per workload; checks only that all succeed\n"
      "  --workload W   run only W and print one line of key=value figures (ops, errors, secs,\n"
      "                 rate, p50_us, p99_us, p999_us; puts: fsyncs, the log syncs of the first\n"
      "                 socket's member meanwhile): put (key n %% keys for the n-th put),\n"
      "                 get-l (linearizable point reads), get-s (serializable point reads);\n"
      "                 with several sockets the connections go to them in turn\n"
      "  --no-prefill   gets: do not put the key space first (it was written before)\n"
      "  --random-values  puts: fresh random (incompressible) bytes for every value, instead\n"
      "                 of one fixed pattern\n"
      "  --rate R       --workload: issue the n-th op no earlier than n/R s after the start\n"
      "                 (R ops/s over all clients, each still waiting for its reply): the same\n"
      "                 offered load whatever the server's speed, for CPU per op\n",
      argv0, argv0);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  auto value = [&](int& i) -> const char* {
    if (i + 1 >= argc) usage(argv[0], "missing value");
    return argv[++i];
  };
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--socket") {
      o.socket = value(i);
    } else if (a == "--keeld") {
      o.keeld = value(i);
    } else if (a == "--seconds") {
      o.seconds = std::atof(value(i));
    } else if (a == "--ops") {
      o.ops = std::strtoull(value(i), nullptr, 10);
    } else if (a == "--clients") {
      o.clients = static_cast<unsigned>(std::strtoul(value(i), nullptr, 10));
    } else if (a == "--conns") {
      o.conns = static_cast<unsigned>(std::strtoul(value(i), nullptr, 10));
    } else if (a == "--keys") {
      o.keys = std::strtoull(value(i), nullptr, 10);
    } else if (a == "--only") {
      o.only = value(i);
    } else if (a == "--smoke") {
      o.smoke = true;
    } else if (a == "--workload") {
      o.workload = value(i);
      if (o.workload != "put" && o.workload != "get-l" && o.workload != "get-s") {
        usage(argv[0], "--workload must be put, get-l or get-s");
      }
    } else if (a == "--random-values") {
      o.random_values = true;
    } else if (a == "--rate") {
      o.rate = std::atof(value(i));
      if (!(o.rate > 0)) usage(argv[0], "--rate must be positive");
    } else if (a == "--no-prefill") {
      o.prefill = false;
    } else if (a == "-h" || a == "--help") {
      usage(argv[0], nullptr);
    } else {
      usage(argv[0], ("unknown argument " + a).c_str());
    }
  }
  if (o.smoke) {
    o.ops = 300;
    o.keys = 200;
    if (o.conns == 0) o.conns = 8;
  }
  if (o.clients == 0 || o.clients > 4096) usage(argv[0], "--clients must be 1..4096");
  if (o.conns == 0 || o.conns > o.clients) o.conns = o.clients;
  if (o.keys == 0 || o.keys > 9999999) usage(argv[0], "--keys must be 1..9999999");
  if (o.ops == 0 && !(o.seconds > 0 && o.seconds <= 3600)) {
    usage(argv[0], "--seconds must be in (0, 3600]");
  }
  if (!o.workload.empty() && o.socket.empty()) usage(argv[0], "--workload needs --socket");
  if (o.socket.find(',') != std::string::npos && o.workload.empty()) {
    usage(argv[0], "several sockets only with --workload");
  }
  return o;
}

// ---- keeld process ----------------------------------------------------------------------

bool socket_accepts(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

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

struct Memory {
  long rss_kib = -1;
  long hwm_kib = -1;
};
Memory memory_of(pid_t pid) {
  Memory m;
  if (pid <= 0) return m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) m.rss_kib = std::atol(line.c_str() + 6);
    if (line.rfind("VmHWM:", 0) == 0) m.hwm_kib = std::atol(line.c_str() + 6);
  }
  return m;
}

// CPU time (user + system) of a process so far, in seconds; -1 if unknown.
double cpu_seconds(pid_t pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  // After "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
  const char* p = stat.c_str() + paren + 1;
  char* end = nullptr;
  unsigned long long ticks = 0;
  for (int field = 3; field <= 15; field++) {
    while (*p == ' ')
      p++;
    if (field >= 14) {
      ticks += std::strtoull(p, &end, 10);
      p = end;
    } else {
      while (*p && *p != ' ')
        p++;
    }
  }
  return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// keeld on a fresh temporary directory; stopped by PID (SIGTERM, then SIGKILL after a bounded
// wait) and the directory removed when this object goes.
class Agent {
 public:
  Agent() = default;
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;
  ~Agent() {
    stop();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  // Must run before any KJ event loop or thread exists (fork).
  bool start(const std::string& keeld) {
    char tmpl[] = "/tmp/kv_bench.XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("kv_bench: mkdtemp");
      return false;
    }
    dir_ = tmpl;
    socket_ = dir_ + "/keel.sock";
    const std::string data = dir_ + "/data";
    pid_ = fork();
    if (pid_ < 0) {
      std::perror("kv_bench: fork");
      return false;
    }
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the benchmark
      execl(keeld.c_str(), keeld.c_str(), "--data-dir", data.c_str(), "--socket", socket_.c_str(),
            "--log-level", "warn", static_cast<char*>(nullptr));
      std::fprintf(stderr, "kv_bench: exec %s: %s\n", keeld.c_str(), std::strerror(errno));
      _exit(127);
    }
    // Bounded wait for the socket: 30 s, checking that keeld is still alive.
    for (int i = 0; i < 1500; i++) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        std::fprintf(stderr, "kv_bench: keeld exited during start-up (status %d)\n", status);
        pid_ = -1;
        return false;
      }
      if (socket_accepts(socket_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::fprintf(stderr, "kv_bench: keeld did not open %s within 30 s\n", socket_.c_str());
    return false;
  }

  // Returns keeld's exit status as a string for the report.
  std::string stop() {
    if (pid_ <= 0) return "not running";
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 1000; i++) {  // 20 s
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                 : "signal " + std::to_string(WTERMSIG(status));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return "did not stop within 20 s of SIGTERM; killed";
  }

  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, socket_;
  pid_t pid_ = -1;
};

// ---- RPC plumbing -----------------------------------------------------------------------

struct Conn {
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;  // refers to *stream: declared after it
  rpc::Keel::Client keel = nullptr;
};

std::unique_ptr<Conn> connect(kj::AsyncIoContext& io, const std::string& path) {
  auto conn = std::make_unique<Conn>();
  conn->stream = io.provider->getNetwork()
                     .parseAddress(kj::str("unix:", path.c_str()))
                     .wait(io.waitScope)
                     ->connect()
                     .wait(io.waitScope);
  conn->rpc = kj::heap<capnp::TwoPartyClient>(*conn->stream);
  conn->keel = conn->rpc->bootstrap().castAs<rpc::Keel>();
  return conn;
}

capnp::Data::Reader blob(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

std::string make_key(char prefix, uint64_t n) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%c%07llu", prefix, static_cast<unsigned long long>(n));
  return std::string(buf, kKeyBytes);
}

std::string error_text(rpc::Error::Reader e) {
  return std::string(kj::str(e.getCode()).cStr()) + ": " + e.getMessage().cStr();
}

uint64_t log_syncs(Conn& c, kj::WaitScope& ws) {
  return c.keel.statusRequest().send().wait(ws).getStatus().getLogSyncs();
}

// ---- measurements -----------------------------------------------------------------------

struct Result {
  std::string name;
  unsigned clients = 0, conns = 0;
  uint64_t ops = 0, errors = 0;
  double secs = 0;
  std::vector<uint64_t> lat_ns;
  std::optional<uint64_t> fsyncs;         // puts only
  double keeld_cpu = -1, bench_cpu = -1;  // CPU seconds used during the run
  std::string first_error;
};

double percentile_us(std::vector<uint64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  size_t idx = std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted[idx]) / 1000.0;
}

// One operation: sends a request for op number `seq`; resolves to "" or an error message.
using OpFn = std::function<kj::Promise<std::string>(rpc::Keel::Client&, uint64_t seq)>;

// Closed loop: `clients` slots, each with one request outstanding on conns[slot % conns],
// until `ops` requests were issued (ops > 0) or `seconds` passed.
class ClosedLoop {
 public:
  // rate > 0: the n-th op is issued no earlier than n / rate seconds after the start.
  ClosedLoop(std::vector<std::unique_ptr<Conn>>& conns, unsigned clients, OpFn op, uint64_t ops,
             double seconds, Result& out, kj::Timer& timer, double rate)
      : conns_(conns),
        clients_(clients),
        op_(std::move(op)),
        ops_(ops),
        out_(out),
        timer_(timer),
        rate_(rate) {
    deadline_ = Clock::now() +
                std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    out_.lat_ns.reserve(ops > 0 ? ops : 1 << 20);
  }

  kj::Promise<void> run() {
    start_ = Clock::now();
    auto promises = kj::heapArrayBuilder<kj::Promise<void>>(clients_);
    for (unsigned i = 0; i < clients_; i++)
      promises.add(slot(i));
    return kj::joinPromises(promises.finish()).then([this]() {
      out_.secs = std::chrono::duration<double>(Clock::now() - start_).count();
    });
  }

 private:
  bool stop() const { return ops_ > 0 ? issued_ >= ops_ : Clock::now() >= deadline_; }

  kj::Promise<void> slot(unsigned i) {
    if (stop()) return kj::READY_NOW;
    uint64_t seq = issued_++;
    if (rate_ > 0) {
      const auto due =
          start_ + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(seq) / rate_));
      const auto now = Clock::now();
      if (due > now) {
        const auto wait_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(due - now).count();
        return timer_.afterDelay(wait_ns * kj::NANOSECONDS).then([this, i, seq] {
          return issue(i, seq);
        });
      }
    }
    return issue(i, seq);
  }

  kj::Promise<void> issue(unsigned i, uint64_t seq) {
    auto t0 = Clock::now();
    return op_(conns_[i % conns_.size()]->keel, seq).then([this, i, t0](std::string err) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
      out_.ops++;
      out_.lat_ns.push_back(static_cast<uint64_t>(ns));
      if (!err.empty() && out_.errors++ == 0) out_.first_error = err;
      return slot(i);
    });
  }

  std::vector<std::unique_ptr<Conn>>& conns_;
  unsigned clients_;
  OpFn op_;
  uint64_t ops_;
  Result& out_;
  kj::Timer& timer_;
  double rate_;
  uint64_t issued_ = 0;
  Clock::time_point start_, deadline_;
};

// CPU used by keeld and by this process between construction and stop().
struct CpuMeter {
  explicit CpuMeter(pid_t pid) : pid(pid), keeld0(cpu_seconds(pid)), self0(cpu_seconds(getpid())) {}
  void stop(Result& r) const {
    double k = cpu_seconds(pid), b = cpu_seconds(getpid());
    if (keeld0 >= 0 && k >= 0) r.keeld_cpu = k - keeld0;
    if (self0 >= 0 && b >= 0) r.bench_cpu = b - self0;
  }
  pid_t pid;
  double keeld0, self0;
};

class Bench {
 public:
  Bench(const Options& o, const std::string& sockets, pid_t pid, kj::AsyncIoContext& io)
      : o_(o), sockets_(split_commas(sockets)), pid_(pid), io_(io), value_(kValueBytes, 'v') {
    for (size_t i = 0; i < kValueBytes; i++)
      value_[i] = static_cast<char>('a' + i % 26);
  }

  std::vector<std::unique_ptr<Conn>> open(unsigned n) {
    std::vector<std::unique_ptr<Conn>> conns;
    for (unsigned i = 0; i < n; i++)
      conns.push_back(connect(io_, sockets_[i % sockets_.size()]));
    return conns;
  }

  // Puts every key of the key space (txns of 100 puts) so that gets find them.
  void prefill(Conn& c) {
    for (uint64_t first = 0; first < o_.keys; first += 100) {
      auto req = c.keel.txnRequest();
      uint64_t n = std::min<uint64_t>(100, o_.keys - first);
      auto ops = req.initRequest().initSuccess(static_cast<unsigned>(n));
      for (uint64_t i = 0; i < n; i++) {
        auto put = ops[static_cast<unsigned>(i)].initPut();
        put.setKey(blob(make_key('k', first + i)));
        put.setValue(blob(value_));
      }
      auto resp = req.send().wait(io_.waitScope);
      if (resp.getError().getCode() != rpc::ErrorCode::OK) {
        throw std::runtime_error("prefill txn failed: " + error_text(resp.getError()));
      }
    }
  }

  // Fills value_ with fresh pseudo-random bytes (xorshift64*: incompressible to any block
  // compressor, and cheap beside an RPC).
  void randomize_value() {
    for (size_t i = 0; i < value_.size(); i += 8) {
      rng_ ^= rng_ >> 12;
      rng_ ^= rng_ << 25;
      rng_ ^= rng_ >> 27;
      uint64_t x = rng_ * 2685821657736338717ull;
      std::memcpy(&value_[i], &x, std::min<size_t>(8, value_.size() - i));
    }
  }

  Result puts(unsigned clients) {
    Result r = closed_loop("put", clients, [this](rpc::Keel::Client& keel, uint64_t seq) {
      auto req = keel.putRequest();
      auto p = req.initRequest();
      p.setKey(blob(make_key('k', seq % o_.keys)));
      if (o_.random_values) randomize_value();
      p.setValue(blob(value_));
      return req.send().then([](capnp::Response<rpc::Keel::PutResults> resp) -> std::string {
        if (resp.getError().getCode() != rpc::ErrorCode::OK) return error_text(resp.getError());
        if (resp.getResponse().getHeader().getRevision() <= 0) return "put reply has no revision";
        return {};
      });
    });
    return r;
  }

  Result gets(unsigned clients, bool serializable = true) {
    return closed_loop(
        serializable ? "get (serializable)" : "get (linearizable)", clients,
        [this, serializable](rpc::Keel::Client& keel, uint64_t seq) {
          auto req = keel.rangeRequest();
          auto g = req.initRequest();
          // Spread over the key space (a stride coprime with most key-space sizes).
          g.setKey(blob(make_key('k', (seq * 7919) % o_.keys)));
          g.setSerializable(serializable);
          return req.send().then([](capnp::Response<rpc::Keel::RangeResults> resp) -> std::string {
            if (resp.getError().getCode() != rpc::ErrorCode::OK) {
              return error_text(resp.getError());
            }
            auto kvs = resp.getResponse().getKvs();
            if (kvs.size() != 1 || kvs[0].getValue().size() != kValueBytes) {
              return "get returned " + std::to_string(kvs.size()) + " kvs, expected 1 of " +
                     std::to_string(kValueBytes) + " bytes";
            }
            return {};
          });
        });
  }

  Result watch();

 private:
  Result closed_loop(const char* name, unsigned clients, OpFn op) {
    unsigned nconns = std::min(clients, o_.conns);
    auto conns = open(nconns);
    Result r;
    r.name = name;
    r.clients = clients;
    r.conns = nconns;
    bool is_put = std::strcmp(name, "put") == 0;
    uint64_t syncs0 = is_put ? log_syncs(*conns[0], io_.waitScope) : 0;
    ClosedLoop loop(conns, clients, std::move(op), o_.ops, o_.seconds, r, io_.provider->getTimer(),
                    o_.workload.empty() ? 0 : o_.rate);
    CpuMeter cpu(pid_);
    loop.run().wait(io_.waitScope);
    cpu.stop(r);
    if (is_put) r.fsyncs = log_syncs(*conns[0], io_.waitScope) - syncs0;
    return r;
  }

  const Options& o_;
  std::vector<std::string> sockets_;
  pid_t pid_;
  kj::AsyncIoContext& io_;
  std::string value_;
  uint64_t rng_ = 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(::getpid());
};

// ---- watch delivery ---------------------------------------------------------------------

struct WatchState {
  std::vector<Clock::time_point> sent;  // by sequence number
  std::vector<bool> seen;
  uint64_t sent_count = 0, received = 0, duplicates = 0;
  bool writer_done = false;
  std::string error;
  Result* out = nullptr;
  kj::Own<kj::PromiseFulfiller<void>> all_received;
  void check_done() {
    if (writer_done && received == sent_count && all_received->isWaiting()) {
      all_received->fulfill();
    }
  }
};

class BenchWatcher final : public rpc::Watcher::Server {
 public:
  explicit BenchWatcher(WatchState& st) : st_(st) {}

 protected:
  kj::Promise<void> events(EventsContext ctx) override {
    auto now = Clock::now();
    for (auto e : ctx.getParams().getEvents()) {
      auto key = e.getKv().getKey();
      if (key.size() != kKeyBytes) continue;
      uint64_t seq = std::strtoull(
          std::string(reinterpret_cast<const char*>(key.begin()) + 1, 7).c_str(), nullptr, 10);
      if (seq >= st_.sent.size()) continue;
      if (st_.seen[seq]) {
        st_.duplicates++;
        continue;
      }
      st_.seen[seq] = true;
      st_.received++;
      st_.out->lat_ns.push_back(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - st_.sent[seq]).count()));
    }
    st_.check_done();
    return kj::READY_NOW;
  }
  kj::Promise<void> progress(ProgressContext) override { return kj::READY_NOW; }
  kj::Promise<void> canceled(CanceledContext ctx) override {
    st_.error = "watch canceled: " + error_text(ctx.getParams().getError());
    if (st_.all_received->isWaiting()) st_.all_received->fulfill();
    return kj::READY_NOW;
  }

 private:
  WatchState& st_;
};

Result Bench::watch() {
  Result r;
  r.name = "watch delivery";
  r.clients = 1;
  r.conns = 2;
  auto conns = open(2);
  auto& writer = *conns[0];
  auto& watcher_conn = *conns[1];

  WatchState st;
  st.out = &r;
  // The key space of this workload: w0000000..w9999999, one key per put.
  const uint64_t cap = o_.ops > 0 ? o_.ops : 9999999;
  auto paf = kj::newPromiseAndFulfiller<void>();
  st.all_received = kj::mv(paf.fulfiller);

  auto wreq = watcher_conn.keel.watchRequest();
  auto w = wreq.initRequest();
  w.setKey(blob("w"));
  w.setRangeEnd(blob("x"));
  wreq.setWatcher(kj::heap<BenchWatcher>(st));
  auto wresp = wreq.send().wait(io_.waitScope);
  if (wresp.getError().getCode() != rpc::ErrorCode::OK) {
    r.errors = 1;
    r.first_error = "watch: " + error_text(wresp.getError());
    return r;
  }
  rpc::WatchHandle::Client handle = wresp.getHandle();  // dropping it cancels the watch

  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(o_.seconds));
  auto start = Clock::now();
  CpuMeter cpu(pid_);
  // Sequential writer: one put outstanding. The send time is taken just before send().
  std::function<kj::Promise<void>()> next = [&]() -> kj::Promise<void> {
    bool stop =
        o_.ops > 0 ? st.sent_count >= o_.ops : (Clock::now() >= deadline || st.sent_count >= cap);
    if (stop || !st.error.empty()) return kj::READY_NOW;
    uint64_t seq = st.sent_count;
    if (st.sent.size() <= seq) {
      st.sent.resize(seq + 1);
      st.seen.resize(seq + 1);
    }
    auto req = writer.keel.putRequest();
    auto p = req.initRequest();
    p.setKey(blob(make_key('w', seq)));
    p.setValue(blob(value_));
    st.sent[seq] = Clock::now();
    st.sent_count++;
    return req.send().then([&](capnp::Response<rpc::Keel::PutResults> resp) {
      if (resp.getError().getCode() != rpc::ErrorCode::OK && st.error.empty()) {
        st.error = "put: " + error_text(resp.getError());
      }
      return next();
    });
  };
  next().wait(io_.waitScope);
  st.writer_done = true;
  st.check_done();
  // Every event must arrive; bounded wait.
  bool timed_out = false;
  paf.promise
      .exclusiveJoin(
          io_.provider->getTimer().afterDelay(30 * kj::SECONDS).then([&]() { timed_out = true; }))
      .wait(io_.waitScope);
  r.secs = std::chrono::duration<double>(Clock::now() - start).count();
  cpu.stop(r);
  r.ops = st.received;
  if (timed_out) {
    st.error = "only " + std::to_string(st.received) + " of " + std::to_string(st.sent_count) +
               " events arrived within 30 s";
  }
  if (st.error.empty() && st.duplicates > 0) {
    st.error = std::to_string(st.duplicates) + " events delivered twice";
  }
  if (!st.error.empty()) {
    r.errors = std::max<uint64_t>(1, st.sent_count - st.received);
    r.first_error = st.error;
  }
  return r;
}

// ---- report -----------------------------------------------------------------------------

std::string mib(long kib) {
  if (kib < 0) return "?";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(kib) / 1024.0);
  return buf;
}

void print_header() {
  std::printf("%-20s %7s %5s %9s %6s %10s %9s %9s %9s %9s %10s %6s %6s\n", "workload", "clients",
              "conns", "ops", "secs", "ops/s", "p50 us", "p99 us", "p99.9 us", "fsyncs/s",
              "puts/fsync", "keeld", "bench");
}

std::string cpu_percent(double cpu_s, double secs) {
  if (cpu_s < 0 || secs <= 0) return "?";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f%%", 100.0 * cpu_s / secs);
  return buf;
}

void print_row(Result& r) {
  std::sort(r.lat_ns.begin(), r.lat_ns.end());
  double rate = r.secs > 0 ? static_cast<double>(r.ops) / r.secs : 0;
  std::string fs = "-", per = "-";
  if (r.fsyncs) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f",
                  r.secs > 0 ? static_cast<double>(*r.fsyncs) / r.secs : 0);
    fs = buf;
    if (*r.fsyncs > 0) {
      std::snprintf(buf, sizeof(buf), "%.1f",
                    static_cast<double>(r.ops) / static_cast<double>(*r.fsyncs));
      per = buf;
    }
  }
  std::printf("%-20s %7u %5u %9llu %6.2f %10.0f %9.1f %9.1f %9.1f %9s %10s %6s %6s\n",
              r.name.c_str(), r.clients, r.conns, static_cast<unsigned long long>(r.ops), r.secs,
              rate, percentile_us(r.lat_ns, 0.50), percentile_us(r.lat_ns, 0.99),
              percentile_us(r.lat_ns, 0.999), fs.c_str(), per.c_str(),
              cpu_percent(r.keeld_cpu, r.secs).c_str(), cpu_percent(r.bench_cpu, r.secs).c_str());
  if (r.errors > 0) {
    std::printf("  ^ %llu failed; first: %s\n", static_cast<unsigned long long>(r.errors),
                r.first_error.c_str());
  }
  std::fflush(stdout);
}

// --workload: one closed loop, one line of key=value figures on stdout.
int run_workload(const Options& o) {
  auto io = kj::setupAsyncIo();
  Bench bench(o, o.socket, -1, io);
  bool get = o.workload != "put";
  if (get && o.prefill) {
    auto conns = bench.open(1);
    bench.prefill(*conns[0]);
  }
  Result r = get ? bench.gets(o.clients, o.workload == "get-s") : bench.puts(o.clients);
  std::sort(r.lat_ns.begin(), r.lat_ns.end());
  double rate = r.secs > 0 ? static_cast<double>(r.ops) / r.secs : 0;
  std::printf(
      "workload=%s clients=%u conns=%u ops=%llu errors=%llu secs=%.3f rate=%.0f p50_us=%.1f "
      "p99_us=%.1f p999_us=%.1f",
      o.workload.c_str(), r.clients, r.conns, static_cast<unsigned long long>(r.ops),
      static_cast<unsigned long long>(r.errors), r.secs, rate, percentile_us(r.lat_ns, 0.50),
      percentile_us(r.lat_ns, 0.99), percentile_us(r.lat_ns, 0.999));
  // Puts: the log fsyncs of the first socket's member meanwhile (group commit shows here).
  if (r.fsyncs) std::printf(" fsyncs=%llu", static_cast<unsigned long long>(*r.fsyncs));
  std::printf("\n");
  if (r.errors > 0) {
    std::fprintf(stderr, "kv_bench: %llu failed; first: %s\n",
                 static_cast<unsigned long long>(r.errors), r.first_error.c_str());
    return 1;
  }
  return 0;
}

int run(const Options& o, const std::string& socket, pid_t pid) {
  auto io = kj::setupAsyncIo();
  Bench bench(o, socket, pid, io);
  Memory before = memory_of(pid);

  std::printf("kv_bench: keeld pid %d on %s; %zu-byte keys, %zu-byte values, %llu keys; %s\n",
              static_cast<int>(pid), socket.c_str(), kKeyBytes, kValueBytes,
              static_cast<unsigned long long>(o.keys),
              o.ops > 0 ? (std::to_string(o.ops) + " ops per workload").c_str()
                        : (kj::str(o.seconds).cStr() + std::string(" s per workload")).c_str());
  {
    auto conns = bench.open(1);
    bench.prefill(*conns[0]);
  }
  print_header();
  uint64_t errors = 0, ops = 0;
  auto record = [&](Result r) {
    print_row(r);
    errors += r.errors;
    ops += r.ops;
  };
  auto wanted = [&](const char* w) {
    return ("," + o.only + ",").find(std::string(",") + w + ",") != std::string::npos;
  };
  if (wanted("put")) {
    record(bench.puts(1));
    record(bench.puts(o.clients));
  }
  if (wanted("get")) {
    record(bench.gets(1));
    record(bench.gets(o.clients));
  }
  if (wanted("watch")) record(bench.watch());
  Memory after = memory_of(pid);
  std::printf(
      "latency: per request, from send to reply (watch: put sent -> event received)\n"
      "keeld, bench: CPU used by each process during the workload (100%% = one core)\n");
  std::printf("keeld RSS: before %s (peak %s), after %s (peak %s)\n", mib(before.rss_kib).c_str(),
              mib(before.hwm_kib).c_str(), mib(after.rss_kib).c_str(), mib(after.hwm_kib).c_str());
  if (errors > 0) {
    std::printf("kv_bench: %llu operations failed\n", static_cast<unsigned long long>(errors));
    return 1;
  }
  if (o.smoke) {
    std::printf("kv_bench: smoke run ok: all %llu operations succeeded\n",
                static_cast<unsigned long long>(ops));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  if (!o.workload.empty()) {
    int rc = 1;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { rc = run_workload(o); })) {
      std::fprintf(stderr, "kv_bench: %s\n", e->getDescription().cStr());
      rc = 1;
    }
    return rc;
  }

  Agent agent;  // forks before any KJ event loop exists
  std::string socket = o.socket;
  pid_t pid = -1;
  if (socket.empty()) {
    if (!agent.start(o.keeld)) return 1;
    socket = agent.socket();
    pid = agent.pid();
  } else {
    pid = server_pid(socket);
    if (pid <= 0) {
      std::fprintf(stderr, "kv_bench: nothing accepts connections on %s\n", socket.c_str());
      return 1;
    }
  }

  int rc = 1;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { rc = run(o, socket, pid); })) {
    std::fprintf(stderr, "kv_bench: %s\n", e->getDescription().cStr());
    rc = 1;
  }
  if (agent.pid() > 0) {
    std::string how = agent.stop();
    std::printf("keeld stopped (%s)\n", how.c_str());
    if (how != "exit 0") rc = 1;
  }
  return rc;
}
