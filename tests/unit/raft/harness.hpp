#pragma once
// A tiny in-process cluster for scenario tests: each member has a MemoryStorage, the driver loop
// persists, sends, applies and advances; messages go through a FIFO queue with cut links.
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/raft/driver.hpp"
#include "cluster/raft/raft.hpp"

namespace keel::raft::test {

struct Member {
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<RawNode> raft;
  std::vector<Entry> applied;  // normal entries with data, in order
  std::vector<ReadState> reads;
  uint64_t applied_index = 0;
  ConfState applied_conf;
  bool up = true;
};

class Cluster {
  // The harness's storage is synchronous (every write is durable at once) and messages only
  // queue, so the order of persist and send is not observable here.
  class Handler final : public ReadyHandler {
   public:
    Handler(Member& m, std::deque<Message>& queue) : m_(m), queue_(queue) {}
    bool persist(const Ready& rd) override {
      if (rd.snapshot) m_.storage->apply_snapshot(rd.snapshot);
      m_.storage->append(rd.entries);
      if (rd.hard_state) m_.storage->set_hard_state(*rd.hard_state);
      return true;
    }
    bool send(std::vector<Message>& messages) override {
      for (Message& msg : messages)
        queue_.push_back(std::move(msg));
      return true;
    }
    bool apply(const Ready& rd) override {
      if (rd.snapshot) {
        m_.applied_index = rd.snapshot->meta.index;
        m_.applied_conf = rd.snapshot->meta.conf;
      }
      for (const Entry& e : rd.committed_entries) {
        KEEL_RAFT_ASSERT(e.index == m_.applied_index + 1,
                         "harness: committed entries out of order");
        m_.applied_index = e.index;
        if (e.type == EntryType::normal && !e.data.empty()) m_.applied.push_back(e);
        if (e.type == EntryType::conf_change) {
          ConfChange cc;
          bool has = false;
          decode_conf_change(e.data, &cc, &m_.applied_conf, &has);
        }
      }
      for (const ReadState& rs : rd.read_states)
        m_.reads.push_back(rs);
      return true;
    }
    bool advanced() override {
      m_.raft->check_invariants();
      return true;
    }

   private:
    Member& m_;
    std::deque<Message>& queue_;
  };

 public:
  using Tweak = std::function<void(Config&)>;

  // Voters 1..voters, learners after them, all bootstrapped with that configuration.
  explicit Cluster(int voters, int learners = 0, Tweak tweak = {}) : tweak_(std::move(tweak)) {
    for (int i = 1; i <= voters; ++i)
      boot_.voters.push_back(static_cast<NodeId>(i));
    for (int i = 0; i < learners; ++i)
      boot_.learners.push_back(static_cast<NodeId>(voters + 1 + i));
    for (NodeId id : boot_.voters)
      add(id, boot_);
    for (NodeId id : boot_.learners)
      add(id, boot_);
  }

  // A new, empty member (to be added by a configuration change).
  Member& add(NodeId id, const ConfState& bootstrap) {
    Member& m = members_[id];
    m.storage = std::make_unique<MemoryStorage>(bootstrap);
    m.applied_conf = bootstrap;
    start(id);
    return m;
  }

  Config config(NodeId id) {
    Config c;
    c.id = id;
    c.storage = members_[id].storage.get();
    c.seed = 1000 + id;
    c.election_tick = 10;
    c.heartbeat_tick = 1;
    if (tweak_) tweak_(c);
    return c;
  }

  void start(NodeId id) {
    Member& m = members_[id];
    m.raft = std::make_unique<RawNode>(config(id));
    m.up = true;
    m.applied_index = m.storage->snapshot()->meta.index;
  }
  // Crash: in-memory state is lost, the storage (all synced) stays.
  void restart(NodeId id) { start(id); }

  RawNode& raft(NodeId id) { return *members_.at(id).raft; }
  Member& member(NodeId id) { return members_.at(id); }
  MemoryStorage& storage(NodeId id) { return *members_.at(id).storage; }

