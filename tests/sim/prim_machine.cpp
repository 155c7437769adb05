// keel_prim_sim: the Raft simulator (sim.cpp) with keel's primitives state machine on every
// member (SimMachine). Client commands are leases, locks, semaphores and keys put with
// leases, stamped with the simulated clock; members crash, restart from snapshots, install
// snapshots, get partitioned and change leaders while they run. The simulator checks that
// every member reaches the same primitives state at the same index; this machine checks,
// after every entry on every member, the primitives' own promises:
//   - a lease is alive exactly while cluster time is before its last acknowledged grant or
//     renewal + ttl (never ends early, never late);
//   - a new lock holder's fencing token is above every token handed out before, and only a
//     live lease holds a lock, a slot or a key;
//   - a semaphore never has more holders than max, nor a free slot while someone waits.
//
//   keel_prim_sim --seeds K [--from N]    K seeds from N
//   keel_prim_sim --seed N [--trace]      one seed, replayable
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "cluster/model/bytes.hpp"
#include "primitives/state.hpp"
#include "tests/sim/sim.hpp"

namespace {

using namespace keel;
using namespace keel::storage;
using keel::bytes::get_be64;
using keel::bytes::put_be64;

// The store's part, in memory: the extension's rows, and the live keys with their lease.
struct Store {
  std::map<std::string, std::string> rows;
  std::map<std::string, int64_t> keys;  // key -> lease (0 = none)
  int64_t revision = 1;
  uint64_t cluster_ms = 0;
};

class MemTxn final : public ApplyTxn {
 public:
  explicit MemTxn(Store& s) : s_(s) {}
  Result<bool> get(std::string_view key, std::string* value) override {
    auto it = s_.rows.find(std::string(key));
    if (it == s_.rows.end()) return false;
    *value = it->second;
    return true;
  }
  Status put(std::string_view key, std::string_view value) override {
    s_.rows[std::string(key)] = std::string(value);
    return ok_status();
  }
  Status del(std::string_view key) override {
    s_.rows.erase(std::string(key));
    return ok_status();
  }
  Status scan(std::string_view from, std::string_view to,
              const std::function<bool(std::string_view, std::string_view)>& visit) override {
    // Collected first: visit may not write, but the map must not be walked while it could.
    std::vector<std::pair<std::string, std::string>> hits;
    for (auto it = s_.rows.lower_bound(std::string(from)); it != s_.rows.end(); ++it) {
      if (!to.empty() && it->first >= to) break;
      hits.emplace_back(it->first, it->second);
    }
    for (const auto& [k, v] : hits)
      if (!visit(k, v)) break;
    return ok_status();
  }
  Status delete_keys(const std::vector<std::string>& keys) override {
    bool any = false;
    for (const auto& k : keys)
      any = s_.keys.erase(k) > 0 || any;
    if (any) s_.revision++;
    return ok_status();
  }
  int64_t revision() const override { return s_.revision; }

 private:
  Store& s_;
};

uint64_t fnv(uint64_t h, std::string_view s) {
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ULL;
  return (h ^ 0xff) * 1099511628211ULL;
}

class PrimMachine final : public sim::SimMachine {
 public:
  std::string propose(uint64_t r, uint64_t now) override {
    auto pick = [&](uint64_t n) {
      const uint64_t v = r % n;
      r /= n;
      return v;
    };
    const auto lease = static_cast<int64_t>(1 + pick(5));
    const std::string name(1, static_cast<char>('a' + pick(2)));
    Command c;
    switch (pick(11)) {
      case 0:
      case 1:
        c = LeaseGrantRequest{lease, static_cast<int64_t>(100 + pick(500))};
        break;
      case 2:
      case 3:
        c = LeaseRenewRequest{{lease}};
        break;
      case 4:
        c = LeaseRevokeRequest{lease};
        break;
      case 5:
      case 6:
        c = LockRequest{name, lease, pick(2) == 0, static_cast<int64_t>(pick(2) * 60)};
        break;
      case 7:
        c = UnlockRequest{name, lease};
        break;
      case 8:
        c = SemAcquireRequest{"s", 2, lease, "h" + std::to_string(pick(4)), "", true};
        break;
      case 9:
        c = SemReleaseRequest{"s", "h" + std::to_string(pick(4)), 0};
        break;
      default:
        c = PutRequest{"k" + std::to_string(pick(4)), "v", lease, false, false, false};
    }
    std::string out;
    put_be64(out, now);
    return out + encode_command(c);
  }

