#include "cluster/node/node.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "cluster/node/wire.hpp"
#include "cluster/raft/driver.hpp"
#include "cluster/raft/raft.hpp"
#include "cluster/storage/raft_storage.hpp"
#include "cluster/transport/transport.hpp"

namespace keel::node {

namespace {

using Clock = std::chrono::steady_clock;
using raft::NodeId;

uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// splitmix64: spreads a hash over all 64 bits.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Error err(ErrorCode code, std::string message) {
  return make_error(code, std::move(message));
}

}  // namespace

uint64_t cluster_id_of(const std::string& cluster_token) {
  uint64_t id = mix64(fnv1a(cluster_token));
  return id == 0 ? 1 : id;
}

NodeId member_id_of(uint64_t cluster_id, const std::string& name) {
  uint64_t id = mix64(fnv1a(name, cluster_id));
  return id == 0 ? 1 : id;
}

struct Node::Impl final : raft::ReadyHandler, transport::Handler {
  struct Queued {
    storage::Command command;
    std::string encoded;
    Completion done;
  };
  struct Pending {
    Completion done;
    uint64_t index = 0;  // set when appended by this member as leader
    uint64_t term = 0;
    Clock::time_point deadline;
    size_t bytes = 0;
  };
  struct Waiting {  // no leader known yet
    uint64_t seq;
    std::string data;
    Completion done;
    Clock::time_point deadline;
    size_t bytes;
  };
  struct ReadWaiter {
    std::function<void(Status)> done;
    Clock::time_point deadline;
  };
  struct ReadRound {
    std::vector<ReadWaiter> waiters;
    Clock::time_point sent;
  };
  struct ConfWaiter {
    std::function<void(Result<std::vector<Member>>)> done;
    Clock::time_point deadline;
  };
  struct StatusQuery {
    std::vector<std::optional<Result<NodeStatus>>> results;  // [0] = self
    std::map<NodeId, size_t> slot;
    size_t missing = 0;
    std::function<void(std::vector<Result<NodeStatus>>)> done;
    std::unique_ptr<asio::steady_timer> timer;
    uint64_t seq = 0;
    Clock::time_point last_send;
  };

  Impl(storage::Engine& e, NodeOptions o)
      : engine(e),
        log(e.raft()),
        store(e.store()),
        opt(std::move(o)),
        tick_timer(io),
        stop_timer(io) {}

  storage::Engine& engine;
  storage::RaftStorage& log;
  storage::MvccStore& store;
  const NodeOptions opt;
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  asio::steady_timer tick_timer;
  asio::steady_timer stop_timer;
  std::unique_ptr<transport::Transport> transport;
  std::unique_ptr<raft::RawNode> raw;
  std::thread thread;
  std::function<void(int64_t)> on_applied;

  // ---- shared with other threads (mu) ----
  mutable std::mutex mu;
  std::deque<Queued> queue;
  size_t queued_bytes = 0;
  size_t inflight_count = 0;  // pending + waiting, mirrored for the admission check
  size_t inflight_bytes = 0;
  bool drain_posted = false;
  bool stopping = false;
  NodeStatus shared_status;

  // ---- node thread only ----
  uint64_t nonce = 0;
  uint64_t next_seq = 1;
  std::map<uint64_t, Pending> pending;            // by seq
  std::map<uint64_t, uint64_t> pending_by_index;  // leader-appended: index -> seq
  std::deque<Waiting> waiting;
  std::vector<ReadWaiter> reads_unsent;
  std::map<std::string, ReadRound> reads_inflight;     // by context
  std::multimap<uint64_t, ReadWaiter> reads_released;  // by read index, until applied
  uint64_t next_read_ctx = 1;
  std::map<uint64_t, ConfWaiter> conf_waiters;  // by seq
  std::map<uint64_t, std::unique_ptr<StatusQuery>> status_queries;
  uint64_t next_status_seq = 1;
  std::map<NodeId, Member> members;  // as of the applied index, plus appended additions
  raft::ConfState applied_conf;
  uint64_t applied = 0;
  raft::SoftState soft;
  bool removed = false;
  std::optional<Error> failed;  // the store could not apply: writes refused until restart
  bool stop_requested = false;
  Clock::time_point stop_deadline;
  bool transfer_started = false;
  uint64_t stat_readies = 0, stat_proposals = 0, stat_syncs = 0;
  Clock::time_point last_snap_warning{};
  std::vector<NodeId> snaps_refused;

