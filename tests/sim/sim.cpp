#include "tests/sim/sim.hpp"

#include <algorithm>
#include <cinttypes>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cluster/raft/driver.hpp"
#include "cluster/raft/raft.hpp"
#include "cluster/raft/rand.hpp"

namespace keel::sim {
namespace {

using namespace keel::raft;

constexpr uint64_t kUnitsPerTick = 10;  // simulated time: 10 units per nominal tick
constexpr uint64_t kLivenessTicks = 4000;
constexpr uint64_t kBarrierId = ~uint64_t{0};
constexpr NodeId kStrangers = 1000000;  // ids from here on are never members (forged senders)

struct Failure {
  std::string what;
};

uint64_t mix(uint64_t h, uint64_t v) {
  uint64_t s = h ^ (v * 0xff51afd7ed558ccdULL);
  return splitmix64(&s);
}

uint64_t hash_bytes(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ULL;
  return h;
}

uint64_t entry_hash(const Entry& e) {
  return mix(mix(hash_bytes(e.data), static_cast<uint64_t>(e.type)), e.term);
}

std::string put_u64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
uint64_t get_u64(const std::string& s, size_t pos) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(s[pos + i])) << (8 * i);
  return v;
}

// The fault mix, drawn from the seed (TigerBeetle's "swarm testing").
struct Swarm {
  int voters = 3;
  int learners = 0;
  int election_tick = 10;
  int heartbeat_tick = 1;
  bool pre_vote = true;
  bool check_quorum = true;
  uint64_t max_size_per_msg = 1 << 20;
  size_t max_inflight = 8;
  uint64_t max_inflight_bytes = 0;
  uint64_t max_uncommitted = 0;
  uint64_t drop_ppm = 0, dup_ppm = 0, long_delay_ppm = 0;
  uint64_t lat_lo = 1, lat_hi = 10;  // units
  uint64_t partition_ppm = 0, heal_ppm = 0;
  uint64_t crash_ppm = 0, ready_crash_ppm = 0;
  uint64_t restart_lo = 1, restart_hi = 50;  // ticks
  uint64_t props_max = 1, propose_ppm = 0, read_ppm = 0, conf_ppm = 0, transfer_ppm = 0;
  uint64_t snapshot_every = 20, snapshot_keep = 5;
  uint64_t chaos_ticks = 500;
  // One corrupting peer (0 = none): during chaos it mutates this share of the messages it
  // sends, each in a way its receiver must detect and drop (Sim::corrupt).
  NodeId corrupter = 0;
  uint64_t corrupt_ppm = 0;
};

struct SimNode {
  explicit SimNode(NodeId node_id, const ConfState& bootstrap)
      : id(node_id), live(bootstrap), durable(bootstrap) {}
  NodeId id;
  bool up = false;
  bool decommissioned = false;
  bool ever_member = false;
  uint64_t tick_units = kUnitsPerTick;  // clock skew: 9..11 units per tick
  uint64_t next_tick = 0;
  uint64_t restart_at = 0;
  MemoryStorage live;     // what the core reads; includes writes not yet synced
  MemoryStorage durable;  // what survives a crash
  std::unique_ptr<RawNode> raft;
  uint64_t app_index = 0;
  uint64_t app_hash = 0;
  ConfState app_conf;
  uint64_t chain_base = 0;
  std::vector<uint64_t> chain;          // chain[i - chain_base]: hash of the log prefix ending at i
  uint64_t expected_drops = 0;          // corrupted messages this incarnation had to drop (counted)
  std::unique_ptr<SimMachine> machine;  // SimOptions::machine's instance of this member
};

struct ReadReq {
  NodeId node;
  uint64_t required;  // every write acknowledged before the read was issued is at or below
  bool released = false;
};

class SimReady;

class Sim {
 public:
  explicit Sim(const SimOptions& opt)
      : opt_(opt),
        rng_(opt.seed),
        byz_rng_(opt.seed ^ 0xb12a47e5c0ffee11ULL),
        machine_rng_(opt.seed ^ 0x5eed0f9a1e5c0de5ULL) {}
  SimResult run();

 private:
  void draw_swarm();
  SimNode& add_node(NodeId id, const ConfState& bootstrap);
  void start(SimNode& n);
  void crash(SimNode& n, int point);
  void decommission(SimNode& n);
  Config node_config(SimNode& n);

  void send(Message m);
  void deliver_due();
  bool corrupt(SimNode& n, const Message& orig);
  void tick_due();
  friend class SimReady;
  void process_ready(SimNode& n);
  bool ready_crash(SimNode& n, int point);
  bool persist(SimNode& n, const Ready& rd);
  bool send_all(SimNode& n, std::vector<Message>& messages, bool persisted);
  bool apply(SimNode& n, const Ready& rd);
  void persisted(SimNode& n, const Ready& rd);
  void apply_entry(SimNode& n, const Entry& e);
  void install_snapshot(SimNode& n, const Snapshot& s);
  void maybe_snapshot(SimNode& n);
  void released(SimNode& n, const ReadState& rs);
  void check_node(SimNode& n);
  void note_commit(SimNode& n);
  void rebuild_chain(SimNode& n);

  void nemesis();
  void clients();
  void conf_change();
  SimNode* random_up(bool members_only);
  SimNode* leader();
  const ConfState& committed_conf() const { return conf_at_.rbegin()->second; }

