// renew_model: the keepalive load of many agents, at a scale this machine cannot run as real
// processes (100 agents x 1,000 leases by default), on the real state machine: one WiredTiger
// store with the real primitives::State holds every lease, and each simulated agent sends
// what PrimService sends, one LeaseRenewRequest per renew tick with the leases due (each
// after ttl/3), stamped with simulated cluster time. Every replica applies these entries,
// so the apply CPU printed here is each member's cost of the load; the leader's extra is one
// Raft entry per message (see the cluster bench for a replicated entry's cost). Prints
// figures; exits 1 only if a lease ended while it was being renewed.
//
//   renew_model [--agents N] [--per-agent N] [--ttl-ms MS] [--tick-ms MS] [--seconds S]
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "cluster/storage/mvcc_store.hpp"
#include "primitives/state.hpp"

namespace {

using namespace keel;
using namespace keel::storage;

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

bool apply_all(MvccStore& store, const std::vector<Command>& cmds, uint64_t stamp,
               uint64_t* index) {
  std::vector<ApplyEntry> entries;
  entries.reserve(cmds.size());
  for (const auto& c : cmds)
    entries.push_back(ApplyEntry{++*index, stamp, &c});
  auto results = store.apply_entries(entries, 0, nullptr);
  for (const auto& r : results) {
    if (!r.ok()) {
      std::fprintf(stderr, "renew_model: apply failed: %s\n", r.error().message.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t agents = 100, per_agent = 1000, ttl_ms = 10000, tick_ms = 200, seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const uint64_t v = std::strtoull(argv[i + 1], nullptr, 10);
    if (a == "--agents") {
      agents = v;
    } else if (a == "--per-agent") {
      per_agent = v;
    } else if (a == "--ttl-ms") {
      ttl_ms = v;
    } else if (a == "--tick-ms") {
      tick_ms = v;
    } else if (a == "--seconds") {
      seconds = v;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--agents N] [--per-agent N] [--ttl-ms MS] [--tick-ms MS] "
                   "[--seconds S]\n",
                   argv[0]);
      return 2;
    }
  }
  char tmpl[] = "/tmp/keel-renew-model-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) return 1;
  int rc = 0;
  {
    primitives::State state;
    EngineOptions o;
    o.dir = dir;
    o.cache_size_mb = 48;
    o.extension = &state;
    auto engine = open_engine(o);
    if (!engine) {
      std::fprintf(stderr, "renew_model: %s\n", engine.error().message.c_str());
      return 1;
    }
    MvccStore& store = (*engine)->store();
    uint64_t index = 0;
    const uint64_t leases = agents * per_agent;
    // Grants, 1,000 per batch, at cluster time 1.
    const double g0 = cpu_seconds();
    std::vector<Command> batch;
    for (uint64_t id = 1; id <= leases; ++id) {
      batch.push_back(LeaseGrantRequest{static_cast<int64_t>(id), static_cast<int64_t>(ttl_ms)});
      if (batch.size() == 1000 || id == leases) {
        if (!apply_all(store, batch, 1, &index)) return 1;
        batch.clear();
      }
    }
    const double grant_cpu = cpu_seconds() - g0;
    // Renewals: agent a holds leases a*per_agent+1 .. (a+1)*per_agent, each renewed at the
    // first tick after ttl/3 since its last renewal (as PrimService::renew_due does).
    std::vector<uint64_t> last(leases + 1, 1);
    uint64_t messages = 0, renewals = 0;
    double apply_cpu = 0;
    const uint64_t end_ms = 1 + seconds * 1000;
    for (uint64_t t = 1 + tick_ms; t <= end_ms; t += tick_ms) {
      std::vector<Command> tick;  // one entry per agent with something due
      for (uint64_t a = 0; a < agents; ++a) {
        LeaseRenewRequest req;
        for (uint64_t id = a * per_agent + 1; id <= (a + 1) * per_agent; ++id) {
          if (t - last[id] >= ttl_ms / 3) {
            req.ids.push_back(static_cast<int64_t>(id));
            last[id] = t;
          }
        }
        if (!req.ids.empty()) {
          renewals += req.ids.size();
          tick.push_back(std::move(req));
        }
      }
      messages += tick.size();
      const double c0 = cpu_seconds();
      if (!tick.empty() && !apply_all(store, tick, t, &index)) return 1;
      apply_cpu += cpu_seconds() - c0;
    }
    auto rd = store.reader();
    auto alive = primitives::State::list_leases(*rd);
    const uint64_t alive_n = alive ? alive->size() : 0;
    const double sim_s = static_cast<double>(seconds);
    std::printf(
        "renew_model: %llu agents x %llu leases = %llu leases, TTL %llu ms, renew tick %llu ms, "
        "%llu s "
        "of cluster time\n",
        static_cast<unsigned long long>(agents), static_cast<unsigned long long>(per_agent),
        static_cast<unsigned long long>(leases), static_cast<unsigned long long>(ttl_ms),
        static_cast<unsigned long long>(tick_ms), static_cast<unsigned long long>(seconds));
    std::printf(
        "| renewal messages/s reaching the leader | %.1f | at most agents x 1000/tick = %.0f, "
        "whatever the lease count |\n",
        static_cast<double>(messages) / sim_s,
        static_cast<double>(agents) * 1000.0 / static_cast<double>(tick_ms));
    std::printf("| leases renewed/s | %.0f | |\n", static_cast<double>(renewals) / sim_s);
    std::printf("| apply CPU per member (%% of a core) | %.1f | WiredTiger + primitives::State |\n",
                100.0 * apply_cpu / sim_s);
    std::printf("| apply CPU per renewal (us) | %.2f | |\n",
                renewals ? 1e6 * apply_cpu / static_cast<double>(renewals) : 0.0);
    std::printf("| apply CPU per held lease-second (us) | %.3f | |\n",
                1e6 * apply_cpu / sim_s / static_cast<double>(leases));
    std::printf("| grants applied/s (batches of 1,000) | %.0f | |\n",
                static_cast<double>(leases) / grant_cpu);
    std::printf("| leases alive at the end | %llu of %llu | none may end while renewed |\n",
                static_cast<unsigned long long>(alive_n), static_cast<unsigned long long>(leases));
    if (alive_n != leases) rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
