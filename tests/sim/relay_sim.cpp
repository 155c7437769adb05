// keel_relay_sim: the relay tree (cluster/node/relay.hpp) in one thread, driven by one seed.
// The real RelayHub runs in 3 simulated voters and in every learner, and the real RelayChild
// in every learner; the committed log, the voters' applied indexes, leader changes, the
// network (per-pair FIFO with delay, loss, partitions) and learner crashes are simulated.
//
// Checked after every step: every entry a learner applies is the committed entry at that
// index (so its applied log is a prefix of the committed log), its state after a snapshot is
// the committed prefix's, no agent feeds more than relay.fanout learners, no learner's path
// runs through itself. After the faults stop (the heal phase), every live learner must be
// attached and caught up with the committed log: the tree heals.
//
//   keel_relay_sim --seed N [--learners K] [--trace]   one seed
//   keel_relay_sim --seeds K [--from N] [--learners K]  K seeds (ctest; soak: --learners 1000)
//   keel_relay_sim --curve                              leader messages and bytes per committed
//                                                       entry for 10..5000 learners, with and
//                                                       without relaying (no faults)
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/node/relay.hpp"
#include "cluster/node/wire.hpp"
#include "cluster/raft/rand.hpp"

namespace {

using keel::node::Learner;
using keel::node::Member;
using keel::node::RelayChild;
using keel::node::RelayClock;
using keel::node::RelayHub;
using keel::node::RelayOptions;
using keel::raft::Entry;
using keel::raft::NodeId;
namespace wire = keel::node::wire;
namespace storage = keel::storage;

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

struct Options {
  uint64_t seed = 1;
  int learners = 60;
  size_t fanout = 3;
  bool faults = true;
  bool no_relay = false;         // every learner asks the leader only, which feeds them all
  uint64_t run_ms = 20000;       // with faults
  uint64_t heal_ms = 15000;      // faults off, everything reachable
  size_t ring_entries = 150;     // a learner's relay ring (small: exercises snapshots)
  uint64_t measure_from_ms = 0;  // leader messages are counted from here (the tree formed)
  FILE* trace = nullptr;
};

struct Result {
  bool ok = true;
  std::string failure;
  uint64_t committed = 0, measured_entries = 0, crashes = 0, partitions = 0, reattachments = 0,
           snapshots = 0, leader_msgs = 0, leader_bytes = 0, max_depth = 0, dropped = 0;
};

class Sim;

// A snapshot of a replica: its applied index and the hash of the committed prefix it holds.
class SimSource final : public storage::SnapshotSource {
 public:
  SimSource(uint64_t index, uint64_t hash) {
    info_.applied_index = index;
    body_ = std::to_string(index) + ":" + std::to_string(hash);
  }
  const storage::SnapshotInfo& info() const override { return info_; }
  keel::Result<bool> next(size_t, std::string* chunk) override {
    if (done_) {
      chunk->clear();
      return false;
    }
    done_ = true;
    *chunk = body_;
    bytes_ += body_.size();
    return true;
  }
  uint64_t bytes() const override { return bytes_; }

 private:
  storage::SnapshotInfo info_;
  std::string body_;
  bool done_ = false;
  uint64_t bytes_ = 0;
};

struct Agent;

class Sim {
 public:
  explicit Sim(const Options& o) : opt_(o), rng_(o.seed) {}
  Result run();

  // ---- the world, as the agents see it ----
  uint64_t now_ms = 0;
  RelayClock::time_point now() const {
    return RelayClock::time_point{} + std::chrono::milliseconds(now_ms + 1000000);
  }
  std::vector<Entry> log{Entry{}};  // committed entries; [0] unused
  std::vector<uint64_t> prefix{0};  // hash of committed[1..i]
  uint64_t term = 1;
  NodeId leader = 1;
  uint64_t election_until = 0;                 // no leader before this time
  std::vector<std::unique_ptr<Agent>> agents;  // [0..2] voters (ids 1..3), then learners
  std::map<NodeId, size_t> by_id;
  Result res;