  void liveness();
  void ev(const char* what, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0);
  [[noreturn]] void fail(const std::string& what);

  SimOptions opt_;
  Rng rng_;
  Rng byz_rng_;  // the corrupting peer's draws: seeds without one replay as before it existed
  Swarm sw_;
  DriveOptions drive_;
  uint64_t now_ = 0;
  uint64_t seq_ = 0;
  uint64_t hash_ = 1469598103934665603ULL;
  bool chaos_ = true;
  SimStats stats_;

  std::map<NodeId, std::unique_ptr<SimNode>> nodes_;
  NodeId next_id_ = 1;
  std::map<std::pair<uint64_t, uint64_t>, Message> net_;  // (time, seq) -> message
  std::set<std::pair<NodeId, NodeId>> cut_;               // blocked directions

  // Checker state.
  std::map<uint64_t, NodeId> leader_of_term_;
  std::map<uint64_t, uint64_t> committed_by_term_;  // term -> highest index its leader committed
  std::map<uint64_t, uint64_t> committed_term_at_;  // index -> term of the entry committed there
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> chain_of_;  // (index, term) -> prefix hash
  std::vector<uint64_t> applied_hash_{0};  // state machine hash after applying index i
  std::vector<uint64_t> applied_term_{0};
  std::vector<uint64_t> machine_hash_{0};  // SimMachine::hash() after index i first applied
  Rng machine_rng_;                        // the machine's client draws (own stream)
  std::map<uint64_t, ConfState> conf_at_;  // committed configurations by index
  std::map<uint64_t, uint64_t> acked_;     // write id -> index of first application
  uint64_t max_acked_index_ = 0;
  uint64_t next_write_ = 1;
  uint64_t next_read_ = 1;
  std::map<std::string, ReadReq> reads_;
  std::optional<uint64_t> barrier_index_;
  uint64_t final_reads_ = 0;
};

void Sim::ev(const char* what, uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  ++stats_.events;
  hash_ = mix(hash_, hash_bytes(what));
  hash_ = mix(mix(mix(mix(mix(hash_, now_), a), b), c), d);
  if (opt_.trace) {
    std::fprintf(opt_.trace, "%8" PRIu64 " %-16s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                 now_, what, a, b, c, d);
  }
}

void Sim::fail(const std::string& what) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "t=%" PRIu64 ": ", now_);
  throw Failure{buf + what};
}

void Sim::draw_swarm() {
  auto pick = [&](std::initializer_list<uint64_t> xs) {
    return *(xs.begin() + rng_.below(xs.size()));
  };
  sw_.voters = rng_.chance(500000) ? 3 : 5;
  sw_.learners = static_cast<int>(rng_.below(3));
  sw_.heartbeat_tick = static_cast<int>(rng_.between(1, 3));
  sw_.pre_vote = rng_.chance(850000);
  sw_.check_quorum = rng_.chance(850000);
  sw_.max_size_per_msg = pick({256, 1024, 8192, 1 << 20});
  sw_.max_inflight = rng_.between(1, 16);
  sw_.max_inflight_bytes = rng_.chance(300000) ? rng_.between(300, 4000) : 0;
  sw_.max_uncommitted = rng_.chance(200000) ? rng_.between(100, 2000) : 0;
  sw_.drop_ppm = pick({0, 10000, 50000, 150000});
  sw_.dup_ppm = pick({0, 10000, 50000});
  sw_.long_delay_ppm = pick({0, 5000, 30000});
  sw_.lat_lo = rng_.between(1, 5);
  sw_.lat_hi = sw_.lat_lo + rng_.between(0, 30);
  sw_.partition_ppm = pick({0, 5000, 20000});
  sw_.heal_ppm = pick({20000, 100000});
  sw_.crash_ppm = pick({0, 2000, 10000});
  sw_.ready_crash_ppm = pick({0, 1000, 10000});
  sw_.restart_lo = rng_.between(1, 20);
  sw_.restart_hi = sw_.restart_lo + rng_.between(0, 80);
  sw_.props_max = rng_.between(1, 3);
  sw_.propose_ppm = rng_.between(100000, 800000);
  sw_.read_ppm = rng_.between(0, 300000);
  sw_.conf_ppm = pick({0, 5000, 20000});
  sw_.transfer_ppm = pick({0, 3000, 10000});
  sw_.snapshot_every = rng_.between(3, 60);
  sw_.snapshot_keep = rng_.between(0, 10);
  sw_.chaos_ticks = rng_.between(200, 1500);
  // Both orders run: the leader's early send (thesis §10.2.1) in most seeds, persist-then-send
  // in the rest.
  drive_.leader_sends_first = rng_.chance(750000);
  stats_.leader_sends_first = drive_.leader_sends_first;
  // A corrupting peer in 30% of seeds (all of them with --byzantine on), drawn from its own
  // stream.
  const bool byz = opt_.byzantine < 0 ? byz_rng_.chance(300000) : opt_.byzantine > 0;
  if (byz) {
    const uint64_t rates[] = {20000, 100000, 300000};
    sw_.corrupt_ppm = rates[byz_rng_.below(3)];
    sw_.corrupter = 1 + byz_rng_.below(static_cast<uint64_t>(sw_.voters + sw_.learners));
    stats_.corrupter = sw_.corrupter;
    ev("corrupter", sw_.corrupter, sw_.corrupt_ppm);
  }
  ev("drive", drive_.leader_sends_first ? 1 : 0);
  ev("swarm", static_cast<uint64_t>(sw_.voters), static_cast<uint64_t>(sw_.learners), sw_.drop_ppm,
     sw_.crash_ppm);
}