  // ---- bootstrap -------------------------------------------------------------------------
  Status open() {
    auto ident = log.identity();
    if (ident) {
      if (ident->first != opt.cluster_id) {
        return err(ErrorCode::invalid_argument,
                   "data dir " + engine.dir() + " belongs to another cluster (cluster id " +
                       std::to_string(ident->first) + ", this agent's is " +
                       std::to_string(opt.cluster_id) +
                       "): check --initial-cluster-token, or use an empty data dir");
      }
      if (ident->second != opt.id) {
        return err(ErrorCode::invalid_argument,
                   "data dir " + engine.dir() + " belongs to another member (member id " +
                       std::to_string(ident->second) + ", --name " + opt.name + " gives " +
                       std::to_string(opt.id) + ")");
      }
    } else if (!log.initialized()) {
      if (store.applied_index() != 0) {
        return err(ErrorCode::invalid_argument,
                   "data dir " + engine.dir() +
                       " holds state without Raft metadata (an older single-node format); "
                       "use an empty data dir");
      }
      raft::ConfState conf;
      std::vector<Member> initial;
      bool self_listed = false;
      for (const auto& m : opt.initial_members) {
        if (m.id == opt.id) self_listed = true;
        initial.push_back(m);
        if (!opt.join_existing) conf.voters.push_back(m.id);
      }
      if (!self_listed) {
        return err(ErrorCode::invalid_argument,
                   "--initial-cluster does not name this member (--name " + opt.name + ")");
      }
      std::sort(conf.voters.begin(), conf.voters.end());
      // A joining member starts with no configuration: it learns it from the leader.
      if (auto st = log.bootstrap(conf); !st) return st;
      if (auto st = log.set_identity(opt.cluster_id, opt.id); !st) return st;
      for (auto& m : initial)
        members[m.id] = m;
      spdlog::info("bootstrapped member {} ({:x}) of cluster {:x}: {} initial voters", opt.name,
                   opt.id, opt.cluster_id, conf.voters.size());
    }
    if (members.empty()) {
      std::vector<Member> stored;
      if (wire::decode_members(store.applied_members(), &stored)) {
        for (auto& m : stored)
          members[m.id] = m;
      }
      // Peers this agent was told about (for a member that has not applied anything yet).
      for (const auto& m : opt.initial_members)
        members.emplace(m.id, m);
    }
    applied = store.applied_index();
    applied_conf = store.applied_conf();
    // Members added by entries above the applied index (appended, not yet applied).
    scan_appended(applied + 1);

    std::random_device rd;
    nonce = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ mix64(opt.id);

    raft::Config cfg;
    cfg.id = opt.id;
    cfg.storage = &log;
    cfg.seed = opt.seed != 0 ? opt.seed : mix64(opt.id ^ nonce);
    cfg.election_tick = opt.election_ticks;
    cfg.heartbeat_tick = opt.heartbeat_ticks;
    cfg.applied = applied;
    cfg.max_uncommitted_entries_size = opt.max_uncommitted_bytes;
    raw = std::make_unique<raft::RawNode>(cfg);
    update_members_roles();
    publish_status();
    return ok_status();
  }

  void scan_appended(uint64_t from) {
    const uint64_t last = log.last_index();
    if (from < log.first_index()) from = log.first_index();
    while (from <= last) {
      std::vector<raft::Entry> ents;
      log.entries(from, last + 1, 4 << 20, &ents);
      for (const auto& e : ents)
        note_conf_entry(e);
      from = ents.back().index + 1;
    }
  }

  // A membership entry takes effect when appended (thesis §4.1): the new member's address
  // must be known before the leader's first append to it.
  void note_conf_entry(const raft::Entry& e) {
    if (e.type != raft::EntryType::conf_change) return;
    raft::ConfChange cc;
    raft::ConfState ignored;
    bool has = false;
    std::string context;
    if (!raft::decode_conf_change(e.data, &cc, &ignored, &has, &context)) return;
    wire::Origin origin;
    Member m;
    if (cc.type == raft::ConfChangeType::remove_node) return;  // takes effect at apply here
    if (!wire::decode_member_context(context, &origin, &m) || m.id != cc.node) return;
    m.learner = cc.type == raft::ConfChangeType::add_learner;
    members[m.id] = m;
    if (transport && m.id != opt.id) transport->set_peer(m.id, m.peer_address);
  }

  void update_members_roles() {
    const auto& conf = raw ? raw->conf_state() : applied_conf;
    for (auto& [id, m] : members)
      m.learner = conf.is_learner(id);
  }

  // ---- thread entry points -------------------------------------------------------------
  Status start() {
    transport::TransportOptions to;
    to.cluster_id = opt.cluster_id;
    to.self = opt.id;
    to.max_frame_bytes = opt.max_peer_frame_bytes;
    transport = std::make_unique<transport::Transport>(io, to, *this);
    if (!opt.listen_peer.empty()) {
      if (auto st = transport->listen(opt.listen_peer); !st) return st;
    }
    for (const auto& [id, m] : members) {
      if (id != opt.id && !m.peer_address.empty()) transport->set_peer(id, m.peer_address);
    }
    work.emplace(io.get_executor());
    // A fresh cluster: the lowest-id voter campaigns at once instead of waiting out an
    // election timeout, so a new cluster elects in one round trip (the others wait their
    // randomized timeout, so no split vote). A single voter always campaigns at once.
    const auto& conf = raw->conf_state();
    if (!conf.voters.empty() && conf.voters.front() == opt.id &&
        (raw->term() == 0 || conf.voters.size() == 1)) {
      raw->campaign();
    }
    asio::post(io, [this] {
      pump();
      schedule_tick();
    });
    thread = std::thread([this] { io.run(); });
    return ok_status();
  }