  void reset(const std::string& rows) override {
    s_ = Store{};
    model_ = Model{};
    std::string_view in = rows;
    if (!in.empty()) {
      auto num = [&] {
        uint64_t v = get_be64(in.data());
        in.remove_prefix(8);
        return v;
      };
      auto str = [&] {
        const uint64_t n = num();
        std::string v(in.substr(0, n));
        in.remove_prefix(n);
        return v;
      };
      s_.revision = static_cast<int64_t>(num());
      s_.cluster_ms = num();
      for (uint64_t n = num(); n > 0; --n) {
        std::string k = str();
        s_.rows[k] = str();
      }
      for (uint64_t n = num(); n > 0; --n) {
        std::string k = str();
        s_.keys[k] = static_cast<int64_t>(num());
      }
      model_.max_token = static_cast<int64_t>(num());
      for (uint64_t n = num(); n > 0; --n) {
        const auto id = static_cast<int64_t>(num());
        model_.expiry[id] = num();
      }
    }
    // The holders at the snapshot were checked when they got their locks.
    for (const auto& [k, v] : s_.rows) {
      primitives::Lock l;
      if (k[0] == 'C' && primitives::decode_lock(v, &l) && l.holder != 0)
        model_.holder[k.substr(1)] = {l.holder, l.token};
    }
    MemTxn tx(s_);
    if (auto st = state_.reload(tx); !st) std::abort();
  }

  std::string rows() const override {
    std::string out;
    auto num = [&](uint64_t v) { put_be64(out, v); };
    auto str = [&](const std::string& v) {
      num(v.size());
      out += v;
    };
    num(static_cast<uint64_t>(s_.revision));
    num(s_.cluster_ms);
    num(s_.rows.size());
    for (const auto& [k, v] : s_.rows) {
      str(k);
      str(v);
    }
    num(s_.keys.size());
    for (const auto& [k, l] : s_.keys) {
      str(k);
      num(static_cast<uint64_t>(l));
    }
    num(static_cast<uint64_t>(model_.max_token));
    num(model_.expiry.size());
    for (const auto& [id, e] : model_.expiry) {
      num(static_cast<uint64_t>(id));
      num(e);
    }
    return out;
  }

  uint64_t hash() const override {
    uint64_t h = fnv(1469598103934665603ULL, rows());
    return h;
  }

  std::string apply(const std::string& payload) override {
    if (payload.size() < 8) return "payload too short";
    const uint64_t stamp = get_be64(payload.data());
    auto cmd = decode_command(std::string_view(payload).substr(8));
    if (!cmd) return "payload does not decode: " + cmd.error().message;
    MemTxn tx(s_);
    if (stamp > s_.cluster_ms) {  // time moves first, as MvccStore::apply_entries does
      if (auto st = state_.advance(stamp, tx); !st) return "advance: " + st.error().message;
      s_.cluster_ms = stamp;
    }
    const Store before = s_;  // a command that fails changes nothing
    Result<CommandResult> r = make_error(ErrorCode::internal, "not run");
    if (auto* put = std::get_if<PutRequest>(&*cmd)) {
      if (auto st = state_.check_lease(put->lease, tx); !st) {
        r = std::move(st).error();
      } else {
        auto old = s_.keys.find(put->key);
        const int64_t old_lease = old == s_.keys.end() ? 0 : old->second;
        s_.keys[put->key] = put->lease;
        s_.revision++;
        if (auto st = state_.key_lease_changed(put->key, old_lease, put->lease, tx); !st)
          return "key_lease_changed: " + st.error().message;
        r = CommandResult(PutResponse{s_.revision, std::nullopt});
      }
    } else {
      r = state_.apply(*cmd, s_.cluster_ms, tx);
    }
    if (!r.ok()) {
      if (r.error().code == ErrorCode::internal) return "internal: " + r.error().message;
      s_ = before;
      state_.rolled_back();
    }
    if (auto st = state_.before_commit(tx); !st) return "before_commit: " + st.error().message;
    state_.committed();
    if (r.ok()) model_apply(*cmd, r.value());
    return check();
  }

 private:
  struct Model {
    std::map<int64_t, uint64_t> expiry;                         // lease -> when it must end
    std::map<std::string, std::pair<int64_t, int64_t>> holder;  // lock -> (lease, token)
    int64_t max_token = 0;
  };

  void model_apply(const Command& c, const CommandResult& r) {
    const uint64_t t = s_.cluster_ms;
    if (auto* g = std::get_if<LeaseGrantRequest>(&c)) model_.expiry[g->id] = t + g->ttl_ms;
    if (auto* n = std::get_if<LeaseRenewResponse>(&r); n && n->ttl_ms.at(0) > 0) {
      auto& e = model_.expiry[std::get<LeaseRenewRequest>(c).ids[0]];
      e = std::max(e, t + static_cast<uint64_t>(n->ttl_ms[0]));
    }
    if (auto* v = std::get_if<LeaseRevokeRequest>(&c)) model_.expiry.erase(v->id);
  }