Config Sim::node_config(SimNode& n) {
  Config c;
  c.id = n.id;
  c.storage = &n.live;
  c.seed = rng_.next();
  c.election_tick = sw_.election_tick;
  c.heartbeat_tick = sw_.heartbeat_tick;
  c.pre_vote = sw_.pre_vote;
  c.check_quorum = sw_.check_quorum;
  c.max_size_per_msg = sw_.max_size_per_msg;
  c.max_inflight_msgs = sw_.max_inflight;
  c.max_inflight_bytes = sw_.max_inflight_bytes;
  c.max_uncommitted_entries_size = sw_.max_uncommitted;
  c.max_committed_size_per_ready = 4096;
  return c;
}

SimNode& Sim::add_node(NodeId id, const ConfState& bootstrap) {
  auto node = std::make_unique<SimNode>(id, bootstrap);
  SimNode& n = *node;
  n.tick_units = rng_.between(kUnitsPerTick - 1, kUnitsPerTick + 1);
  n.next_tick = now_ + rng_.between(1, n.tick_units);
  if (opt_.machine) n.machine = opt_.machine();
  nodes_[id] = std::move(node);
  next_id_ = std::max(next_id_, id + 1);
  start(n);
  return n;
}

void Sim::rebuild_chain(SimNode& n) {
  const uint64_t base = n.live.first_index() - 1;
  n.chain_base = base;
  n.chain.clear();
  uint64_t h = 0;
  if (base > 0) {
    auto it = chain_of_.find({base, *n.live.term(base)});
    if (it == chain_of_.end()) fail("restart: durable log base is no known entry");
    h = it->second;
  }
  n.chain.push_back(h);
  if (n.live.last_index() >= n.live.first_index()) {
    std::vector<Entry> ents;
    n.live.entries(n.live.first_index(), n.live.last_index() + 1, ~uint64_t{0}, &ents);
    for (const Entry& e : ents) {
      h = mix(h, entry_hash(e));
      n.chain.push_back(h);
      auto it = chain_of_.find({e.index, e.term});
      if (it == chain_of_.end() || it->second != h)
        fail("restart: durable log differs from what was persisted (node " + std::to_string(n.id) +
             " index " + std::to_string(e.index) + ")");
    }
  }
}

void Sim::start(SimNode& n) {
  n.up = true;
  n.raft = std::make_unique<RawNode>(node_config(n));
  n.expected_drops = 0;
  auto snap = n.live.snapshot();
  n.app_conf = snap->meta.conf;
  if (snap->meta.index == 0) {
    n.app_index = 0;
    n.app_hash = 0;
  } else {
    n.app_index = get_u64(snap->data, 0);
    n.app_hash = get_u64(snap->data, 8);
  }
  // The machine restarts from what its snapshot carries (applied state is re-derived from
  // the log above it, as keel's store would after losing what was not checkpointed).
  if (n.machine) n.machine->reset(snap->meta.index == 0 ? std::string() : snap->data.substr(16));
  rebuild_chain(n);
  ev("start", n.id, n.raft->term(), n.raft->commit_index(), n.live.last_index());
  check_node(n);
  process_ready(n);
}

void Sim::crash(SimNode& n, int point) {
  ++stats_.crashes;
  ev("crash", n.id, static_cast<uint64_t>(point));
  n.up = false;
  n.raft.reset();
  n.live = n.durable;  // writes not yet synced are lost
  n.restart_at = now_ + kUnitsPerTick * rng_.between(sw_.restart_lo, sw_.restart_hi);
}

void Sim::decommission(SimNode& n) {
  if (n.decommissioned) return;
  ev("decommission", n.id);
  n.decommissioned = true;
  n.up = false;
  n.raft.reset();
}

void Sim::send(Message m) {
  if (rng_.chance(sw_.drop_ppm)) {
    ev("drop", m.from, m.to, static_cast<uint64_t>(m.type));
    return;
  }
  const int copies = rng_.chance(sw_.dup_ppm) ? 2 : 1;
  for (int c = 0; c < copies; ++c) {
    uint64_t delay = rng_.between(sw_.lat_lo, sw_.lat_hi);
    if (rng_.chance(sw_.long_delay_ppm)) delay += rng_.between(0, 10 * sw_.lat_hi);
    if (c + 1 < copies) {
      net_.emplace(std::make_pair(now_ + delay, seq_++), m);
    } else {
      net_.emplace(std::make_pair(now_ + delay, seq_++), std::move(m));
      break;
    }
  }
}

void Sim::deliver_due() {
  while (!net_.empty() && net_.begin()->first.first <= now_) {
    auto nh = net_.extract(net_.begin());
    Message m = std::move(nh.mapped());
    auto it = nodes_.find(m.to);
    if (it == nodes_.end() || !it->second->up || cut_.count({m.from, m.to})) {
      ev("lost", m.from, m.to, static_cast<uint64_t>(m.type));
      continue;
    }
    SimNode& n = *it->second;
    if (chaos_ && m.from == sw_.corrupter && byz_rng_.chance(sw_.corrupt_ppm) && corrupt(n, m)) {
      continue;  // the mutated message replaced the original
    }
    ev(to_string(m.type), m.from, m.to, m.term, m.index);
    n.raft->step(std::move(m));
    check_node(n);
    process_ready(n);
  }
}