  void schedule_tick() {
    tick_timer.expires_after(std::chrono::milliseconds(opt.tick_ms));
    tick_timer.async_wait([this](const asio::error_code& ec) {
      if (ec) return;
      raw->tick();
      expire(Clock::now());
      pump();
      if (stop_requested) check_stop();
      if (work) schedule_tick();
    });
  }

  void post_drain() {
    asio::post(io, [this] {
      drain();
      pump();
    });
  }

  // ---- proposals -----------------------------------------------------------------------
  void enqueue(storage::Command command, Completion done) {
    std::string encoded = storage::encode_command(command);
    std::optional<Error> refuse;
    bool post = false;
    {
      std::lock_guard lock(mu);
      if (stopping) {
        refuse = err(ErrorCode::shutting_down, "the agent is shutting down");
      } else if (queue.size() + inflight_count >= opt.max_pending_proposals) {
        refuse =
            err(ErrorCode::overloaded,
                std::to_string(queue.size() + inflight_count) + " writes are in flight; limit is " +
                    std::to_string(opt.max_pending_proposals) + " (raft.max_pending_proposals)");
      } else if (queued_bytes + inflight_bytes + encoded.size() > opt.max_pending_bytes) {
        refuse = err(ErrorCode::overloaded, std::to_string(queued_bytes + inflight_bytes) +
                                                " bytes of writes are in flight; limit is " +
                                                std::to_string(opt.max_pending_bytes) +
                                                " (raft.max_pending_bytes)");
      } else {
        queued_bytes += encoded.size();
        queue.push_back(Queued{std::move(command), std::move(encoded), std::move(done)});
        if (!drain_posted) {
          drain_posted = true;
          post = true;
        }
      }
    }
    if (refuse) {
      done(std::move(*refuse));
      return;
    }
    if (post) post_drain();
  }

  void drain() {
    std::vector<Queued> batch;
    {
      std::lock_guard lock(mu);
      while (!queue.empty() && batch.size() < opt.max_batch_entries) {
        queued_bytes -= queue.front().encoded.size();
        inflight_count++;
        inflight_bytes += queue.front().encoded.size();
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      drain_posted = !queue.empty();
    }
    if (drain_posted) post_drain();
    const auto now = Clock::now();
    for (auto& q : batch) {
      const uint64_t seq = next_seq++;
      const size_t bytes = q.encoded.size();
      std::string data = wire::encode_entry({opt.id, nonce, seq}, q.encoded);
      submit(seq, std::move(data), std::move(q.done), bytes, now);
    }
  }

  void finish_inflight(size_t bytes) {
    std::lock_guard lock(mu);
    inflight_count--;
    inflight_bytes -= bytes;
  }

  void complete(Completion done, size_t bytes, Result<storage::CommandResult> r) {
    finish_inflight(bytes);
    stat_proposals++;
    done(std::move(r));
  }

  void submit(uint64_t seq, std::string data, Completion done, size_t bytes,
              Clock::time_point now) {
    if (removed) {
      return complete(std::move(done), bytes, removed_error());
    }
    if (failed) return complete(std::move(done), bytes, *failed);
    auto r = raw->propose(data);
    switch (r.status) {
      case raft::ProposeStatus::ok:
        pending[seq] = Pending{std::move(done), r.index, r.term,
                               now + std::chrono::milliseconds(opt.request_timeout_ms), bytes};
        pending_by_index[r.index] = seq;
        return;
      case raft::ProposeStatus::forwarded:
        pending[seq] = Pending{std::move(done), 0, 0,
                               now + std::chrono::milliseconds(opt.request_timeout_ms), bytes};
        return;
      case raft::ProposeStatus::dropped:
        if (raw->role() == raft::Role::leader && raw->transferee() == raft::kNoNode &&
            raw->conf_state().is_voter(opt.id)) {
          return complete(
              std::move(done), bytes,
              err(ErrorCode::overloaded,
                  "the leader holds " + std::to_string(raw->uncommitted_bytes()) +
                      " uncommitted bytes; limit is " + std::to_string(opt.max_uncommitted_bytes) +
                      " (raft.max_uncommitted_bytes)"));
        }
        [[fallthrough]];  // transferring leadership: wait for the next leader
      case raft::ProposeStatus::not_leader:
        waiting.push_back(Waiting{seq, std::move(data), std::move(done),
                                  now + std::chrono::milliseconds(opt.leader_wait_ms), bytes});
        return;
      case raft::ProposeStatus::conf_change_pending:
      case raft::ProposeStatus::invalid:
        break;
    }
    KEEL_ASSERT(false, "unexpected propose status for a normal entry");
  }

  void retry_waiting() {
    if (waiting.empty() || raw->leader() == raft::kNoNode) return;
    std::deque<Waiting> w;
    w.swap(waiting);
    const auto now = Clock::now();
    for (auto& x : w) {
      if (x.deadline <= now) {
        complete(std::move(x.done), x.bytes, no_leader_error());
        continue;
      }
      submit(x.seq, std::move(x.data), std::move(x.done), x.bytes, now);
    }
  }

  Error no_leader_error() const {
    return err(ErrorCode::unavailable, "no Raft leader within " +
                                           std::to_string(opt.leader_wait_ms) +
                                           " ms (raft.leader_wait_ms); not applied");
  }
  Error removed_error() const {
    return err(ErrorCode::removed,
               "member " + opt.name + " was removed from the cluster; talk to another member");
  }

  // A peer this member never talked to may be in reconnect backoff: ask again until answered
  // or the query's deadline.
  void resend_status_queries(Clock::time_point now) {
    for (auto& [seq, q] : status_queries) {
      if (now - q->last_send < std::chrono::milliseconds(100)) continue;
      q->last_send = now;
      for (const auto& [id, slot] : q->slot) {
        if (!q->results[slot]) transport->send_app(id, wire::encode_status_request(seq));
      }
    }
  }

  void expire(Clock::time_point now) {
    resend_status_queries(now);
    while (!waiting.empty() && waiting.front().deadline <= now) {
      auto x = std::move(waiting.front());
      waiting.pop_front();
      complete(std::move(x.done), x.bytes, no_leader_error());
    }
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      if (it->second.index) pending_by_index.erase(it->second.index);
      complete(std::move(it->second.done), it->second.bytes,
               err(ErrorCode::outcome_unknown,
                   "the write was handed to the leader but was not seen applied within " +
                       std::to_string(opt.request_timeout_ms) +
                       " ms (raft.request_timeout_ms); it may still be applied: read before "
                       "retrying"));
      it = pending.erase(it);
    }
    // Reads: unsent ones wait for a leader until their deadline; a round the leader did not
    // answer within two election timeouts is asked again (a read is safe to repeat).
    const auto election = std::chrono::milliseconds(opt.tick_ms * opt.election_ticks);
    std::vector<ReadWaiter> keep;
    for (auto& w : reads_unsent) {
      if (w.deadline <= now) {
        w.done(no_leader_error());
      } else {
        keep.push_back(std::move(w));
      }
    }
    reads_unsent.swap(keep);
    for (auto it = reads_inflight.begin(); it != reads_inflight.end();) {
      if (now - it->second.sent < 2 * election) {
        ++it;
        continue;
      }
      for (auto& w : it->second.waiters)
        reads_unsent.push_back(std::move(w));
      it = reads_inflight.erase(it);
    }
    for (auto it = conf_waiters.begin(); it != conf_waiters.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      it->second.done(
          err(ErrorCode::outcome_unknown, "the membership change was not seen applied within " +
                                              std::to_string(opt.request_timeout_ms) +
                                              " ms; check `keelctl member list`"));
      it = conf_waiters.erase(it);
    }
  }