  bool send(NodeId from, NodeId to, std::string payload);
  void fail(const std::string& why) {
    if (res.ok) {
      res.ok = false;
      res.failure = "t=" + std::to_string(now_ms) + " ms: " + why;
    }
  }
  void trace(const std::string& s) {
    if (opt_.trace) std::fprintf(opt_.trace, "%llu %s\n", (unsigned long long)now_ms, s.c_str());
  }
  const Options& opt() const { return opt_; }
  keel::raft::Rng& rng() { return rng_; }

 private:
  struct Msg {
    NodeId from, to;
    std::string payload;
  };
  void deliver(const Msg& m);
  void step();
  void check();
  const Options opt_;
  keel::raft::Rng rng_;
  std::multimap<uint64_t, Msg> net_;                       // by delivery time
  std::map<std::pair<NodeId, NodeId>, uint64_t> last_at_;  // per-pair FIFO
};

// A voter (RelayFeed only: it serves from the committed log up to its applied index) or a
// learner (RelayFeed + RelayUplink, with a ring of applied entries and a received snapshot).
struct Agent final : keel::node::RelayFeed, keel::node::RelayUplink {
  Sim& sim;
  NodeId id;
  bool voter;
  bool up = true;          // not crashed
  uint64_t cut_until = 0;  // partitioned until
  uint64_t restart_at = 0;
  uint64_t applied = 0;  // durable (survives a crash)
  uint64_t hash = 0;     // of the applied prefix
  uint64_t voter_stall_until = 0;
  std::deque<Entry> ring;  // learners: last applied entries
  std::unique_ptr<RelayHub> hub;
  std::unique_ptr<RelayChild> child;
  std::optional<std::pair<uint64_t, uint64_t>> staged;  // received snapshot (index, hash)
  bool receiving = false;

  Agent(Sim& s, NodeId i, bool v) : sim(s), id(i), voter(v) { boot(); }
  void boot() {
    RelayOptions ro;
    ro.fanout = sim.opt().no_relay ? 1u << 30 : sim.opt().fanout;
    if (sim.opt().no_relay) ro.leader_fanout = ro.fanout;  // the leader feeds every learner
    ro.heartbeat_ms = 100;
    ro.timeout_ms = 600;
    ro.batch_bytes = 512;
    ro.window_bytes = 4096;
    hub = std::make_unique<RelayHub>(id, ro, *this);
    if (!voter)
      child = std::make_unique<RelayChild>(id, "l" + std::to_string(id), "sim", ro, *this);
    ring.clear();
    staged.reset();
    receiving = false;
  }
  bool reachable() const { return up && sim.now_ms >= cut_until; }

  // ---- RelayFeed ----
  uint64_t relay_last() override { return applied; }
  bool relay_entries(uint64_t from, uint64_t to, size_t max_bytes,
                     std::vector<Entry>* out) override {
    size_t bytes = 0;
    if (voter) {
      const uint64_t first = applied > 100 ? applied - 100 : 1;  // the retained log
      if (from < first) return false;
      for (uint64_t i = from; i <= to && (out->empty() || bytes < max_bytes); ++i) {
        out->push_back(sim.log[i]);
        bytes += sim.log[i].data.size();
      }
      return true;
    }
    if (ring.empty() || from < ring.front().index) return false;
    for (size_t i = from - ring.front().index; i < ring.size() && ring[i].index <= to; ++i) {
      if (!out->empty() && bytes >= max_bytes) break;
      out->push_back(ring[i]);
      bytes += ring[i].data.size();
    }
    return true;
  }
  uint64_t relay_term(uint64_t index) override {
    return index < sim.log.size() && index <= applied ? sim.log[index].term : 0;
  }
  keel::Result<std::unique_ptr<storage::SnapshotSource>> relay_snapshot() override {
    return std::unique_ptr<storage::SnapshotSource>(new SimSource(applied, hash));
  }
  wire::RelayEntries relay_header() override {
    wire::RelayEntries h;
    h.path.push_back(id);
    if (voter) {
      const bool has_leader = sim.now_ms >= sim.election_until;
      h.leader = has_leader ? sim.leader : 0;
      h.term = sim.term;
      h.commit = sim.log.size() - 1;
      h.upstream_ok = has_leader;
      return h;
    }
    h.leader = child->header().leader;
    h.term = child->header().term;
    h.commit = std::max(child->header().commit, applied);
    h.upstream_ok = child->upstream_ok();
    h.path.insert(h.path.end(), child->path().begin(), child->path().end());
    return h;
  }
  bool relay_send(NodeId to, std::string payload) override {
    return sim.send(id, to, std::move(payload));
  }
  void relay_peer(NodeId, const std::string&, bool) override {}