void Sim::tick_due() {
  for (auto& [id, np] : nodes_) {
    SimNode& n = *np;
    if (!n.up) continue;
    while (n.next_tick <= now_ && n.up) {
      n.next_tick += n.tick_units;
      n.raft->tick();
      check_node(n);
      process_ready(n);
    }
  }
}

// The corrupting peer: mutates `orig` so that its receiver `n` must detect it, judged against
// n's state now, and steps the result. The receiver must drop it: nothing changes, nothing is
// answered, one drop is counted. Returns false (deliver the original) when the drawn mutation
// does not apply to this message. Only detectable lies are in scope: Raft makes no promise
// against a member that forges votes or entries, and neither does keel.
bool Sim::corrupt(SimNode& n, const Message& orig) {
  RawNode& r = *n.raft;
  Message m = orig;
  const bool at_leader = r.role() == Role::leader && r.term() == m.term;
  const bool forwarded = m.type == MessageType::prop || m.type == MessageType::read_index ||
                         m.type == MessageType::transfer_leader;
  bool counted = true;  // false: from_non_member, which is not an alarm
  uint64_t kind = byz_rng_.below(6);
  switch (kind) {
    case 0:  // commit beyond the follower's log
      if (m.type != MessageType::heartbeat) return false;
      m.commit = r.last_index() + 1 + byz_rng_.below(100);
      break;
    case 1:  // acknowledgement beyond the leader's log
      if (m.type != MessageType::app_resp || !at_leader) return false;
      m.index = r.last_index() + 1 + byz_rng_.below(100);
      break;
    case 2:  // entries with a gap, or a term above the message's
      if (m.type != MessageType::app || m.entries.empty()) return false;
      if (byz_rng_.chance(500000)) {
        m.entries.back().index += 1 + byz_rng_.below(3);
      } else {
        m.entries.back().term = m.term + 1;
      }
      break;
    case 3:  // an answer from a stranger
      if ((m.type != MessageType::app_resp && m.type != MessageType::heartbeat_resp) || !at_leader)
        return false;
      m.from = kStrangers + byz_rng_.below(1000);
      counted = false;
      break;
    case 4:  // from no one, or from the receiver itself
      m.from = forwarded || byz_rng_.chance(500000) ? kNoNode : m.to;
      break;
    default:  // a term where none belongs, or none where one does
      m.term = m.type == MessageType::prop || m.type == MessageType::read_index ? r.term() + 1 : 0;
      break;
  }
  auto state = [&] {
    return std::make_tuple(r.term(), r.vote(), r.leader(), r.role(), r.commit_index(),
                           r.last_index(), r.has_ready());
  };
  const auto before = state();
  const uint64_t drops = r.dropped().total();
  ++stats_.corrupted;
  ev("corrupt", orig.from, m.to, static_cast<uint64_t>(m.type), kind);
  const MessageType type = m.type;
  r.step(std::move(m));
  if (state() != before || r.dropped().total() != drops + 1) {
    fail("corrupted " + std::string(to_string(type)) + " (mutation " + std::to_string(kind) +
         ") from " + std::to_string(orig.from) + " was not dropped by " + std::to_string(n.id));
  }
  if (counted) ++n.expected_drops;
  check_node(n);
  return true;
}

// The simulator's side of the shared Ready loop (raft::drive_ready): "persist" writes to the
// live storage, may crash before the sync, syncs to the durable storage, may crash after it;
// "send" queues on the simulated network and may crash after it (before the write when the
// leader sends first); "apply" may crash after applying. A crash returns false: drive_ready
// stops at once, without advance(), and must not touch the (destroyed) RawNode again.
class SimReady final : public ReadyHandler {
 public:
  SimReady(Sim& sim, SimNode& n) : sim_(sim), n_(n) {}
  bool persist(const Ready& rd) override {
    if (sent_) ++sim_.stats_.early_sends;  // this Ready's messages overtook its write
    persisted_ = true;
    return sim_.persist(n_, rd);
  }
  bool send(std::vector<Message>& messages) override {
    if (messages.empty()) return true;
    sent_ = true;
    return sim_.send_all(n_, messages, persisted_);
  }
  bool apply(const Ready& rd) override { return sim_.apply(n_, rd); }
  bool advanced() override {
    sent_ = persisted_ = false;
    sim_.maybe_snapshot(n_);
    sim_.check_node(n_);
    return n_.up;
  }

 private:
  Sim& sim_;
  SimNode& n_;
  bool sent_ = false;       // this Ready's messages are out
  bool persisted_ = false;  // this Ready's write is done
};

bool Sim::ready_crash(SimNode& n, int point) {
  if (!chaos_ || !rng_.chance(sw_.ready_crash_ppm)) return false;
  ++stats_.crashes_at[point];
  crash(n, point);
  return true;
}

bool Sim::persist(SimNode& n, const Ready& rd) {
  // drive_ready calls persist only when the Ready writes something.
  // 1. write (not yet durable)
  if (rd.snapshot) n.live.apply_snapshot(rd.snapshot);
  n.live.append(rd.entries);
  if (rd.hard_state) n.live.set_hard_state(*rd.hard_state);
  if (ready_crash(n, 1)) return false;
  // ... sync: now durable
  if (rd.snapshot) n.durable.apply_snapshot(rd.snapshot);
  n.durable.append(rd.entries);
  if (rd.hard_state) n.durable.set_hard_state(*rd.hard_state);
  persisted(n, rd);
  return !ready_crash(n, 2);
}