  // ---- reads ---------------------------------------------------------------------------
  void add_read(std::function<void(Status)> done) {
    if (removed) return done(removed_error());
    reads_unsent.push_back(
        {std::move(done), Clock::now() + std::chrono::milliseconds(opt.request_timeout_ms)});
  }

  void issue_reads() {
    if (reads_unsent.empty()) return;
    if (raw->leader() == raft::kNoNode) return;  // wait for one (expire() bounds it)
    std::string ctx = std::to_string(nonce) + "/" + std::to_string(next_read_ctx++);
    auto r = raw->read_index(ctx);
    if (r != raft::ReadResult::ok && r != raft::ReadResult::forwarded) return;
    ReadRound round{std::move(reads_unsent), Clock::now()};
    reads_unsent.clear();
    reads_inflight.emplace(std::move(ctx), std::move(round));
  }

  void release_reads() {
    while (!reads_released.empty() && reads_released.begin()->first <= applied) {
      auto done = std::move(reads_released.begin()->second.done);
      reads_released.erase(reads_released.begin());
      done(ok_status());
    }
  }

  // ---- membership ----------------------------------------------------------------------
  void change(MemberChange kind, const std::string& name, const std::string& addr,
              std::function<void(Result<std::vector<Member>>)> done) {
    if (removed) return done(removed_error());
    const NodeId id = member_id_of(opt.cluster_id, name);
    Member m;
    m.id = id;
    m.name = name;
    m.peer_address = addr;
    raft::ConfChange cc;
    cc.node = id;
    auto known = members.find(id);
    switch (kind) {
      case MemberChange::add_learner:
        if (addr.empty()) {
          return done(err(ErrorCode::invalid_argument, "member add needs a peer address"));
        }
        if (raw->conf_state().contains(id)) {
          return done(err(ErrorCode::invalid_argument, "member " + name + " is already a member"));
        }
        cc.type = raft::ConfChangeType::add_learner;
        break;
      case MemberChange::promote:
        if (!raw->conf_state().is_learner(id) || known == members.end()) {
          return done(err(ErrorCode::invalid_argument, "member " + name + " is not a learner"));
        }
        m.peer_address = known->second.peer_address;
        cc.type = raft::ConfChangeType::add_voter;
        break;
      case MemberChange::remove:
        if (!raw->conf_state().contains(id)) {
          return done(err(ErrorCode::invalid_argument, "member " + name + " is not a member"));
        }
        cc.type = raft::ConfChangeType::remove_node;
        break;
    }
    const uint64_t seq = next_seq++;
    auto r = raw->propose_conf_change(cc, wire::encode_member_context({opt.id, nonce, seq}, m));
    switch (r.status) {
      case raft::ProposeStatus::ok:
      case raft::ProposeStatus::forwarded:
        conf_waiters[seq] = {std::move(done),
                             Clock::now() + std::chrono::milliseconds(opt.request_timeout_ms)};
        return;
      case raft::ProposeStatus::not_leader:
        return done(no_leader_error());
      case raft::ProposeStatus::dropped:
        return done(err(ErrorCode::unavailable,
                        "the leader is transferring leadership or was removed; retry"));
      case raft::ProposeStatus::conf_change_pending:
        return done(err(ErrorCode::unavailable,
                        "another membership change is not committed yet (or the new leader "
                        "has not committed an entry of its term); retry"));
      case raft::ProposeStatus::invalid:
        return done(
            err(ErrorCode::invalid_argument, "the change leaves no voter or changes nothing"));
    }
  }