  std::string check() {
    const uint64_t t = s_.cluster_ms;
    std::map<int64_t, bool> alive;
    for (const auto& [k, v] : s_.rows)
      if (k.size() == 9 && k[0] == 'L') alive[static_cast<int64_t>(get_be64(k.data() + 1))] = true;
    for (auto it = model_.expiry.begin(); it != model_.expiry.end();) {
      const bool is = alive.count(it->first) > 0;
      if (t < it->second && !is)
        return "lease " + std::to_string(it->first) + " ended at " + std::to_string(t) +
               ", before " + std::to_string(it->second);
      if (t >= it->second && is)
        return "lease " + std::to_string(it->first) + " alive at " + std::to_string(t) + ", past " +
               std::to_string(it->second);
      it = is ? std::next(it) : model_.expiry.erase(it);
    }
    for (const auto& [id, unused] : alive)
      if (!model_.expiry.count(id))
        return "lease " + std::to_string(id) + " alive, unknown to the model";
    for (const auto& [k, lease] : s_.keys)
      if (lease != 0 && !alive.count(lease))
        return "key " + k + " outlived its lease " + std::to_string(lease);
    for (const auto& [k, v] : s_.rows) {
      if (k[0] == 'C') {
        primitives::Lock l;
        if (!primitives::decode_lock(v, &l)) return "undecodable lock row";
        const std::string name = k.substr(1);
        if (l.holder == 0) {
          model_.holder.erase(name);
          continue;
        }
        if (!alive.count(l.holder)) return "lock " + name + " held by a dead lease";
        auto [it, fresh] = model_.holder.try_emplace(name, l.holder, l.token);
        if (fresh || it->second != std::make_pair(l.holder, l.token)) {
          if (l.token <= model_.max_token)
            return "lock " + name + " handed out token " + std::to_string(l.token) +
                   " after token " + std::to_string(model_.max_token);
          it->second = {l.holder, l.token};
        }
        model_.max_token = std::max(model_.max_token, l.token);
      } else if (k[0] == 'S') {
        primitives::Semaphore sem;
        if (!primitives::decode_semaphore(v, &sem)) return "undecodable semaphore row";
        if (static_cast<int64_t>(sem.holders.size()) > sem.max) return "semaphore over max";
        if (static_cast<int64_t>(sem.holders.size()) < sem.max && !sem.waiters.empty())
          return "semaphore slot free while someone waits";
        for (const auto& h : sem.holders)
          if (!alive.count(h.lease)) return "semaphore slot held by a dead lease";
      }
    }
    for (auto it = model_.holder.begin(); it != model_.holder.end();) {
      // A lock row that went away entirely (released, nobody waiting).
      it = s_.rows.count("C" + it->first) ? std::next(it) : model_.holder.erase(it);
    }
    return "";
  }

  primitives::State state_;
  Store s_;
  Model model_;
};

const char* g_argv0 = "keel_prim_sim";

sim::SimResult run(uint64_t seed, FILE* trace) {
  sim::SimOptions o;
  o.seed = seed;
  o.trace = trace;
  o.byzantine = 0;  // a corrupting peer is the plain simulator's business
  o.machine = [] { return std::make_unique<PrimMachine>(); };
  return sim::run_seed(o);
}

}  // namespace

int main(int argc, char** argv) {
  g_argv0 = argv[0];
  uint64_t seed = 0, seeds = 1, from = 1;
  bool one = false, trace = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--seed" && v) {
      seed = std::strtoull(v, nullptr, 10), one = true, ++i;
    } else if (a == "--seeds" && v) {
      seeds = std::strtoull(v, nullptr, 10), ++i;
    } else if (a == "--from" && v) {
      from = std::strtoull(v, nullptr, 10), ++i;
    } else if (a == "--trace") {
      trace = true;
    } else {
      std::fprintf(stderr, "usage: %s --seed N [--trace] | --seeds K [--from N]\n", argv[0]);
      return 2;
    }
  }
  if (one) {
    from = seed;
    seeds = 1;
  }
  uint64_t failures = 0, acked = 0, crashes = 0, snaps = 0, leaders = 0;
  for (uint64_t s = from; s < from + seeds; ++s) {
    const auto r = run(s, trace ? stdout : nullptr);
    acked += r.stats.acked_writes;
    crashes += r.stats.crashes;
    snaps += r.stats.snapshots_installed;
    leaders += r.stats.leaders;
    if (!r.ok) {
      ++failures;
      std::fprintf(stderr, "FAILED seed %" PRIu64 ": %s\nreplay: %s --seed %" PRIu64 " --trace\n",
                   s, r.failure.c_str(), g_argv0, s);
    }
  }
  std::printf("%" PRIu64 " seeds from %" PRIu64 ": %" PRIu64 " failed; %" PRIu64
              " primitive commands applied, %" PRIu64 " crashes, %" PRIu64
              " snapshots installed, %" PRIu64 " leaders\n",
              seeds, from, failures, acked, crashes, snaps, leaders);
  return failures == 0 ? 0 : 1;
}