bool Sim::send_all(SimNode& n, std::vector<Message>& messages, bool persisted) {
  for (Message& m : messages) {
    // The transport delivers a message only from the member at the other end of its stream
    // (transport.cpp drops the whole batch otherwise), so a member only ever speaks for itself.
    if (m.from != n.id) {
      fail("node " + std::to_string(n.id) + " sent a " + to_string(m.type) + " as " +
           std::to_string(m.from) + ": a real transport would drop it");
    }
    send(std::move(m));
  }
  // Point 3 is "after send"; when the leader sent first, the Ready's write has not happened.
  if (!ready_crash(n, 3)) return true;
  if (!persisted) ++stats_.crashes_sent_unwritten;
  return false;
}

bool Sim::apply(SimNode& n, const Ready& rd) {
  if (rd.snapshot) install_snapshot(n, *rd.snapshot);
  for (const Entry& e : rd.committed_entries) {
    apply_entry(n, e);
    if (!n.up) return false;  // decommissioned by its own removal
  }
  for (const ReadState& rs : rd.read_states)
    released(n, rs);
  if (rd.committed_entries.empty()) return true;
  return !ready_crash(n, 4);
}

void Sim::process_ready(SimNode& n) {
  for (int guard = 0; n.up && n.raft->has_ready(); ++guard) {
    if (guard > 200) fail("ready loop does not converge");  // 200 calls of 64 cycles
    SimReady handler(*this, n);
    if (!drive_ready(*n.raft, handler, drive_)) return;
  }
}

void Sim::persisted(SimNode& n, const Ready& rd) {
  if (rd.snapshot) {
    const auto& meta = rd.snapshot->meta;
    auto it = chain_of_.find({meta.index, meta.term});
    if (it == chain_of_.end()) fail("snapshot of an entry no member persisted");
    n.chain_base = meta.index;
    n.chain.assign(1, it->second);
  }
  for (const Entry& e : rd.entries) {
    if (e.index <= n.chain_base) continue;
    const uint64_t pos = e.index - n.chain_base;
    if (pos > n.chain.size()) fail("gap in the persisted log of node " + std::to_string(n.id));
    n.chain.resize(pos);
    const uint64_t h = mix(n.chain.back(), entry_hash(e));
    n.chain.push_back(h);
    auto [it, inserted] = chain_of_.emplace(std::make_pair(e.index, e.term), h);
    if (!inserted && it->second != h) {
      fail("log matching violated: node " + std::to_string(n.id) + " index " +
           std::to_string(e.index) + " term " + std::to_string(e.term));
    }
  }
}

void Sim::apply_entry(SimNode& n, const Entry& e) {
  if (e.index != n.app_index + 1) {
    fail("node " + std::to_string(n.id) + " applies index " + std::to_string(e.index) + " after " +
         std::to_string(n.app_index));
  }
  n.app_index = e.index;
  n.app_hash = mix(n.app_hash, entry_hash(e));
  if (e.type == EntryType::conf_change) {
    ConfChange cc;
    bool has_result = false;
    if (!decode_conf_change(e.data, &cc, &n.app_conf, &has_result) || !has_result)
      fail("malformed conf change applied");
  }
  if (n.machine) {
    if (e.type == EntryType::normal && e.data.size() > 9 && e.data[0] == 'w') {
      const std::string broken = n.machine->apply(e.data.substr(9));
      if (!broken.empty())
        fail("primitives at index " + std::to_string(e.index) + " on node " + std::to_string(n.id) +
             ": " + broken);
    }
    const uint64_t mh = n.machine->hash();
    if (e.index < machine_hash_.size()) {
      if (machine_hash_[e.index] != mh)
        fail("primitives: node " + std::to_string(n.id) + " reached a different state at " +
             std::to_string(e.index) + " than the first member to apply it");
    } else {
      machine_hash_.resize(e.index + 1, 0);
      machine_hash_[e.index] = mh;
    }
  }
  if (e.index < applied_hash_.size()) {
    if (applied_hash_[e.index] != n.app_hash) {
      fail("state machine safety: node " + std::to_string(n.id) + " applied a different entry at " +
           std::to_string(e.index));
    }
    return;  // already seen; effects below happened at the first application
  }
  if (e.index != applied_hash_.size()) fail("first application skips an index");
  applied_hash_.push_back(n.app_hash);
  applied_term_.push_back(e.term);
  if (e.type == EntryType::conf_change) {
    ConfChange cc;
    ConfState result;
    bool has_result = false;
    if (!decode_conf_change(e.data, &cc, &result, &has_result) || !has_result)
      fail("malformed conf change applied");
    conf_at_[e.index] = result;
    ++stats_.conf_changes;
    uint64_t vmask = 0, lmask = 0;
    for (NodeId v : result.voters)
      vmask |= uint64_t{1} << (v % 64);
    for (NodeId l : result.learners)
      lmask |= uint64_t{1} << (l % 64);
    ev("conf_applied", e.index, vmask, lmask);
    for (auto& [id, np] : nodes_) {
      if (result.contains(id)) {
        if (np->decommissioned) {
          fail("membership: the change at " + std::to_string(e.index) + " re-adds member " +
               std::to_string(id) + ", removed (and shut down) by an earlier committed change");
        }
        np->ever_member = true;
      } else if (np->ever_member) {
        decommission(*np);
      }
    }
  } else if (e.data.size() >= 9 && e.data[0] == 'w') {
    const uint64_t id = get_u64(e.data, 1);

    if (acked_.emplace(id, e.index).second) {
      max_acked_index_ = std::max(max_acked_index_, e.index);
      ++stats_.acked_writes;
      if (id == kBarrierId) barrier_index_ = e.index;
    }
  }
}