  std::vector<Member> member_list() const {
    std::vector<Member> out;
    const auto& conf = raw->conf_state();
    for (const auto& [id, m] : members) {
      if (!conf.contains(id)) continue;
      Member x = m;
      x.learner = conf.is_learner(id);
      out.push_back(std::move(x));
    }
    return out;
  }

  // ---- cluster status ------------------------------------------------------------------
  NodeStatus local_status() const {
    NodeStatus s;
    s.cluster_id = opt.cluster_id;
    s.id = opt.id;
    s.name = opt.name;
    if (removed) {
      s.role = "removed";
    } else if (raw->conf_state().is_learner(opt.id)) {
      s.role = "learner";
    } else {
      s.role = raft::to_string(raw->role());
    }
    s.leader = raw->leader();
    s.term = raw->term();
    s.commit_index = raw->commit_index();
    s.applied_index = applied;
    s.last_index = raw->last_index();
    s.revision = store.current_revision();
    s.members = member_list();
    s.readies = stat_readies;
    s.proposals = stat_proposals;
    s.log_syncs = stat_syncs;
    return s;
  }

  void publish_status() {
    auto s = local_status();
    std::lock_guard lock(mu);
    shared_status = std::move(s);
  }

  void query_cluster(uint32_t timeout_ms,
                     std::function<void(std::vector<Result<NodeStatus>>)> done) {
    auto q = std::make_unique<StatusQuery>();
    q->done = std::move(done);
    q->results.emplace_back(local_status());
    const uint64_t seq = next_status_seq++;
    q->seq = seq;
    q->last_send = Clock::now();
    for (const auto& m : member_list()) {
      if (m.id == opt.id) continue;
      q->slot[m.id] = q->results.size();
      q->results.emplace_back(std::nullopt);
      q->missing++;
      transport->send_app(m.id, wire::encode_status_request(seq));
    }
    if (q->missing == 0) return finish_query(std::move(q));
    q->timer = std::make_unique<asio::steady_timer>(io);
    q->timer->expires_after(std::chrono::milliseconds(timeout_ms));
    q->timer->async_wait([this, seq](const asio::error_code& ec) {
      if (ec) return;
      auto it = status_queries.find(seq);
      if (it == status_queries.end()) return;
      auto q = std::move(it->second);
      status_queries.erase(it);
      finish_query(std::move(q));
    });
    status_queries[seq] = std::move(q);
  }

  void finish_query(std::unique_ptr<StatusQuery> q) {
    std::vector<Result<NodeStatus>> out;
    for (auto& [id, slot] : q->slot) {
      if (!q->results[slot]) {
        std::string name = members.count(id) ? members.at(id).name : std::to_string(id);
        q->results[slot] = err(ErrorCode::unavailable,
                               "member " + name + " did not answer (unreachable or stopped)");
      }
    }
    for (auto& r : q->results)
      out.push_back(std::move(*r));
    q->done(std::move(out));
  }