  void isolate(NodeId id) {
    for (auto& [other, m] : members_) {
      if (other == id) continue;
      cut_.insert({id, other});
      cut_.insert({other, id});
    }
  }
  void cut(NodeId from, NodeId to) { cut_.insert({from, to}); }
  void heal() { cut_.clear(); }
  void drop_type(MessageType t) { dropped_types_.insert(t); }
  void allow_all_types() { dropped_types_.clear(); }

  // Runs one member's Ready loop (raft::drive_ready): persist, queue messages, apply, advance.
  void flush(NodeId id) {
    Member& m = members_.at(id);
    Handler handler(m, queue_);
    while (m.up && m.raft->has_ready()) {
      drive_ready(*m.raft, handler);
    }
  }
  void flush_all() {
    for (auto& [id, m] : members_)
      flush(id);
  }

  // Messages produced so far (flushes everyone first) — for tests that inspect them.
  std::vector<Message> take() {
    flush_all();
    std::vector<Message> out(queue_.begin(), queue_.end());
    queue_.clear();
    return out;
  }
  void deliver(Message m) {
    auto it = members_.find(m.to);
    if (it == members_.end() || !it->second.up) return;
    if (cut_.count({m.from, m.to}) || dropped_types_.count(m.type)) return;
    it->second.raft->step(std::move(m));
    it->second.raft->check_invariants();
  }

  // Delivers messages until none are left (bounded).
  void stabilize(int max_messages = 100000) {
    flush_all();
    for (int i = 0; i < max_messages && !queue_.empty(); ++i) {
      Message m = std::move(queue_.front());
      queue_.pop_front();
      const NodeId to = m.to;
      deliver(std::move(m));
      if (members_.count(to)) flush(to);
      if (queue_.empty()) flush_all();
    }
  }

  void tick(NodeId id, int n = 1) {
    for (int i = 0; i < n; ++i) {
      members_.at(id).raft->tick();
      flush(id);
    }
  }
  // Ticks everyone n times, delivering messages after each round.
  void tick_all(int n = 1) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, m] : members_)
        if (m.up) m.raft->tick();
      stabilize();
    }
  }

  // Elects `id` by campaigning it directly.
  void elect(NodeId id) {
    raft(id).campaign();
    stabilize();
  }

  NodeId leader() {
    NodeId lead = kNoNode;
    uint64_t term = 0;
    for (auto& [id, m] : members_) {
      if (m.up && m.raft->role() == Role::leader && m.raft->term() >= term) {
        lead = id;
        term = m.raft->term();
      }
    }
    return lead;
  }

  std::vector<NodeId> ids() const {
    std::vector<NodeId> out;
    for (auto& [id, m] : members_)
      out.push_back(id);
    return out;
  }

 private:
  Tweak tweak_;
  ConfState boot_;
  std::map<NodeId, Member> members_;
  std::deque<Message> queue_;
  std::set<std::pair<NodeId, NodeId>> cut_;
  std::set<MessageType> dropped_types_;
};

// Gives member `id` a log whose entries have the given terms (index 1..n) and a hard state
// term, then restarts it from that storage.
inline void seed_log(Cluster& c, NodeId id, const std::vector<uint64_t>& terms, uint64_t term) {
  std::vector<Entry> ents;
  for (size_t i = 0; i < terms.size(); ++i) {
    ents.push_back(Entry{i + 1, terms[i], EntryType::normal, "e" + std::to_string(i + 1)});
  }
  c.storage(id).append(ents);
  c.storage(id).set_hard_state(HardState{term, kNoNode, 0});
  c.restart(id);
}

inline std::vector<std::string> datas(const std::vector<Entry>& ents) {
  std::vector<std::string> out;
  for (const Entry& e : ents)
    out.push_back(e.data);
  return out;
}

}  // namespace keel::raft::test