void Sim::install_snapshot(SimNode& n, const Snapshot& s) {
  ++stats_.snapshots_installed;
  const uint64_t idx = get_u64(s.data, 0);
  const uint64_t h = get_u64(s.data, 8);
  if (idx != s.meta.index) fail("snapshot data index mismatch");
  if (idx >= applied_hash_.size() || applied_hash_[idx] != h)
    fail("snapshot state differs from the applied history at " + std::to_string(idx));
  n.app_index = idx;
  n.app_hash = h;
  n.app_conf = s.meta.conf;
  if (n.machine) {
    n.machine->reset(s.data.substr(16));
    if (idx < machine_hash_.size() && machine_hash_[idx] != n.machine->hash())
      fail("primitives: the snapshot at " + std::to_string(idx) + " holds another state");
  }
  ev("install_snap", n.id, idx);
}

void Sim::maybe_snapshot(SimNode& n) {
  const uint64_t snap_index = n.live.snapshot()->meta.index;
  if (n.app_index < snap_index + sw_.snapshot_every) return;
  // The state machine reads applied conf changes, so app_conf is the configuration as of
  // app_index (what a real node would store with its snapshot).
  std::string data = put_u64(n.app_index) + put_u64(n.app_hash);
  if (n.machine) data += n.machine->rows();
  const uint64_t compact_to = n.app_index > sw_.snapshot_keep ? n.app_index - sw_.snapshot_keep : 0;
  n.live.create_snapshot(n.app_index, n.app_conf, data, compact_to);
  n.durable.create_snapshot(n.app_index, n.app_conf, std::move(data), compact_to);
  ev("snapshot", n.id, n.app_index, compact_to);
}

void Sim::released(SimNode& n, const ReadState& rs) {
  auto it = reads_.find(rs.context);
  if (it == reads_.end()) fail("read state for an unknown context");
  ReadReq& r = it->second;
  if (r.node != n.id) fail("read state released on the wrong node");
  // Linearizability: the read point covers every write acknowledged before the read began.
  if (rs.index < r.required) {
    fail("stale read: " + rs.context + " released at " + std::to_string(rs.index) +
         " but a write acknowledged before it is at " + std::to_string(r.required));
  }
  if (!r.released) {
    r.released = true;
    ++stats_.reads_released;
    if (barrier_index_ && rs.index >= *barrier_index_) ++final_reads_;
  }
  ev("read_released", n.id, rs.index, r.required);
}

void Sim::check_node(SimNode& n) {
  if (!n.up) return;
  RawNode& r = *n.raft;
  r.check_invariants();
  // What the core drops as "no correct member sends this" must be exactly what the corrupting
  // peer sent it (from_non_member is also a normal race, e.g. an answer right after a removal).
  const DroppedCounts& d = r.dropped();
  if (d.total() - d.from_non_member != n.expected_drops) {
    std::string why = "node " + std::to_string(n.id) + " dropped " +
                      std::to_string(d.total() - d.from_non_member - n.expected_drops) +
                      " message(s) from honest peers:";
    d.for_each([&](const char* name, uint64_t count) {
      if (count != 0) why += std::string(" ") + name + "=" + std::to_string(count);
    });
    fail(why);
  }
  stats_.max_term = std::max(stats_.max_term, r.term());
  if (r.role() != Role::leader) return;
  note_commit(n);
  auto [it, inserted] = leader_of_term_.emplace(r.term(), n.id);
  if (!inserted) {
    if (it->second != n.id) {
      fail("election safety: two leaders in term " + std::to_string(r.term()) + ": " +
           std::to_string(it->second) + " and " + std::to_string(n.id));
    }
    return;
  }
  ++stats_.leaders;
  ev("leader", n.id, r.term(), r.last_index());
  // Leader completeness (§5.4): the leader of term T holds every entry committed in a term
  // before T. (A leader of an older term may still be elected late, e.g. on a delayed vote;
  // it need not hold what later terms committed.)
  uint64_t required = 0;
  for (auto c = committed_by_term_.begin(); c != committed_by_term_.end() && c->first < r.term();
       ++c) {
    required = std::max(required, c->second);
  }
  if (required == 0) return;
  if (r.last_index() < required) {
    fail("leader completeness: leader " + std::to_string(n.id) + " of term " +
         std::to_string(r.term()) + " lacks committed index " + std::to_string(required));
  }
  auto t = r.log_term(required);
  if (t && *t != committed_term_at_[required]) {
    fail("leader completeness: leader " + std::to_string(n.id) + " has another entry at " +
         std::to_string(required));
  }
}

void Sim::note_commit(SimNode& n) {
  RawNode& r = *n.raft;
  uint64_t& known = committed_by_term_[r.term()];
  if (r.commit_index() <= known) return;
  known = r.commit_index();
  auto t = r.log_term(known);
  if (!t) fail("leader's commit index is compacted");
  auto [it, inserted] = committed_term_at_.emplace(known, *t);
  if (!inserted && it->second != *t) {
    fail("two different entries committed at index " + std::to_string(known));
  }
}