  // ---- transport::Handler --------------------------------------------------------------
  void on_message(raft::Message m) override {
    if (removed) return;
    if (m.type == raft::MessageType::snap) {
      // Snapshot state transfer is not wired yet (the leader sends one only to a member
      // behind its retained log, raft.log_retain_entries). Installing the metadata without
      // the state would corrupt this replica, so the snapshot is refused; the leader retries.
      const auto now = Clock::now();
      if (now - last_snap_warning > std::chrono::seconds(10)) {
        last_snap_warning = now;
        spdlog::error(
            "member {:x} sent a snapshot at index {}; snapshot installation is not "
            "supported yet, so this member cannot catch up past the leader's "
            "retained log",
            m.from, m.snapshot ? m.snapshot->meta.index : 0);
      }
      return;
    }
    raw->step(std::move(m));
    pump();
  }
  void on_unreachable(NodeId peer) override { raw->report_unreachable(peer); }
  void on_app(NodeId from, std::string payload) override {
    auto kind = wire::app_kind(payload);
    if (kind == wire::AppKind::status_request) {
      uint64_t seq = 0;
      if (!wire::decode_status_request(payload, &seq)) return;
      transport->send_app(from, wire::encode_status_response(seq, local_status()));
    } else if (kind == wire::AppKind::status_response) {
      uint64_t seq = 0;
      NodeStatus s;
      if (!wire::decode_status_response(payload, &seq, &s)) {
        spdlog::warn("malformed status response from member {:x}; ignored", from);
        return;
      }
      auto it = status_queries.find(seq);
      if (it == status_queries.end()) return;
      auto& q = *it->second;
      auto slot = q.slot.find(from);
      if (slot == q.slot.end() || q.results[slot->second]) return;
      q.results[slot->second] = std::move(s);
      if (--q.missing == 0) {
        auto own = std::move(it->second);
        status_queries.erase(it);
        own->timer->cancel();
        finish_query(std::move(own));
      }
    } else if (kind == wire::AppKind::removed_notice) {
      uint64_t who = 0;
      if (!wire::decode_removed_notice(payload, &who) || who != opt.id || removed) return;
      if (!members.count(from)) return;  // only a member we know can tell us
      spdlog::warn("member {:x} says this member was removed from the cluster", from);
      removed = true;
      fail_all(removed_error());
      publish_status();
    } else {
      spdlog::warn("unknown app message from member {:x} ({} bytes); ignored", from,
                   payload.size());
    }
  }

  // ---- raft::ReadyHandler --------------------------------------------------------------
  bool persist(const raft::Ready& rd) override {
    log.persist(rd);  // one WiredTiger transaction, synced; aborts on an I/O failure
    stat_syncs++;
    for (const auto& e : rd.entries)
      note_conf_entry(e);
    return true;
  }

  bool send(std::vector<raft::Message>& messages) override {
    for (const auto& m : messages) {
      // See on_message: the receiver refuses snapshots; tell the core at once so it probes
      // again later instead of waiting on a transfer that cannot finish.
      if (m.type == raft::MessageType::snap) snaps_refused.push_back(m.to);
    }
    if (!messages.empty()) transport->send(messages);
    return true;
  }

  bool apply(const raft::Ready& rd) override {
    KEEL_ASSERT(!rd.snapshot, "snapshots are refused in on_message until installation exists");
    for (const auto& rs : rd.read_states) {
      auto it = reads_inflight.find(rs.context);
      if (it == reads_inflight.end()) continue;
      for (auto& w : it->second.waiters)
        reads_released.emplace(rs.index, std::move(w));
      reads_inflight.erase(it);
    }
    if (!rd.committed_entries.empty()) apply_entries(rd.committed_entries);
    release_reads();
    return true;
  }

  bool advanced() override {
    stat_readies++;
    for (NodeId to : snaps_refused)
      raw->report_snapshot(to, false);
    snaps_refused.clear();
    return true;
  }

  struct Decoded {
    uint64_t index;
    wire::Origin origin;
    storage::Command command;
  };