  // ---- RelayUplink ----
  uint64_t uplink_applied() override { return applied; }
  std::vector<Member> uplink_voters() override {
    if (sim.opt().no_relay) return {Member{sim.leader, "v", "sim", false}};
    return {Member{1, "v1", "sim", false}, Member{2, "v2", "sim", false},
            Member{3, "v3", "sim", false}};
  }
  bool uplink_send(NodeId to, std::string payload) override {
    return sim.send(id, to, std::move(payload));
  }
  void uplink_dial(NodeId, const std::string&) override {}
  void uplink_apply(const std::vector<Entry>& entries) override {
    for (const auto& e : entries) {
      if (e.index != applied + 1) {
        return sim.fail("learner " + std::to_string(id) + " was given entry " +
                        std::to_string(e.index) + " after " + std::to_string(applied));
      }
      if (e.index >= sim.log.size() || sim.log[e.index].term != e.term ||
          sim.log[e.index].data != e.data) {
        return sim.fail("learner " + std::to_string(id) + " applied entry " +
                        std::to_string(e.index) + " that is not the committed one");
      }
      applied = e.index;
      hash = sim.prefix[applied];
      ring.push_back(e);
      if (ring.size() > sim.opt().ring_entries) ring.pop_front();
    }
  }
  bool uplink_receiving() override { return receiving; }
  std::optional<uint64_t> uplink_staged() override {
    if (staged) return staged->first;
    return std::nullopt;
  }
  void uplink_install(uint64_t t) override {
    const auto [index, h] = *staged;
    staged.reset();
    receiving = false;
    if (index >= sim.prefix.size() || sim.prefix[index] != h) {
      return sim.fail("learner " + std::to_string(id) + " was sent a snapshot at " +
                      std::to_string(index) + " that is not the committed prefix");
    }
    if (t != 0 && sim.log[index].term != t) sim.fail("a snapshot's term is not its index's");
    applied = index;
    hash = h;
    ring.clear();
    sim.res.snapshots++;
    sim.trace("learner " + std::to_string(id) + " installed a snapshot at " +
              std::to_string(index));
  }
  std::vector<Learner> uplink_subtree() override { return hub->subtree(); }

  // Snapshot chunks: the node's code in keel (staging tables); here one chunk holds it all.
  void on_chunk(NodeId from, const wire::SnapshotChunk& c) {
    if (voter || from != child->parent()) return;
    std::string body(c.data);
    receiving = true;
    if (!c.last || body.empty()) {
      // A last empty chunk follows the one that carried the state.
      if (c.last && pending_body) {
        body = *pending_body;
      } else {
        pending_body = body;
        sim.send(id, from, wire::encode_snapshot_ack({c.transfer, c.seq, true, ""}));
        return;
      }
    }
    const auto colon = body.find(':');
    staged = std::make_pair(std::strtoull(body.c_str(), nullptr, 10),
                            std::strtoull(body.c_str() + colon + 1, nullptr, 10));
    pending_body.reset();
    sim.send(id, from, wire::encode_snapshot_ack({c.transfer, c.seq, true, ""}));
  }
  std::optional<std::string> pending_body;