SimNode* Sim::random_up(bool members_only) {
  std::vector<SimNode*> up;
  for (auto& [id, np] : nodes_) {
    if (np->up && (!members_only || committed_conf().contains(id))) up.push_back(np.get());
  }
  if (up.empty()) return nullptr;
  return up[rng_.below(up.size())];
}

SimNode* Sim::leader() {
  SimNode* best = nullptr;
  for (auto& [id, np] : nodes_) {
    if (np->up && np->raft->role() == Role::leader &&
        (!best || np->raft->term() > best->raft->term()))
      best = np.get();
  }
  return best;
}

void Sim::nemesis() {
  if (rng_.chance(sw_.partition_ppm)) {
    std::vector<NodeId> ids;
    for (auto& [id, np] : nodes_)
      if (!np->decommissioned) ids.push_back(id);
    const uint64_t kind = rng_.below(3);
    if (kind == 0) {  // isolate one member
      const NodeId x = ids[rng_.below(ids.size())];
      for (NodeId y : ids) {
        if (y == x) continue;
        cut_.insert({x, y});
        cut_.insert({y, x});
      }
      ev("isolate", x);
    } else if (kind == 1) {  // split in two
      std::vector<bool> side(ids.size());
      for (size_t i = 0; i < ids.size(); ++i)
        side[i] = rng_.chance(500000);
      for (size_t i = 0; i < ids.size(); ++i)
        for (size_t j = 0; j < ids.size(); ++j)
          if (side[i] != side[j]) cut_.insert({ids[i], ids[j]});
      ev("split", cut_.size());
    } else {  // asymmetric: some directions only
      const uint64_t k = rng_.between(1, 3);
      for (uint64_t i = 0; i < k; ++i) {
        const NodeId a = ids[rng_.below(ids.size())];
        const NodeId b = ids[rng_.below(ids.size())];
        if (a != b) cut_.insert({a, b});
        ev("cut_one_way", a, b);
      }
    }
  }
  if (!cut_.empty() && rng_.chance(sw_.heal_ppm)) {
    cut_.clear();
    ev("heal");
  }
  if (rng_.chance(sw_.crash_ppm)) {
    if (SimNode* n = random_up(false)) crash(*n, 0);
  }
  for (auto& [id, np] : nodes_) {
    if (!np->up && !np->decommissioned && np->restart_at <= now_) start(*np);
  }
}

void Sim::clients() {
  const uint64_t props = rng_.below(sw_.props_max + 1);
  for (uint64_t i = 0; i < props; ++i) {
    if (!rng_.chance(sw_.propose_ppm)) continue;
    SimNode* n = random_up(true);
    if (!n) break;
    const uint64_t id = next_write_++;
    std::string data = "w" + put_u64(id);
    if (n->machine) {
      data += n->machine->propose(machine_rng_.next(), now_);
    } else {
      data += std::string(rng_.below(48), 'x');
    }
    const auto r = n->raft->propose(std::move(data));
    ev("propose", n->id, id, static_cast<uint64_t>(r.status), r.index);
    process_ready(*n);
  }
  if (rng_.chance(sw_.read_ppm)) {
    if (SimNode* n = random_up(true)) {
      std::string ctx = "r" + std::to_string(next_read_++);
      reads_[ctx] = ReadReq{n->id, max_acked_index_};
      const auto r = n->raft->read_index(ctx);
      ev("read", n->id, next_read_ - 1, static_cast<uint64_t>(r), max_acked_index_);
      process_ready(*n);
    }
  }
  if (rng_.chance(sw_.conf_ppm)) conf_change();
  if (rng_.chance(sw_.transfer_ppm)) {
    SimNode* n = random_up(true);
    if (n && !n->raft->conf_state().voters.empty()) {
      const auto& voters = n->raft->conf_state().voters;
      const NodeId to = voters[rng_.below(voters.size())];
      const auto r = n->raft->transfer_leadership(to);
      ++stats_.transfers;
      ev("transfer", n->id, to, static_cast<uint64_t>(r));
      process_ready(*n);
    }
  }
}

void Sim::conf_change() {
  // A change that names an existing member (promote, demote, remove) is proposed on the leader
  // only, chosen from the leader's latest configuration: the leader appends it only if no other
  // change is pending, so it applies to exactly that configuration. Chosen from the committed one
  // and forwarded, it could race the member's removal and re-add a removed (decommissioned) ID:
  // seed 68061 added back a removed learner as a voter that never came back, and the cluster lost
  // its quorum for good (apply_entry now fails such a change by name).
  SimNode* l = leader();
  const ConfState cur = l ? l->raft->conf_state() : committed_conf();
  ConfChange cc;
  const uint64_t op = rng_.below(5);
  auto pick = [&](const std::vector<NodeId>& v) { return v[rng_.below(v.size())]; };
  if (op == 0 && cur.learners.size() < 4) {
    cc = {ConfChangeType::add_learner, next_id_};
  } else if (op == 1 && !cur.learners.empty() && cur.voters.size() < 7) {
    cc = {ConfChangeType::add_voter, pick(cur.learners)};
  } else if (op == 2 && cur.voters.size() > 2) {
    cc = {ConfChangeType::remove_node, pick(cur.voters)};
  } else if (op == 3 && !cur.learners.empty()) {
    cc = {ConfChangeType::remove_node, pick(cur.learners)};
  } else if (op == 4 && cur.voters.size() > 2) {
    cc = {ConfChangeType::add_learner, pick(cur.voters)};
  } else {
    return;
  }
  const bool names_member = cc.node != next_id_;
  SimNode* n = l;
  if (!n && !names_member) n = random_up(true);
  if (!n) return;
  const auto r = n->raft->propose_conf_change(cc);
  ev("conf_propose", n->id, static_cast<uint64_t>(cc.type), cc.node,
     static_cast<uint64_t>(r.status));
  if (cc.type == ConfChangeType::add_learner && cc.node == next_id_ &&
      (r.status == ProposeStatus::ok || r.status == ProposeStatus::forwarded)) {
    add_node(cc.node, ConfState{});  // a fresh, empty member waiting to be caught up
  }
  if (n->up) process_ready(*n);
}