  void apply_entries(const std::vector<raft::Entry>& entries) {
    std::vector<Decoded> decoded;
    decoded.reserve(entries.size());
    bool conf_changed = false;
    std::vector<std::pair<uint64_t, std::function<void()>>> conf_done;
    for (const auto& e : entries) {
      if (e.type == raft::EntryType::conf_change) {
        apply_conf_entry(e, &conf_done);
        conf_changed = true;
        continue;
      }
      if (e.data.empty()) continue;  // a new leader's no-op
      wire::Origin origin;
      std::string_view cmd_bytes;
      if (!wire::decode_entry(e.data, &origin, &cmd_bytes)) {
        spdlog::error("log entry {} is not a keel command; skipped on every member", e.index);
        continue;
      }
      auto cmd = storage::decode_command(std::string(cmd_bytes));
      if (!cmd) {
        spdlog::error("log entry {} does not decode ({}); skipped on every member", e.index,
                      cmd.error().message);
        continue;
      }
      decoded.push_back(Decoded{e.index, origin, std::move(cmd).value()});
    }
    const uint64_t last = entries.back().index;
    std::vector<std::pair<uint64_t, const storage::Command*>> batch;
    batch.reserve(decoded.size());
    for (const auto& d : decoded)
      batch.emplace_back(d.index, &d.command);
    std::string members_blob;
    if (conf_changed) members_blob = wire::encode_members(member_list_applied());
    auto results = store.apply(batch, last, conf_changed ? &applied_conf : nullptr,
                               conf_changed ? &members_blob : nullptr);
    KEEL_ASSERT(results.size() == batch.size(), "apply returned a result per command");
    applied = last;
    for (size_t i = 0; i < decoded.size(); ++i) {
      const auto& d = decoded[i];
      if (!results[i].ok() && results[i].error().code == ErrorCode::internal) {
        // The store failed; the entries are committed but not applied. Applying later
        // batches on top would skip them, so refuse writes until restart (which re-applies).
        failed = err(ErrorCode::internal, "the store could not apply committed writes (" +
                                              results[i].error().message +
                                              "); writes are refused until restart");
        spdlog::critical("{}", failed->message);
      }
      if (d.origin.member != opt.id || d.origin.nonce != nonce) continue;
      auto it = pending.find(d.origin.seq);
      if (it == pending.end()) continue;
      if (it->second.index) pending_by_index.erase(it->second.index);
      auto p = std::move(it->second);
      pending.erase(it);
      complete(std::move(p.done), p.bytes, std::move(results[i]));
    }
    // Entries this member appended as leader at an index that is now applied with other
    // content were lost with their term: definitely not applied.
    while (!pending_by_index.empty() && pending_by_index.begin()->first <= applied) {
      const uint64_t seq = pending_by_index.begin()->second;
      pending_by_index.erase(pending_by_index.begin());
      auto it = pending.find(seq);
      if (it == pending.end()) continue;
      auto p = std::move(it->second);
      pending.erase(it);
      complete(std::move(p.done), p.bytes,
               err(ErrorCode::unavailable,
                   "leadership changed before the write committed; not applied, retry"));
    }
    for (auto& [seq, fn] : conf_done)
      fn();
    if (on_applied) on_applied(store.current_revision());
    if (applied > log.first_index() + 2 * opt.log_retain_entries) {
      const uint64_t to = applied - opt.log_retain_entries;
      log.create_snapshot(applied, applied_conf, std::string(), to);
    }
  }

  std::vector<Member> member_list_applied() const {
    std::vector<Member> out;
    for (const auto& [id, m] : members) {
      if (!applied_conf.contains(id)) continue;
      Member x = m;
      x.learner = applied_conf.is_learner(id);
      out.push_back(std::move(x));
    }
    return out;
  }