  void on_app(NodeId from, const std::string& p) {
    const auto now = sim.now();
    auto kind = wire::app_kind(p);
    if (!kind) return sim.fail("an undecodable message");
    switch (*kind) {
      case wire::AppKind::relay_subscribe: {
        wire::RelaySubscribe m;
        if (wire::decode_relay_subscribe(p, &m)) hub->on_subscribe(from, m, now);
        return;
      }
      case wire::AppKind::relay_ack: {
        wire::RelayAck m;
        if (wire::decode_relay_ack(p, &m)) hub->on_ack(from, m, now);
        return;
      }
      case wire::AppKind::snapshot_ack: {
        wire::SnapshotAck a;
        if (wire::decode_snapshot_ack(p, &a)) hub->on_snapshot_ack(from, a, now);
        return;
      }
      default:
        break;
    }
    if (voter) return;
    switch (*kind) {
      case wire::AppKind::relay_accept: {
        std::vector<NodeId> path;
        if (wire::decode_relay_accept(p, &path)) child->on_accept(from, path, now);
        return;
      }
      case wire::AppKind::relay_redirect: {
        wire::RelayRedirect r;
        if (wire::decode_relay_redirect(p, &r)) child->on_redirect(from, r, now);
        return;
      }
      case wire::AppKind::relay_entries: {
        wire::RelayEntries m;
        if (!wire::decode_relay_entries(p, &m)) return sim.fail("relayed entries do not decode");
        child->on_entries(from, std::move(m), now);
        hub->pump(now);
        return;
      }
      case wire::AppKind::snapshot_chunk: {
        wire::SnapshotChunk c;
        if (wire::decode_snapshot_chunk(p, &c)) on_chunk(from, c);
        return;
      }
      default:
        return;
    }
  }
};

bool Sim::send(NodeId from, NodeId to, std::string payload) {
  auto& a = *agents[by_id.at(from)];
  auto it = by_id.find(to);
  if (it == by_id.end()) return false;
  auto& b = *agents[it->second];
  if (!b.up) return false;  // connection refused
  if (from == leader && agents[by_id.at(from)]->voter && now_ms >= opt_.measure_from_ms) {
    res.leader_msgs++;
    res.leader_bytes += payload.size();
  }
  if (!a.reachable() || !b.reachable() ||
      (opt_.faults && rng_.below(1000) == 0)) {  // lost with a connection
    res.dropped++;
    return true;
  }
  const uint64_t delay = 1 + rng_.below(opt_.faults ? 30 : 3);
  uint64_t at = std::max(now_ms + delay, last_at_[{from, to}]);
  last_at_[{from, to}] = at;
  net_.emplace(at, Msg{from, to, std::move(payload)});
  return true;
}

void Sim::deliver(const Msg& m) {
  auto& b = *agents[by_id.at(m.to)];
  if (!b.reachable()) return;
  b.on_app(m.from, m.payload);
}

void Sim::step() {
  const bool faulty = opt_.faults && now_ms < opt_.run_ms;
  // Commits: a few entries per 10 ms; now and then a new term (an election: no leader for a
  // moment; voters report no upstream meanwhile).
  const int n = static_cast<int>(rng_.below(4));
  for (int i = 0; i < n; ++i) {
    Entry e;
    e.index = log.size();
    e.term = term;
    e.data = "e" + std::to_string(e.index) + "/" + std::to_string(rng_.below(1000));
    prefix.push_back(mix(prefix.back(), std::hash<std::string>{}(e.data) ^ e.term));
    if (now_ms >= opt_.measure_from_ms) res.measured_entries++;
    log.push_back(std::move(e));
  }
  if (faulty && rng_.below(300) == 0) {
    term++;
    leader = 1 + rng_.below(3);
    election_until = now_ms + 50 + rng_.below(500);
    trace("term " + std::to_string(term) + ": leader " + std::to_string(leader));
  }
  // Voters apply at their own pace (a stalled one lags, then catches up).
  for (int v = 0; v < 3; ++v) {
    auto& a = *agents[v];
    if (faulty && rng_.below(2000) == 0) a.voter_stall_until = now_ms + rng_.below(2000);
    if (now_ms < a.voter_stall_until) continue;
    a.applied = std::min<uint64_t>(log.size() - 1, a.applied + 1 + rng_.below(6));
    a.hash = prefix[a.applied];
  }
  // Learner faults: crash (state kept, in-memory relay state lost) and partitions.
  if (faulty) {
    for (size_t i = 3; i < agents.size(); ++i) {
      auto& a = *agents[i];
      if (a.up && rng_.below(static_cast<uint64_t>(300 * agents.size())) == 0) {
        a.up = false;
        a.restart_at = now_ms + 100 + rng_.below(2000);
        res.crashes++;
        trace("crash " + std::to_string(a.id));
      } else if (a.up && rng_.below(static_cast<uint64_t>(400 * agents.size())) == 0) {
        a.cut_until = now_ms + 200 + rng_.below(3000);
        res.partitions++;
        trace("partition " + std::to_string(a.id));
      }
    }
  }
  for (size_t i = 3; i < agents.size(); ++i) {
    auto& a = *agents[i];
    if (!a.up && (now_ms >= a.restart_at || !faulty)) {
      a.up = true;
      a.boot();
      trace("restart " + std::to_string(a.id));
    }
    if (!faulty) a.cut_until = 0;
  }
  if (!faulty) election_until = 0;
  // Deliver what is due, then tick everyone.
  while (!net_.empty() && net_.begin()->first <= now_ms) {
    Msg m = std::move(net_.begin()->second);
    net_.erase(net_.begin());
    deliver(m);
    if (!res.ok) return;
  }
  const auto t = now();
  for (auto& a : agents) {
    if (!a->up) continue;
    if (a->child) a->child->tick(t);
    a->hub->tick(t);
  }
}

void Sim::check() {
  for (auto& a : agents) {
    if (!a->up) continue;
    if (a->hub->child_count() > (opt_.no_relay ? (1u << 30) : opt_.fanout)) {
      return fail("agent " + std::to_string(a->id) + " feeds " +
                  std::to_string(a->hub->child_count()) + " learners");
    }
    if (a->voter) continue;
    if (a->applied >= log.size() || a->hash != prefix[a->applied]) {
      return fail("learner " + std::to_string(a->id) + "'s state is not a committed prefix");
    }
    const auto& path = a->child->path();
    if (std::find(path.begin(), path.end(), a->id) != path.end())
      return fail("learner " + std::to_string(a->id) + "'s path runs through itself");
    res.max_depth = std::max<uint64_t>(res.max_depth, path.size());
  }
}

Result Sim::run() {
  for (NodeId v = 1; v <= 3; ++v) {
    by_id[v] = agents.size();
    agents.push_back(std::make_unique<Agent>(*this, v, true));
  }
  for (int i = 0; i < opt_.learners; ++i) {
    const NodeId id = 100 + static_cast<NodeId>(i);
    by_id[id] = agents.size();
    agents.push_back(std::make_unique<Agent>(*this, id, false));
  }
  const uint64_t end = (opt_.faults ? opt_.run_ms : 0) + opt_.heal_ms;
  for (now_ms = 0; now_ms < end && res.ok; now_ms += 10) {
    step();
    check();
  }
  res.committed = log.size() - 1;
  for (auto& a : agents) {
    if (a->child) res.reattachments += a->child->reattachments();
  }
  if (!res.ok) return res;
  // Healed: everyone attached and caught up with what the voters applied.
  for (size_t i = 3; i < agents.size(); ++i) {
    auto& a = *agents[i];
    if (a.child->parent() == 0) {
      fail("learner " + std::to_string(a.id) + " is not attached after the heal");
      break;
    }
    const uint64_t voters_min =
        std::min({agents[0]->applied, agents[1]->applied, agents[2]->applied});
    if (a.applied + 40 < voters_min) {
      fail("learner " + std::to_string(a.id) + " applied " + std::to_string(a.applied) +
           ", the voters " + std::to_string(voters_min) + " after the heal");
      break;
    }
  }
  return res;
}

void print(uint64_t seed, const Options& o, const Result& r) {
  std::printf(
      "seed %llu: %s learners=%d fanout=%zu committed=%llu crashes=%llu partitions=%llu "
      "reattachments=%llu snapshots=%llu max_depth=%llu dropped=%llu%s%s\n",
      (unsigned long long)seed, r.ok ? "ok" : "FAILED", o.learners, o.fanout,
      (unsigned long long)r.committed, (unsigned long long)r.crashes,
      (unsigned long long)r.partitions, (unsigned long long)r.reattachments,
      (unsigned long long)r.snapshots, (unsigned long long)r.max_depth,
      (unsigned long long)r.dropped, r.ok ? "" : ": ", r.failure.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::off);
  Options o;
  uint64_t seeds = 0, from = 1;
  bool curve = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::strtoull(argv[++i], nullptr, 10) : 0ull; };
    if (a == "--seed") {
      o.seed = next();
    } else if (a == "--seeds") {
      seeds = next();
    } else if (a == "--from") {
      from = next();
    } else if (a == "--learners") {
      o.learners = static_cast<int>(next());
    } else if (a == "--fanout") {
      o.fanout = next();
    } else if (a == "--trace") {
      o.trace = stdout;
    } else if (a == "--curve") {
      curve = true;
    } else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of relay_sim.cpp)\n",
                   a.c_str());
      return 2;
    }
  }
  if (curve) {
    std::printf(
        "leader messages and bytes per committed entry (no faults; 20 s simulated, counted over "
        "the last 10 s, once the tree has formed; 3 voters, ~150 entries/s):\n");
    std::printf("%9s %22s %22s\n", "learners", "relay (fanout 8)", "no relay (leader only)");
    for (int n : {10, 100, 1000, 5000}) {
      double per[2][2];
      for (int mode = 0; mode < 2; ++mode) {
        Options c = o;
        c.faults = false;
        c.learners = n;
        c.fanout = 8;
        c.no_relay = mode == 1;
        c.heal_ms = 20000;
        c.measure_from_ms = 10000;
        Sim sim(c);
        Result r = sim.run();
        if (!r.ok) {
          std::printf("FAILED: %s\n", r.failure.c_str());
          return 1;
        }
        per[mode][0] = double(r.leader_msgs) / double(r.measured_entries);
        per[mode][1] = double(r.leader_bytes) / double(r.measured_entries);
      }
      std::printf("%9d %9.2f msg %7.0f B %9.2f msg %7.0f B\n", n, per[0][0], per[0][1], per[1][0],
                  per[1][1]);
    }
    return 0;
  }
  if (seeds == 0) {
    seeds = 1;
    from = o.seed;
  }
  int failed = 0;
  for (uint64_t s = from; s < from + seeds; ++s) {
    o.seed = s;
    Sim sim(o);
    Result r = sim.run();
    if (seeds == 1 || !r.ok) print(s, o, r);
    if (!r.ok) {
      failed++;
      std::fprintf(stderr, "replay: %s --seed %llu --learners %d --fanout %zu --trace\n", argv[0],
                   (unsigned long long)s, o.learners, o.fanout);
    }
  }
  if (seeds > 1) std::printf("%llu seeds, %d failed\n", (unsigned long long)seeds, failed);
  return failed == 0 ? 0 : 1;
}