void Sim::liveness() {
  chaos_ = false;
  cut_.clear();
  sw_.drop_ppm = 0;
  sw_.dup_ppm = 0;
  sw_.long_delay_ppm = 0;
  ev("liveness");
  for (auto& [id, np] : nodes_) {
    if (!np->up && !np->decommissioned) start(*np);
  }
  const uint64_t start_tick = now_ / kUnitsPerTick;
  uint64_t last_barrier = 0;
  uint64_t last_read = 0;
  for (uint64_t t = 0; t < kLivenessTicks; ++t) {
    for (uint64_t u = 0; u < kUnitsPerTick; ++u, ++now_) {
      tick_due();
      deliver_due();
    }
    SimNode* l = leader();
    if (!l) continue;
    if (!barrier_index_) {
      if (last_barrier == 0 || t >= last_barrier + static_cast<uint64_t>(2 * sw_.election_tick)) {
        last_barrier = t + 1;
        const auto r = l->raft->propose("w" + put_u64(kBarrierId));
        ev("barrier", l->id, static_cast<uint64_t>(r.status));
        process_ready(*l);
      }
      continue;
    }
    if (final_reads_ == 0 && (last_read == 0 || t >= last_read + 5)) {
      last_read = t + 1;
      std::string ctx = "r" + std::to_string(next_read_++);
      reads_[ctx] = ReadReq{l->id, max_acked_index_};
      const auto r = l->raft->read_index(ctx);
      ev("final_read", l->id, static_cast<uint64_t>(r));
      process_ready(*l);
    }
    if (final_reads_ == 0) continue;
    // Every member of the configuration at the barrier has applied up to it (and, by the
    // per-apply checks, applied exactly the committed history, so every acknowledged write).
    const ConfState& conf = std::prev(conf_at_.upper_bound(*barrier_index_))->second;
    bool done = true;
    for (auto& [id, np] : nodes_) {
      if (!conf.contains(id)) continue;
      if (!np->up || np->app_index < *barrier_index_) {
        done = false;
        break;
      }
    }
    if (done) {
      stats_.liveness_ticks = now_ / kUnitsPerTick - start_tick;
      ev("live", stats_.liveness_ticks);
      return;
    }
  }
  std::string why =
      "liveness: not converged " + std::to_string(kLivenessTicks) + " ticks after healing;";
  SimNode* l = leader();
  why += l ? " leader " + std::to_string(l->id) : std::string(" no leader");
  why += barrier_index_ ? " barrier at " + std::to_string(*barrier_index_) : " barrier not applied";
  for (auto& [id, np] : nodes_) {
    if (np->decommissioned) continue;
    why += "; n" + std::to_string(id) + (np->up ? "" : "(down)") +
           " app=" + std::to_string(np->app_index);
    if (np->up) {
      why += " role=" + std::string(to_string(np->raft->role())) +
             " term=" + std::to_string(np->raft->term()) +
             " commit=" + std::to_string(np->raft->commit_index()) +
             " last=" + std::to_string(np->raft->last_index()) + " voters=";
      for (NodeId v : np->raft->conf_state().voters)
        why += std::to_string(v) + ",";
      why += " learners=";
      for (NodeId v : np->raft->conf_state().learners)
        why += std::to_string(v) + ",";
    }
  }
  fail(why);
}

SimResult Sim::run() {
  SimResult res;
  try {
    draw_swarm();
    ConfState boot;
    for (int i = 1; i <= sw_.voters; ++i)
      boot.voters.push_back(static_cast<NodeId>(i));
    for (int i = 0; i < sw_.learners; ++i)
      boot.learners.push_back(static_cast<NodeId>(sw_.voters + 1 + i));
    conf_at_[0] = boot;
    for (NodeId id : boot.voters)
      add_node(id, boot).ever_member = true;
    for (NodeId id : boot.learners)
      add_node(id, boot).ever_member = true;
    const uint64_t end = sw_.chaos_ticks * kUnitsPerTick;
    for (; now_ < end; ++now_) {
      if (now_ % kUnitsPerTick == 0) {
        nemesis();
        clients();
      }
      tick_due();
      deliver_due();
    }
    liveness();
  } catch (const Failure& f) {
    res.ok = false;
    res.failure = f.what;
  }
  stats_.ticks = now_ / kUnitsPerTick;
  res.trace_hash = hash_;
  res.stats = stats_;
  return res;
}

}  // namespace

SimResult run_seed(const SimOptions& opt) {
  Sim sim(opt);
  return sim.run();
}

}  // namespace keel::sim