  void apply_conf_entry(const raft::Entry& e,
                        std::vector<std::pair<uint64_t, std::function<void()>>>* done) {
    raft::ConfChange cc;
    raft::ConfState result;
    bool has = false;
    std::string context;
    if (!raft::decode_conf_change(e.data, &cc, &result, &has, &context) || !has) {
      spdlog::error("membership entry {} does not decode; skipped", e.index);
      return;
    }
    applied_conf = result;
    wire::Origin origin;
    Member m;
    const bool has_ctx = wire::decode_member_context(context, &origin, &m);
    if (cc.type == raft::ConfChangeType::remove_node) {
      auto it = members.find(cc.node);
      std::string name = it != members.end() ? it->second.name : std::to_string(cc.node);
      spdlog::info("member {} ({:x}) removed at index {}", name, cc.node, e.index);
      if (cc.node == opt.id) {
        removed = true;
        fail_all(removed_error());
      } else if (transport) {
        // Tell it (it no longer receives the log), then forget its address a little later so
        // the notice can still go out.
        transport->send_app(cc.node, wire::encode_removed_notice(cc.node));
        auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::seconds(2));
        const NodeId gone = cc.node;
        timer->async_wait([this, timer, gone](const asio::error_code& ec) {
          if (!ec && transport && !raw->conf_state().contains(gone)) transport->remove_peer(gone);
        });
      }
    } else if (has_ctx) {
      m.learner = cc.type == raft::ConfChangeType::add_learner;
      members[cc.node] = m;
      spdlog::info("member {} ({:x}) {} at index {}", m.name, cc.node,
                   m.learner ? "added as learner" : "is a voter", e.index);
    }
    if (has_ctx && origin.member == opt.id && origin.nonce == nonce) {
      auto it = conf_waiters.find(origin.seq);
      if (it != conf_waiters.end()) {
        auto fn = std::move(it->second.done);
        conf_waiters.erase(it);
        done->emplace_back(origin.seq, [this, fn = std::move(fn)] { fn(member_list_applied()); });
      }
    }
  }

  void fail_all(const Error& e) {
    for (auto& [seq, p] : pending)
      complete(std::move(p.done), p.bytes, e);
    pending.clear();
    pending_by_index.clear();
    for (auto& w : waiting)
      complete(std::move(w.done), w.bytes, e);
    waiting.clear();
    for (auto& w : reads_unsent)
      w.done(e);
    reads_unsent.clear();
    for (auto& [ctx, round] : reads_inflight) {
      for (auto& w : round.waiters)
        w.done(e);
    }
    reads_inflight.clear();
    for (auto& [idx, w] : reads_released)
      w.done(e);
    reads_released.clear();
    for (auto& [seq, w] : conf_waiters)
      w.done(e);
    conf_waiters.clear();
  }

  // ---- the loop ------------------------------------------------------------------------
  void pump() {
    if (removed) {
      publish_status();
      return;
    }
    issue_reads();
    for (int round = 0; round < 16 && raw->has_ready(); ++round) {
      raft::drive_ready(*raw, *this);
      if (raw->leader() != soft.lead || raw->role() != soft.role) {
        const bool leader_appeared = raw->leader() != raft::kNoNode && soft.lead != raw->leader();
        soft = {raw->leader(), raw->role()};
        if (soft.lead != raft::kNoNode) {
          spdlog::info("term {}: leader is {:x}{}", raw->term(), soft.lead,
                       soft.lead == opt.id ? " (this member)" : "");
        }
        if (leader_appeared) {
          retry_waiting();
          issue_reads();
        }
      }
    }
    if (raw->has_ready()) asio::post(io, [this] { pump(); });
    publish_status();
  }

  // ---- stop ----------------------------------------------------------------------------
  void request_stop() {
    stop_requested = true;
    stop_deadline = Clock::now() + std::chrono::milliseconds(2000);
    drain();  // everything queued before stop() is proposed
    pump();
    check_stop();
  }

  void check_stop() {
    const auto now = Clock::now();
    const bool writes_done = pending.empty() && waiting.empty();
    if (!writes_done && now < stop_deadline) return;
    const auto& conf = raw->conf_state();
    if (!transfer_started && raw->role() == raft::Role::leader && conf.voters.size() > 1) {
      // Hand leadership to the most up-to-date voter so the cluster does not wait out an
      // election timeout (the leader is going away on purpose).
      NodeId best = raft::kNoNode;
      uint64_t best_match = 0;
      for (NodeId v : conf.voters) {
        if (v == opt.id) continue;
        const raft::Progress* pr = raw->progress(v);
        if (pr && (best == raft::kNoNode || pr->match > best_match)) {
          best = v;
          best_match = pr->match;
        }
      }
      if (best != raft::kNoNode) {
        transfer_started = true;
        stop_deadline = now + std::chrono::milliseconds(opt.tick_ms * opt.election_ticks);
        spdlog::info("stopping: handing leadership to {:x}", best);
        raw->transfer_leadership(best);
        pump();
        return;
      }
    }
    if (transfer_started && raw->role() == raft::Role::leader && now < stop_deadline) return;
    finish_stop();
  }

  void finish_stop() {
    fail_all(err(ErrorCode::shutting_down, "the agent is shutting down"));
    for (auto& [seq, q] : status_queries) {
      if (q->timer) q->timer->cancel();
    }
    status_queries.clear();
    tick_timer.cancel();
    if (transport) transport->stop();
    work.reset();
    io.stop();
  }
};

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Node>> Node::open(storage::Engine& engine, NodeOptions options) {
  if (options.id == 0) options.id = member_id_of(options.cluster_id, options.name);
  auto impl = std::make_unique<Impl>(engine, std::move(options));
  if (auto st = impl->open(); !st) return std::move(st).error();
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Node::~Node() {
  stop();
}

Status Node::start(std::function<void(int64_t)> on_applied) {
  KEEL_ASSERT(!impl_->thread.joinable(), "Node::start called twice");
  impl_->on_applied = std::move(on_applied);
  return impl_->start();
}

void Node::propose(storage::Command command, Completion done) {
  impl_->enqueue(std::move(command), std::move(done));
}

void Node::read_index(std::function<void(Status)> done) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      done(make_error(ErrorCode::shutting_down, "the agent is shutting down"));
      return;
    }
  }
  asio::post(impl_->io, [impl = impl_.get(), done = std::move(done)]() mutable {
    impl->add_read(std::move(done));
    impl->pump();
  });
}

void Node::change_member(MemberChange change, const std::string& name,
                         const std::string& peer_address,
                         std::function<void(Result<std::vector<Member>>)> done) {
  asio::post(impl_->io,
             [impl = impl_.get(), change, name, peer_address, done = std::move(done)]() mutable {
               impl->change(change, name, peer_address, std::move(done));
               impl->pump();
             });
}

void Node::cluster_status(uint32_t timeout_ms,
                          std::function<void(std::vector<Result<NodeStatus>>)> done) {
  asio::post(impl_->io, [impl = impl_.get(), timeout_ms, done = std::move(done)]() mutable {
    impl->query_cluster(timeout_ms, std::move(done));
  });
}

NodeStatus Node::status() const {
  std::lock_guard lock(impl_->mu);
  return impl_->shared_status;
}

void Node::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping && !impl_->thread.joinable()) return;
    impl_->stopping = true;
  }
  if (impl_->thread.joinable()) {
    asio::post(impl_->io, [impl = impl_.get()] { impl->request_stop(); });
    impl_->thread.join();
  }
  // Never started, or stopped: whatever is still queued gets its answer.
  std::deque<Impl::Queued> rest;
  {
    std::lock_guard lock(impl_->mu);
    rest.swap(impl_->queue);
  }
  for (auto& q : rest)
    q.done(make_error(ErrorCode::shutting_down, "the agent is shutting down"));
}

}  // namespace keel::node
