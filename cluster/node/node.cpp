#include "cluster/node/node.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "cluster/node/relay.hpp"
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

struct Node::Impl final : raft::ReadyHandler, transport::Handler, RelayFeed, RelayUplink {
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
    uint64_t forward_term = 0;  // forwarded to the leader of this term (0 = not forwarded)
  };
  struct Waiting {  // no leader known yet, or forwarded and handed back undelivered
    uint64_t seq;
    std::string data;
    Completion done;
    Clock::time_point deadline;
    size_t bytes;
    // Forwarded before and handed back by the transport as never written (on_undelivered):
    // `deadline` is the request's (request_timeout_ms from the first submit) and stays so
    // across re-submits, so a leader that stays unreachable cannot keep the write for ever.
    bool undelivered = false;
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
    std::function<void(std::vector<MemberStatus>)> done;
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
  ReplicaPosition shared_position;

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
  uint64_t stat_readies = 0, stat_proposals = 0;
  uint64_t stat_time_entries = 0;
  uint64_t time_entry_index = 0;  // the last time entry this member proposed (keep_time_moving)
  Clock::time_point last_snap_warning{};
  bool conf_unrecorded = false;
  std::set<NodeId> removed_ids;  // every member removed so far (stored with the member list)  //
                                 // the store has no configuration yet: record it at next apply

  // ---- snapshots (node thread; see "Snapshots" below) ----
  struct OutgoingSnapshot {
    uint64_t transfer = 0;
    std::unique_ptr<storage::SnapshotSource> source;
    raft::Message snap;      // goes out once every chunk is acknowledged
    uint64_t sent = 0;       // chunks sent
    uint64_t acked = 0;      // chunks acknowledged
    bool exhausted = false;  // the last chunk is sent
    Clock::time_point started, progress;
  };
  struct IncomingSnapshot {
    NodeId from = 0;
    uint64_t transfer = 0;
    uint64_t next_seq = 0;
    std::unique_ptr<storage::SnapshotSink> sink;
    std::optional<storage::SnapshotInfo> info;  // set once the last chunk is stored
    Clock::time_point started, progress;
  };
  std::map<NodeId, OutgoingSnapshot> snaps_out;
  std::optional<IncomingSnapshot> snap_in;
  std::vector<std::pair<NodeId, bool>> snap_reports;  // for the core, outside a Ready cycle
  uint64_t next_transfer = 1;
  uint64_t stat_snapshots_sent = 0, stat_snapshots_installed = 0, stat_dropped_props = 0;
  uint64_t stat_undelivered_props = 0;  // own forwarded writes handed back (on_undelivered)
  uint64_t applied_term = 0;            // term of the last applied entry
  // Cluster time (see cluster_now): the newest stamp in this member's log or state, and the
  // leader's clock base, set when it became leader.
  uint64_t last_stamp = 0;
  uint64_t clock_base_ms = 0;
  Clock::time_point clock_base_at;
  bool pump_posted = false;
  int fresh_campaign_ticks = 0;  // see start(): a fresh cluster's first campaign is repeated

  // ---- the relay tree (relay.hpp; "Relay" below) ----
  std::unique_ptr<RelayHub> relay;  // feeds this agent's learner children
  // Learners that send this voter writes and reads without being its children (by id: when
  // last heard), so their addresses are forgotten when they go quiet.
  std::map<NodeId, Clock::time_point> foreign_peers;
  // A learner agent's (opt.relay_learner) link up the tree.
  std::unique_ptr<RelayChild> child;
  std::deque<raft::Entry> ring;  // a learner's last applied entries, for its own children
  size_t ring_bytes = 0;
  // A learner's writes handed to a voter: the encoded entry until the voter says it was
  // proposed (then the write completes when applied here, like a forwarded one). `sent`:
  // in flight to a voter; otherwise it is sent (again) at the next tick: only a write that
  // is known NOT to be proposed is ever sent again, so none is applied twice.
  struct Unacked {
    std::string data;
    bool sent = false;
  };
  std::map<uint64_t, Unacked> relay_unacked;  // by seq

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
        if (!opt.join_existing && !opt.relay_learner) conf.voters.push_back(m.id);
      }
      if (!self_listed && !opt.relay_learner) {
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
    {
      std::vector<Member> ignored;
      std::vector<uint64_t> gone;
      if (wire::decode_members(store.applied_members(), &ignored, &gone))
        removed_ids.insert(gone.begin(), gone.end());
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
    applied_term = log.term(applied).value_or(log.snapshot()->meta.term);
    last_stamp = store.applied_cluster_ms();
    applied_conf = store.applied_conf();
    if (applied_conf.voters.empty() && applied_conf.learners.empty()) {
      // Nothing applied recorded a configuration yet (no membership change so far): the
      // bootstrap configuration, then the changes up to the applied index. The first apply
      // records it, so that a snapshot of this state carries it.
      applied_conf = log.snapshot()->meta.conf;
      replay_conf(log.snapshot()->meta.index + 1, applied);
      conf_unrecorded = true;
    }
    // Members added by entries above the applied index (appended, not yet applied).
    scan_appended(applied + 1);
    next_transfer = mix64(nonce_seed()) & 0xffffffffffffull;

    std::random_device rd;
    nonce = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ mix64(opt.id);

    if (opt.relay_learner) {
      child = std::make_unique<RelayChild>(opt.id, opt.name, advertise(), relay_options(), *this);
      members.erase(opt.id);  // a learner is not a member; initial_members names the voters
      update_members_roles();
      publish_status();
      return ok_status();
    }
    raft::Config cfg;
    cfg.id = opt.id;
    cfg.storage = &log;
    cfg.seed = opt.seed != 0 ? opt.seed : mix64(opt.id ^ nonce);
    cfg.election_tick = opt.election_ticks;
    cfg.heartbeat_tick = opt.heartbeat_ticks;
    cfg.applied = applied;
    cfg.max_uncommitted_entries_size = opt.max_uncommitted_bytes;
    cfg.removed.assign(removed_ids.begin(), removed_ids.end());
    raw = std::make_unique<raft::RawNode>(cfg);
    update_members_roles();
    publish_status();
    return ok_status();
  }

  static uint64_t nonce_seed() {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }

  // applied_conf after the configuration entries in [from, to] (those still in the log).
  void replay_conf(uint64_t from, uint64_t to) {
    if (from < log.first_index()) from = log.first_index();
    to = std::min(to, log.last_index());
    while (from <= to) {
      std::vector<raft::Entry> ents;
      log.entries(from, to + 1, 4 << 20, &ents);
      for (const auto& e : ents) {
        if (e.type != raft::EntryType::conf_change) continue;
        raft::ConfChange cc;
        raft::ConfState result;
        bool has = false;
        if (raft::decode_conf_change(e.data, &cc, &result, &has) && has) applied_conf = result;
      }
      from = ents.back().index + 1;
    }
  }

  void scan_appended(uint64_t from) {
    const uint64_t last = log.last_index();
    if (from < log.first_index()) from = log.first_index();
    while (from <= last) {
      std::vector<raft::Entry> ents;
      log.entries(from, last + 1, 4 << 20, &ents);
      for (const auto& e : ents) {
        note_conf_entry(e);
        note_stamp(e);
      }
      from = ents.back().index + 1;
    }
  }

  // Cluster time (LogCabin's ClusterClock): the leader's monotonic clock, continued from the
  // newest stamp in its log when it became leader, so a leaderless gap is not counted and a
  // wall-clock jump changes nothing. Only the leader stamps (submit, on_message), as it
  // appends; stamps never go back. apply() never reads a clock: the state machine's time is
  // the stamps in the log (MvccStore::applied_cluster_ms).
  uint64_t cluster_now() {
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - clock_base_at).count();
    last_stamp =
        std::max(last_stamp, clock_base_ms + static_cast<uint64_t>(std::max<int64_t>(0, elapsed)));
    return last_stamp;
  }
  void start_cluster_clock() {
    clock_base_ms = last_stamp;
    clock_base_at = Clock::now();
  }
  void note_stamp(const raft::Entry& e) {
    if (e.type != raft::EntryType::normal || e.data.empty()) return;
    wire::Origin origin;
    std::string_view cmd;
    uint64_t stamp = 0;
    if (wire::decode_entry(e.data, &origin, &cmd, &stamp)) last_stamp = std::max(last_stamp, stamp);
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
    for (auto& [id, m] : members)
      m.learner = conf().is_learner(id);
  }
  // The configuration as the core sees it (a learner agent has no core: as applied).
  const raft::ConfState& conf() const { return raw ? raw->conf_state() : applied_conf; }

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
    relay = std::make_unique<RelayHub>(opt.id, relay_options(), *this);
    work.emplace(io.get_executor());
    if (!raw) {
      asio::post(io, [this] {
        learner_tick(Clock::now());
        schedule_tick();
      });
      thread = std::thread([this] { io.run(); });
      return ok_status();
    }
    // A fresh cluster: the lowest-id voter campaigns at once instead of waiting out an
    // election timeout, so a new cluster elects in one round trip (the others wait their
    // randomized timeout, so no split vote). A single voter always campaigns at once.
    // Its peers usually start at the same moment, so the first requests can find them not
    // listening yet: it asks again every other tick until a leader is known or one election
    // timeout has passed (campaigning is always safe; it only costs a term).
    const auto& conf = raw->conf_state();
    if (!conf.voters.empty() && conf.voters.front() == opt.id &&
        (raw->term() == 0 || conf.voters.size() == 1)) {
      raw->campaign();
      if (conf.voters.size() > 1) fresh_campaign_ticks = opt.election_ticks;
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
      if (!raw) {
        learner_tick(Clock::now());
        if (stop_requested) check_stop();
        if (work) schedule_tick();
        return;
      }
      raw->tick();
      if (fresh_campaign_ticks > 0) {
        --fresh_campaign_ticks;
        if (raw->leader() != raft::kNoNode) {
          fresh_campaign_ticks = 0;
        } else if (fresh_campaign_ticks % 2 == 0 && raw->role() != raft::Role::leader) {
          raw->campaign();
        }
      }
      expire(Clock::now());
      retry_waiting(/*undelivered_only=*/true);
      expire_snapshots(Clock::now());
      keep_time_moving();
      expire_foreign_peers(Clock::now());
      relay->tick(Clock::now());
      pump();
      if (stop_requested) check_stop();
      if (work) schedule_tick();
    });
  }

  // The leader's time entries (NodeOptions::time_entry_interval_ms): an entry without a
  // command whose only effect is its stamp, so leases end on time without other writes.
  // Origin seq 0 never matches a pending proposal (next_seq starts at 1).
  void keep_time_moving() {
    if (!raw || raw->role() != raft::Role::leader || time_entry_index > applied || failed ||
        removed)
      return;
    const uint64_t deadline = store.next_deadline_ms();
    if (deadline == UINT64_MAX) return;
    const uint64_t now = cluster_now();
    if (deadline > now && now < store.applied_cluster_ms() + opt.time_entry_interval_ms) return;
    std::string data = wire::encode_entry({opt.id, nonce, 0}, std::string_view());
    wire::stamp_entry(&data, now);
    auto r = raw->propose(data);
    if (r.status == raft::ProposeStatus::ok) {
      time_entry_index = r.index;
      stat_time_entries++;
    }
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
        refuse = err(ErrorCode::shutting_down, "the agent is shutting down; not applied");
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

  // `until`: a write handed back undelivered (Waiting::undelivered) keeps its request deadline.
  void submit(uint64_t seq, std::string data, Completion done, size_t bytes, Clock::time_point now,
              std::optional<Clock::time_point> until = std::nullopt) {
    if (removed) {
      return complete(std::move(done), bytes, removed_error());
    }
    if (failed) return complete(std::move(done), bytes, *failed);
    if (!raw) return learner_submit(seq, std::move(data), std::move(done), bytes, now);
    if (raw->role() == raft::Role::leader) wire::stamp_entry(&data, cluster_now());
    auto r = raw->propose(data);
    switch (r.status) {
      case raft::ProposeStatus::ok:
        pending[seq] =
            Pending{std::move(done), r.index, r.term,
                    until.value_or(now + std::chrono::milliseconds(opt.request_timeout_ms)), bytes};
        pending_by_index[r.index] = seq;
        return;
      case raft::ProposeStatus::forwarded:
        // send() stamps the prop message with this same term (nothing runs in between). If
        // the transport never writes it, on_undelivered puts it back in `waiting`.
        pending[seq] =
            Pending{std::move(done),
                    0,
                    0,
                    until.value_or(now + std::chrono::milliseconds(opt.request_timeout_ms)),
                    bytes,
                    raw->term()};
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
        waiting.push_back(
            Waiting{seq, std::move(data), std::move(done),
                    until.value_or(now + std::chrono::milliseconds(opt.leader_wait_ms)), bytes,
                    until.has_value()});
        return;
      case raft::ProposeStatus::conf_change_pending:
      case raft::ProposeStatus::invalid:
        break;
    }
    KEEL_ASSERT(false, "unexpected propose status for a normal entry");
  }

  // When a leader appeared: everything waiting is submitted again; on a tick
  // (`undelivered_only`): the writes handed back undelivered, once the connection to the
  // leader is up (so a leader in reconnect backoff is not sent a write per tick to drop).
  void retry_waiting(bool undelivered_only = false) {
    if (waiting.empty() || !raw || raw->leader() == raft::kNoNode) return;
    const NodeId lead = raw->leader();
    if (undelivered_only && lead != opt.id && !transport->connected(lead)) return;
    std::deque<Waiting> w;
    w.swap(waiting);
    const auto now = Clock::now();
    for (auto& x : w) {
      if (undelivered_only && !x.undelivered) {
        waiting.push_back(std::move(x));
        continue;
      }
      if (x.deadline <= now) {
        complete(std::move(x.done), x.bytes, waiting_error(x));
        continue;
      }
      submit(x.seq, std::move(x.data), std::move(x.done), x.bytes, now,
             x.undelivered ? std::optional(x.deadline) : std::nullopt);
    }
  }

  // The transport hands back forwarded proposals it certainly never wrote to a connection
  // (transport.hpp, "Proposals"): no leader has seen them, so this member's own writes among
  // them wait for a leader again (retry_waiting) instead of for their deadline. A write whose
  // prop may have been delivered never comes back here and is never sent again. Writes that
  // learners relayed through this voter (origin another agent) are not re-proposed: the
  // learner was told the term they were forwarded in, and a re-proposal in a later term could
  // be applied after the learner concluded from that term that it never will be.
  void on_undelivered(std::vector<raft::Message> props) override {
    if (!raw || removed) return;
    for (auto& m : props) {
      for (auto& e : m.entries) {
        wire::Origin origin;
        std::string_view cmd;
        if (e.type != raft::EntryType::normal || !wire::decode_entry(e.data, &origin, &cmd) ||
            origin.member != opt.id || origin.nonce != nonce)
          continue;
        auto it = pending.find(origin.seq);
        if (it == pending.end() || it->second.forward_term == 0 || it->second.index != 0) continue;
        Pending p = std::move(it->second);
        pending.erase(it);
        stat_undelivered_props++;
        waiting.push_back(
            Waiting{origin.seq, std::move(e.data), std::move(p.done), p.deadline, p.bytes, true});
      }
    }
  }

  Error waiting_error(const Waiting& w) const {
    if (!w.undelivered) return no_leader_error();
    return err(ErrorCode::unavailable, "the leader could not be reached within " +
                                           std::to_string(opt.request_timeout_ms) +
                                           " ms (raft.request_timeout_ms); not applied");
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
    // Not in deadline order: writes handed back undelivered keep their request deadline.
    for (auto it = waiting.begin(); it != waiting.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      auto x = std::move(*it);
      it = waiting.erase(it);
      complete(std::move(x.done), x.bytes, waiting_error(x));
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
    // A read point that this replica has not reached by the read's deadline (a learner cut
    // off after the voter answered): it fails rather than waiting for ever.
    for (auto it = reads_released.begin(); it != reads_released.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      auto done = std::move(it->second.done);
      it = reads_released.erase(it);
      done(err(ErrorCode::unavailable, "this replica did not reach the read point within " +
                                           std::to_string(opt.request_timeout_ms) +
                                           " ms (raft.request_timeout_ms)"));
    }
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
    if (!raw) return learner_issue_reads();
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
    if (!raw) {
      return done(err(ErrorCode::invalid_argument,
                      "this agent is a learner (role = learner), not a Raft member: change "
                      "membership through a voter"));
    }
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
        if (removed_ids.count(id)) {
          return done(err(ErrorCode::invalid_argument,
                          "member " + name +
                              " was removed earlier and cannot rejoin under that name (its id "
                              "never returns): give it a new --name and an empty data dir"));
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
        return done(err(ErrorCode::invalid_argument,
                        "refused: the change would leave no voter or change nothing, or it adds "
                        "back a member that was removed (a removed member cannot rejoin under "
                        "its old name: give it a new --name and an empty data dir)"));
    }
  }

  std::vector<Member> member_list() const {
    std::vector<Member> out;
    const auto& c = conf();
    // A learner agent that has applied no configuration yet knows the voters it was given.
    const bool all = !raw && c.voters.empty();
    for (const auto& [id, m] : members) {
      if (!all && !c.contains(id)) continue;
      Member x = m;
      x.learner = c.is_learner(id);
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
    s.relay_children = relay ? relay->child_count() : 0;
    if (relay) s.learners = relay->subtree();
    if (!raw) {
      s.role = "learner";
      const wire::RelayEntries& h = child->header();
      s.leader = h.leader;
      s.term = h.term;
      s.commit_index = std::max(h.commit, applied);
      s.applied_index = applied;
      s.last_index = applied;
      s.revision = store.current_revision();
      s.cluster_ms = store.applied_cluster_ms();
      s.members = member_list();
      s.proposals = stat_proposals;
      s.upstream = child->parent();
      s.upstream_path = child->path();
      s.lag_entries = s.commit_index - applied;
      s.lag_ms = h.cluster_ms > s.cluster_ms ? h.cluster_ms - s.cluster_ms : 0;
      s.snapshots_installed = stat_snapshots_installed;
      return s;
    }
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
    s.cluster_ms = store.applied_cluster_ms();
    s.members = member_list();
    s.readies = stat_readies;
    s.proposals = stat_proposals;
    s.time_entries = stat_time_entries;
    s.log_syncs = engine.stats().log_syncs;
    const raft::DroppedCounts& d = raw->dropped();
    s.dropped_peer_msgs = d.total();
    d.for_each([&](const char* reason, uint64_t n) {
      if (n == 0) return;
      if (!s.dropped_by_reason.empty()) s.dropped_by_reason += ' ';
      s.dropped_by_reason += std::string(reason) + "=" + std::to_string(n);
    });
    s.snapshots_sent = stat_snapshots_sent;
    s.undelivered_props = stat_undelivered_props;
    s.snapshots_installed = stat_snapshots_installed;
    return s;
  }

  void publish_status() {
    auto s = local_status();
    {
      std::lock_guard lock(mu);
      shared_status = std::move(s);
    }
    publish_position();
  }
  // Before completions run, so a reply's header covers its own write.
  void publish_position() {
    ReplicaPosition p{opt.id, raw ? raw->term() : (child ? child->header().term : 0), applied,
                      store.applied_cluster_ms(), false};
    p.possibly_stale =
        raw ? (removed || raw->leader() == raft::kNoNode) : !(child && child->upstream_ok());
    std::lock_guard lock(mu);
    shared_position = p;
  }

  void query_cluster(uint32_t timeout_ms, std::function<void(std::vector<MemberStatus>)> done) {
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
    std::vector<MemberStatus> out;
    out.push_back(MemberStatus{opt.id, opt.name, std::move(*q->results[0])});
    for (auto& [id, slot] : q->slot) {
      std::string name = members.count(id) ? members.at(id).name : std::to_string(id);
      if (!q->results[slot]) {
        q->results[slot] = err(ErrorCode::unavailable,
                               "member " + name + " did not answer (unreachable or stopped)");
      }
      out.push_back(MemberStatus{id, std::move(name), std::move(*q->results[slot])});
    }
    q->done(std::move(out));
  }

  // ---- transport::Handler --------------------------------------------------------------
  void on_message(raft::Message m) override {
    if (removed || !raw) return;  // a learner agent is fed by the relay, never by the core
    if (m.type == raft::MessageType::snap) return on_snapshot_message(std::move(m));
    if (m.type == raft::MessageType::prop &&
        (raw->role() != raft::Role::leader || m.log_term != raw->term())) {
      // Forwarded to the leader of term m.log_term, which this member is not (any more). It
      // is dropped, never passed on or appended in a later term: the sender then knows that
      // an entry of a later term applied before its write means the write never will be
      // (see settle_forwarded).
      stat_dropped_props++;
      return;
    }
    if (m.type == raft::MessageType::prop) {
      for (auto& e : m.entries) {
        if (e.type == raft::EntryType::normal) wire::stamp_entry(&e.data, cluster_now());
      }
    }
    raw->step(std::move(m));
    // One Ready for everything a batch frame carried (e.g. many forwarded proposals share
    // the leader's fsync): the pump runs after the transport delivered the whole batch.
    schedule_pump();
  }

  void schedule_pump() {
    if (pump_posted) return;
    pump_posted = true;
    asio::post(io, [this] {
      pump_posted = false;
      pump();
    });
  }
  void on_unreachable(NodeId peer) override {
    if (!raw) {
      // The parent's connection is gone (it died, or stopped reading): attach elsewhere now
      // rather than after relay.timeout_ms.
      if (child) child->on_unreachable(peer);
      return;
    }
    raw->report_unreachable(peer);
    // A chunk of a running snapshot transfer was dropped with the connection: the transfer
    // cannot finish, so the core may start a new one now rather than after the timeout.
    if (snaps_out.count(peer)) {
      abort_snapshot(peer, "the connection to the member was lost");
      schedule_pump();
    }
  }
  void on_app(NodeId from, std::string payload) override {
    auto kind = wire::app_kind(payload);
    if (kind && *kind >= wire::AppKind::relay_subscribe) return on_relay_app(from, *kind, payload);
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
    } else if (kind == wire::AppKind::snapshot_chunk) {
      wire::SnapshotChunk c;
      if (!wire::decode_snapshot_chunk(payload, &c)) {
        spdlog::warn("malformed snapshot chunk from member {:x}; ignored", from);
        return;
      }
      on_snapshot_chunk(from, c);
    } else if (kind == wire::AppKind::snapshot_ack) {
      wire::SnapshotAck a;
      if (!wire::decode_snapshot_ack(payload, &a)) {
        spdlog::warn("malformed snapshot acknowledgement from member {:x}; ignored", from);
        return;
      }
      if (relay->on_snapshot_ack(from, a, Clock::now())) return;
      if (raw) on_snapshot_ack(from, a);
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
    if (rd.snapshot) {
      // on_snapshot_message steps a snapshot only when its streamed state is complete.
      KEEL_ASSERT(
          snap_in && snap_in->info && snap_in->info->applied_index == rd.snapshot->meta.index,
          "a snapshot Ready without its streamed state");
      // The state switch and the log's snapshot record: one synced transaction.
      auto st = engine.install_snapshot(*snap_in->sink, rd);
      KEEL_ASSERT(st.ok(), "snapshot install failed after its commit (restart recovers)");
      installed_snapshot(*rd.snapshot);
    } else {
      log.persist(rd);  // one WiredTiger transaction, synced; aborts on an I/O failure
    }
    for (const auto& e : rd.entries) {
      note_conf_entry(e);
      note_stamp(e);
    }
    return true;
  }

  bool send(std::vector<raft::Message>& messages) override {
    for (auto& m : messages) {
      if (m.type == raft::MessageType::prop) m.log_term = raw->term();  // see on_message
    }
    // Snapshot messages start (or join) a stream of the state; the message itself follows
    // the last acknowledged chunk.
    auto snap = std::stable_partition(messages.begin(), messages.end(), [](const raft::Message& m) {
      return m.type != raft::MessageType::snap;
    });
    for (auto it = snap; it != messages.end(); ++it)
      start_snapshot(std::move(*it));
    messages.erase(snap, messages.end());
    if (!messages.empty()) transport->send(messages);
    return true;
  }

  bool apply(const raft::Ready& rd) override {
    for (const auto& rs : rd.read_states) {
      auto it = reads_inflight.find(rs.context);
      if (it == reads_inflight.end()) continue;
      for (auto& w : it->second.waiters)
        reads_released.emplace(rs.index, std::move(w));
      reads_inflight.erase(it);
    }
    if (rd.snapshot && on_applied) on_applied(store.current_revision());
    if (!rd.committed_entries.empty()) apply_entries(rd.committed_entries);
    release_reads();
    return true;
  }

  bool advanced() override {
    stat_readies++;
    return true;
  }

  // ---- Snapshots -------------------------------------------------------------------------
  // A member behind the leader's retained log (raft.log_retain_entries) gets the state
  // machine streamed: the core's snap message starts a transfer; the leader reads one
  // WiredTiger snapshot of its state (storage::SnapshotSource, at its applied index, whose
  // term and configuration replace the core's snapshot metadata) and sends it in app
  // messages of snapshot_chunk_bytes, at most snapshot_window_chunks unacknowledged. The
  // receiver checks and stores each chunk in staging tables (storage::SnapshotSink) and
  // acknowledges it. After the last acknowledgement the leader sends the snap message; the
  // receiver steps it only if its staged state is complete and matches the metadata, and
  // the Ready that carries the snapshot installs the staged state in the same synced
  // transaction as the log's snapshot record. A transfer that makes no progress for
  // snapshot_timeout_ms, or that either side refuses, is abandoned; the core retries.

  void start_snapshot(raft::Message m) {
    const NodeId to = m.to;
    if (snaps_out.count(to)) return;  // a transfer to `to` is already running
    auto fail = [&](const std::string& why) {
      spdlog::error("cannot send a snapshot to member {:x}: {}", to, why);
      snap_reports.emplace_back(to, false);
    };
    auto src = store.snapshot_source();
    if (!src) return fail(src.error().message);
    const storage::SnapshotInfo& info = (*src)->info();
    auto term = log.term(info.applied_index);
    if (!term)
      return fail("the term of applied index " + std::to_string(info.applied_index) +
                  " is compacted");
    if (info.conf.voters.empty()) return fail("the applied state records no configuration");
    auto snap = std::make_shared<raft::Snapshot>();
    snap->meta.index = info.applied_index;
    snap->meta.term = *term;
    snap->meta.conf = info.conf;
    m.snapshot = std::move(snap);
    OutgoingSnapshot o;
    o.transfer = next_transfer++;
    o.source = std::move(src).value();
    o.snap = std::move(m);
    o.started = o.progress = Clock::now();
    spdlog::info("sending member {:x} a snapshot at index {} (revision {})", to, info.applied_index,
                 info.revision);
    snaps_out.emplace(to, std::move(o));
    pump_snapshot(to);
  }

  // Sends chunks while the window has room.
  void pump_snapshot(NodeId to) {
    auto it = snaps_out.find(to);
    if (it == snaps_out.end()) return;
    OutgoingSnapshot& o = it->second;
    std::string chunk;
    while (!o.exhausted && o.sent - o.acked < std::max<size_t>(1, opt.snapshot_window_chunks)) {
      auto more = o.source->next(opt.snapshot_chunk_bytes, &chunk);
      if (!more) return abort_snapshot(to, more.error().message);
      const bool last = !*more;
      if (!transport->send_app(to, wire::encode_snapshot_chunk(o.transfer, o.sent, last, chunk))) {
        return abort_snapshot(to, "the peer's send queue refused a chunk (unreachable?)");
      }
      o.sent++;
      o.exhausted = last;
    }
  }

  void abort_snapshot(NodeId to, const std::string& why) {
    spdlog::warn("snapshot transfer to member {:x} abandoned: {}", to, why);
    snaps_out.erase(to);
    snap_reports.emplace_back(to, false);
  }

  void on_snapshot_ack(NodeId from, const wire::SnapshotAck& a) {
    auto it = snaps_out.find(from);
    if (it == snaps_out.end() || it->second.transfer != a.transfer) return;  // an old one
    OutgoingSnapshot& o = it->second;
    if (!a.ok) return abort_snapshot(from, "member refused it: " + a.reason);
    if (a.seq != o.acked || a.seq >= o.sent) return;  // duplicate or out of order: ignore
    o.acked++;
    o.progress = Clock::now();
    if (o.exhausted && o.acked == o.sent) {
      const auto secs = std::chrono::duration<double>(o.progress - o.started).count();
      spdlog::info("snapshot at index {} sent to member {:x}: {} chunks, {} bytes in {:.2f} s",
                   o.snap.snapshot->meta.index, from, o.sent, o.source->bytes(), secs);
      std::vector<raft::Message> msg;
      msg.push_back(std::move(o.snap));
      snaps_out.erase(it);
      stat_snapshots_sent++;
      transport->send(msg);
      snap_reports.emplace_back(from, true);
      pump();
      return;
    }
    pump_snapshot(from);
  }

  void on_snapshot_chunk(NodeId from, const wire::SnapshotChunk& c) {
    auto answer = [&](bool ok, const std::string& reason) {
      transport->send_app(from, wire::encode_snapshot_ack({c.transfer, c.seq, ok, reason}));
    };
    auto refuse = [&](const std::string& reason) {
      spdlog::warn("snapshot chunk {} of transfer {:x} from member {:x} refused: {}", c.seq,
                   c.transfer, from, reason);
      if (snap_in && snap_in->from == from && snap_in->transfer == c.transfer) snap_in.reset();
      answer(false, reason);
    };
    const auto now = Clock::now();
    if (!snap_in || snap_in->from != from || snap_in->transfer != c.transfer) {
      if (c.seq != 0) return refuse("not the first chunk of a transfer this member knows");
      if (raw && raw->role() == raft::Role::leader) return refuse("this member is the leader");
      if (!raw && from != child->parent()) return refuse("not from this learner's parent");
      snap_in.reset();  // a newer transfer replaces an unfinished one (its tables go)
      auto sink = store.snapshot_sink();
      if (!sink) return refuse(sink.error().message);
      snap_in =
          IncomingSnapshot{from, c.transfer, 0, std::move(sink).value(), std::nullopt, now, now};
      spdlog::info("receiving a snapshot from member {:x}", from);
    }
    if (c.seq != snap_in->next_seq || snap_in->info) return refuse("chunk out of order");
    if (auto st = snap_in->sink->add(c.data); !st) return refuse(st.error().message);
    snap_in->next_seq++;
    snap_in->progress = now;
    if (c.last) {
      auto info = snap_in->sink->finish();
      if (!info) return refuse(info.error().message);
      spdlog::info("snapshot from member {:x} stored: index {}, revision {}, {} bytes", from,
                   info->applied_index, info->revision, snap_in->sink->bytes());
      snap_in->info = std::move(info).value();
    }
    answer(true, "");
  }

  void on_snapshot_message(raft::Message m) {
    const bool ready = snap_in && snap_in->info && snap_in->from == m.from && m.snapshot &&
                       snap_in->info->applied_index == m.snapshot->meta.index &&
                       snap_in->info->conf == m.snapshot->meta.conf;
    if (!ready) {
      const auto now = Clock::now();
      if (now - last_snap_warning > std::chrono::seconds(10)) {
        last_snap_warning = now;
        spdlog::warn(
            "snapshot message from member {:x} at index {} without its streamed state; "
            "ignored",
            m.from, m.snapshot ? m.snapshot->meta.index : 0);
      }
      return;
    }
    raw->step(std::move(m));
    pump();  // the Ready carrying the snapshot installs it (persist)
    // The core did not need it (it already had those entries): the staged state goes.
    snap_in.reset();
  }

  // After the install: this member's view of applied state and membership is the snapshot's.
  void installed_snapshot(const raft::Snapshot& snap) {
    const auto secs = std::chrono::duration<double>(Clock::now() - snap_in->started).count();
    spdlog::info("installed the snapshot at index {} from member {:x} ({} bytes, {:.2f} s)",
                 snap.meta.index, snap_in->from, snap_in->sink->bytes(), secs);
    snap_in.reset();
    stat_snapshots_installed++;
    applied = snap.meta.index;
    applied_term = std::max(applied_term, snap.meta.term);
    last_stamp = std::max(last_stamp, store.applied_cluster_ms());
    settle_forwarded(snap.meta.term, true);
    // Writes this member appended as leader at indexes the snapshot covers: the snapshot
    // holds either them or the entries that replaced them, and this member cannot tell which.
    while (!pending_by_index.empty() && pending_by_index.begin()->first <= snap.meta.index) {
      const uint64_t seq = pending_by_index.begin()->second;
      pending_by_index.erase(pending_by_index.begin());
      auto it = pending.find(seq);
      if (it == pending.end()) continue;
      auto p = std::move(it->second);
      pending.erase(it);
      complete(std::move(p.done), p.bytes,
               err(ErrorCode::outcome_unknown,
                   "a snapshot replaced this member's state before the write was seen "
                   "applied; it may or may not have been applied"));
    }
    applied_conf = snap.meta.conf;
    conf_unrecorded = false;
    std::vector<Member> stored;
    std::vector<uint64_t> gone;
    if (wire::decode_members(store.applied_members(), &stored, &gone)) {
      removed_ids.insert(gone.begin(), gone.end());
      std::map<NodeId, Member> next;
      for (auto& m : stored)
        next[m.id] = m;
      for (const auto& [id, m] : members) {
        if (!next.count(id) && id != opt.id && transport) transport->remove_peer(id);
      }
      members = std::move(next);
      for (const auto& [id, m] : members) {
        if (id != opt.id && transport && !m.peer_address.empty())
          transport->set_peer(id, m.peer_address);
      }
    } else {
      spdlog::error("the installed snapshot's member list does not decode; keeping the old one");
    }
    // Forwarded writes whose entries the snapshot covers can no longer be matched: they end
    // as outcome_unknown at their deadline, which is the truth.
    update_members_roles();
  }

  void expire_snapshots(Clock::time_point now) {
    const auto timeout = std::chrono::milliseconds(opt.snapshot_timeout_ms);
    if (raw && raw->role() != raft::Role::leader && !snaps_out.empty()) snaps_out.clear();
    for (auto it = snaps_out.begin(); it != snaps_out.end();) {
      auto next = std::next(it);
      if (now - it->second.progress > timeout) {
        abort_snapshot(it->first, "no acknowledgement within " +
                                      std::to_string(opt.snapshot_timeout_ms) +
                                      " ms (raft.snapshot_timeout_ms)");
      }
      it = next;
    }
    if (snap_in && now - snap_in->progress > timeout) {
      spdlog::warn("snapshot transfer from member {:x} stalled; its staged state is dropped",
                   snap_in->from);
      snap_in.reset();
    }
    store.drop_retired();
  }

  void report_snapshots() {
    if (!raw) return;
    for (const auto& [to, ok] : snap_reports)
      raw->report_snapshot(to, ok);
    snap_reports.clear();
  }

  struct Decoded {
    uint64_t index;
    wire::Origin origin;
    uint64_t stamp;
    std::optional<storage::Command> command;  // none: a time entry
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
      uint64_t stamp = 0;
      if (!wire::decode_entry(e.data, &origin, &cmd_bytes, &stamp)) {
        spdlog::error("log entry {} is not a keel command; skipped on every member", e.index);
        continue;
      }
      if (cmd_bytes.empty()) {  // a time entry (keep_time_moving)
        decoded.push_back(Decoded{e.index, origin, stamp, std::nullopt});
        continue;
      }
      auto cmd = storage::decode_command(std::string(cmd_bytes));
      if (!cmd) {
        spdlog::error("log entry {} does not decode ({}); skipped on every member", e.index,
                      cmd.error().message);
        continue;
      }
      decoded.push_back(Decoded{e.index, origin, stamp, std::move(cmd).value()});
    }
    const uint64_t last = entries.back().index;
    std::vector<storage::ApplyEntry> batch;
    batch.reserve(decoded.size());
    for (const auto& d : decoded)
      batch.push_back(storage::ApplyEntry{d.index, d.stamp, d.command ? &*d.command : nullptr});
    std::string members_blob;
    const bool record_conf = conf_changed || conf_unrecorded;
    if (record_conf) {
      members_blob = wire::encode_members(
          member_list_applied(), std::vector<uint64_t>(removed_ids.begin(), removed_ids.end()));
    }
    auto all_results = store.apply_entries(batch, last, record_conf ? &applied_conf : nullptr,
                                           record_conf ? &members_blob : nullptr);
    conf_unrecorded = false;
    applied = last;
    publish_position();
    // One result per entry with a command; time entries get an empty slot here.
    std::vector<std::optional<Result<storage::CommandResult>>> results(decoded.size());
    {
      size_t r = 0;
      for (size_t i = 0; i < decoded.size(); ++i) {
        if (!decoded[i].command) continue;
        KEEL_ASSERT(r < all_results.size(), "apply returned a result per command");
        results[i].emplace(std::move(all_results[r++]));
      }
      KEEL_ASSERT(r == all_results.size(), "apply returned a result per command");
    }
    for (size_t i = 0; i < decoded.size(); ++i) {
      const auto& d = decoded[i];
      if (!results[i]) continue;
      if (!results[i]->ok() && results[i]->error().code == ErrorCode::internal) {
        // The store failed; the entries are committed but not applied. Applying later
        // batches on top would skip them, so refuse writes until restart (which re-applies).
        failed = err(ErrorCode::internal, "the store could not apply committed writes (" +
                                              results[i]->error().message +
                                              "); writes are refused until restart");
        spdlog::critical("{}", failed->message);
      }
      if (d.origin.member != opt.id || d.origin.nonce != nonce) continue;
      auto it = pending.find(d.origin.seq);
      if (it == pending.end()) continue;
      relay_unacked.erase(d.origin.seq);
      if (it->second.index) pending_by_index.erase(it->second.index);
      auto p = std::move(it->second);
      pending.erase(it);
      complete(std::move(p.done), p.bytes, std::move(*results[i]));
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
    if (entries.back().term > applied_term) {
      applied_term = entries.back().term;
      settle_forwarded(applied_term, false);
    }
    for (auto& [seq, fn] : conf_done)
      fn();
    if (on_applied) on_applied(store.current_revision());
    if (!raw) {
      keep_in_ring(entries);
    } else if (applied > log.first_index() + 2 * opt.log_retain_entries) {
      // Compaction only below the last checkpoint's state: a crash brings the state back to
      // it and the entries above it are re-applied (storage::Engine::durable_applied).
      const storage::DurablePoint durable = engine.durable_applied();
      if (durable.applied_index > log.first_index() + 2 * opt.log_retain_entries &&
          !durable.conf.voters.empty()) {
        const uint64_t to = durable.applied_index - opt.log_retain_entries;
        log.create_snapshot(durable.applied_index, durable.conf, std::string(), to);
      } else {
        engine.request_checkpoint();
      }
    }
  }

  // A write forwarded to the leader of term t was appended in term t or never (on_message).
  // Entries of term t sit below the first entry of any later term, so once this member
  // applied an entry of a later term, a forwarded write of term t that it has not applied
  // never will be: it failed, retryable. After a snapshot (`covered`) the entries it covers
  // were never seen here, so such writes may have been applied: their outcome is unknown.
  void settle_forwarded(uint64_t term, bool covered) {
    for (auto it = pending.begin(); it != pending.end();) {
      Pending& p = it->second;
      const bool settled =
          p.forward_term != 0 && (covered ? p.forward_term <= term : p.forward_term < term);
      if (!settled) {
        ++it;
        continue;
      }
      auto done = std::move(p.done);
      const size_t bytes = p.bytes;
      it = pending.erase(it);
      complete(std::move(done), bytes,
               covered ? err(ErrorCode::outcome_unknown,
                             "a snapshot replaced this member's state before the forwarded write "
                             "was seen applied; it may or may not have been applied")
                       : err(ErrorCode::unavailable,
                             "leadership changed before the forwarded write reached the log; not "
                             "applied, retry"));
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
    if (cc.type == raft::ConfChangeType::remove_node && !result.contains(cc.node)) {
      removed_ids.insert(cc.node);  // recorded with the member list by this batch's apply
    }
    if (cc.type == raft::ConfChangeType::remove_node) {
      auto it = members.find(cc.node);
      std::string name = it != members.end() ? it->second.name : std::to_string(cc.node);
      spdlog::info("member {} ({:x}) removed at index {}", name, cc.node, e.index);
      if (cc.node == opt.id) {
        removed = true;
        fail_all(removed_error());
      } else if (transport && raw) {
        // Tell it (it no longer receives the log), then forget its address a little later so
        // the notice can still go out.
        transport->send_app(cc.node, wire::encode_removed_notice(cc.node));
        auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::seconds(2));
        const NodeId gone = cc.node;
        timer->async_wait([this, timer, gone](const asio::error_code& ec) {
          if (!ec && transport && !conf().contains(gone)) transport->remove_peer(gone);
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

  // `in_flight`, when given, is what writes already handed to Raft get (they may still be
  // applied); everything else gets `e`.
  void fail_all(const Error& e, const std::optional<Error>& in_flight = std::nullopt) {
    for (auto& [seq, p] : pending)
      complete(std::move(p.done), p.bytes, in_flight ? *in_flight : e);
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

  // ---- Relay (relay.hpp) ---------------------------------------------------------------
  // Every agent feeds learner children through `relay`. A learner agent (no RawNode) also:
  // attaches under a voter, or under a learner that a full parent names (breadth first);
  // applies the committed entries its parent sends, in order, and keeps the last
  // relay_ring_bytes of them for its own children; hands its writes and read-index requests
  // to a voter (the leader when known), which proposes the entry with the learner's origin
  // or answers with its applied index after a ReadIndex round. A write completes when the
  // learner applies it itself, so a program reads its own writes from its own agent.

  RelayOptions relay_options() const {
    RelayOptions ro;
    ro.fanout = opt.relay_fanout;
    ro.leader_fanout = opt.relay_leader_fanout;
    ro.heartbeat_ms = opt.relay_heartbeat_ms;
    ro.timeout_ms = opt.relay_timeout_ms;
    ro.batch_bytes = opt.relay_batch_bytes;
    ro.window_bytes = opt.relay_window_bytes;
    ro.snapshot_chunk_bytes = opt.snapshot_chunk_bytes;
    ro.snapshot_window_chunks = opt.snapshot_window_chunks;
    return ro;
  }

  // RelayFeed
  uint64_t relay_last() override { return applied; }
  bool relay_entries(uint64_t from, uint64_t to, size_t max_bytes,
                     std::vector<raft::Entry>* out) override {
    if (raw) {
      if (from < log.first_index()) return false;
      log.entries(from, to + 1, max_bytes, out);
      return true;
    }
    if (ring.empty() || from < ring.front().index) return false;
    size_t bytes = 0;
    for (size_t i = from - ring.front().index; i < ring.size() && ring[i].index <= to; ++i) {
      if (!out->empty() && bytes + ring[i].data.size() > max_bytes) break;
      bytes += ring[i].data.size();
      out->push_back(ring[i]);
    }
    return true;
  }
  uint64_t relay_term(uint64_t index) override {
    if (index == applied) return applied_term;
    if (raw) return log.term(index).value_or(0);
    if (!ring.empty() && index >= ring.front().index && index <= ring.back().index)
      return ring[index - ring.front().index].term;
    return 0;
  }
  Result<std::unique_ptr<storage::SnapshotSource>> relay_snapshot() override {
    return store.snapshot_source();
  }
  wire::RelayEntries relay_header() override {
    wire::RelayEntries h;
    h.path.push_back(opt.id);
    if (raw) {
      h.leader = raw->leader();
      h.term = raw->term();
      h.commit = raw->commit_index();
      h.cluster_ms = store.applied_cluster_ms();
      h.upstream_ok = raw->leader() != raft::kNoNode && !removed && !failed;
      return h;
    }
    const wire::RelayEntries& u = child->header();
    h.leader = u.leader;
    h.term = u.term;
    h.commit = std::max(u.commit, applied);
    h.cluster_ms = std::max(u.cluster_ms, store.applied_cluster_ms());
    h.upstream_ok = child->upstream_ok() && !failed;
    h.path.insert(h.path.end(), child->path().begin(), child->path().end());
    return h;
  }
  bool relay_send(NodeId to, std::string payload) override {
    return transport->send_app(to, std::move(payload));
  }
  void relay_peer(NodeId id, const std::string& peer_address, bool known) override {
    if (members.count(id)) return;  // a Raft member's address comes from the configuration
    if (known) {
      transport->set_peer(id, peer_address);
    } else if (!foreign_peers.count(id) &&
               !(child && (id == child->parent() || id == child->trying()))) {
      transport->remove_peer(id);
    }
  }

  // A learner that talks to this voter without being fed by it.
  void note_foreign(NodeId from, const std::string& peer_address) {
    if (members.count(from) || peer_address.empty()) return;
    if (!foreign_peers.count(from) && !relay->is_child(from))
      transport->set_peer(from, peer_address);
    foreign_peers[from] = Clock::now();
  }
  void expire_foreign_peers(Clock::time_point now) {
    const auto quiet = std::chrono::milliseconds(10 * opt.relay_timeout_ms);
    for (auto it = foreign_peers.begin(); it != foreign_peers.end();) {
      if (now - it->second < quiet) {
        ++it;
        continue;
      }
      if (!relay->is_child(it->first)) transport->remove_peer(it->first);
      it = foreign_peers.erase(it);
    }
  }

  void on_relay_app(NodeId from, wire::AppKind kind, const std::string& payload) {
    const auto now = Clock::now();
    auto malformed = [&](const char* what) {
      spdlog::warn("malformed {} from {:x} ({} bytes); ignored", what, from, payload.size());
    };
    switch (kind) {
      case wire::AppKind::relay_subscribe: {
        wire::RelaySubscribe m;
        if (!wire::decode_relay_subscribe(payload, &m)) return malformed("relay subscribe");
        if (from == opt.id) return;
        relay->on_subscribe(from, m, now);
        return;
      }
      case wire::AppKind::relay_ack: {
        wire::RelayAck m;
        if (!wire::decode_relay_ack(payload, &m)) return malformed("relay acknowledgement");
        relay->on_ack(from, m, now);
        return;
      }
      case wire::AppKind::relay_propose: {
        wire::RelayPropose m;
        if (!wire::decode_relay_propose(payload, &m)) return malformed("relayed write");
        return on_relay_propose(from, std::move(m));
      }
      case wire::AppKind::relay_read: {
        wire::RelayRead m;
        if (!wire::decode_relay_read(payload, &m)) return malformed("relayed read");
        return on_relay_read(from, m);
      }
      default:
        break;
    }
    if (raw) return;  // the rest is for learner agents
    switch (kind) {
      case wire::AppKind::relay_accept: {
        std::vector<NodeId> path;
        if (!wire::decode_relay_accept(payload, &path)) return malformed("relay accept");
        return child->on_accept(from, std::move(path), now);
      }
      case wire::AppKind::relay_redirect: {
        wire::RelayRedirect m;
        if (!wire::decode_relay_redirect(payload, &m)) return malformed("relay redirect");
        return child->on_redirect(from, m, now);
      }
      case wire::AppKind::relay_entries: {
        wire::RelayEntries m;
        if (!wire::decode_relay_entries(payload, &m)) return malformed("relayed entries");
        return on_relay_entries(from, std::move(m), now);
      }
      case wire::AppKind::relay_propose_ack: {
        wire::RelayProposeAck m;
        if (!wire::decode_relay_propose_ack(payload, &m)) return malformed("relayed write reply");
        return on_relay_propose_ack(m);
      }
      case wire::AppKind::relay_read_ack: {
        wire::RelayReadAck m;
        if (!wire::decode_relay_read_ack(payload, &m)) return malformed("relayed read reply");
        return on_relay_read_ack(m);
      }
      default:
        return;
    }
  }

  // ---- voter side: a learner's write or read ----
  void on_relay_propose(NodeId from, wire::RelayPropose m) {
    note_foreign(from, m.peer_address);
    wire::RelayProposeAck ack;
    ack.seq = m.seq;
    auto refuse = [&](ErrorCode code, std::string message) {
      ack.code = code;
      ack.message = std::move(message);
      transport->send_app(from, wire::encode_relay_propose_ack(ack));
    };
    wire::Origin origin;
    std::string_view cmd;
    if (!wire::decode_entry(m.data, &origin, &cmd) || origin.member != from || cmd.empty() ||
        !storage::decode_command(std::string(cmd))) {
      return refuse(ErrorCode::invalid_argument, "the relayed write is not a keel command");
    }
    if (!raw) return refuse(ErrorCode::unavailable, "this agent is a learner, not a voter");
    if (removed) return refuse(ErrorCode::removed, removed_error().message);
    if (failed) return refuse(failed->code, failed->message);
    if (raw->role() == raft::Role::leader) wire::stamp_entry(&m.data, cluster_now());
    auto r = raw->propose(m.data);
    switch (r.status) {
      case raft::ProposeStatus::ok:
        ack.term = r.term;
        break;
      case raft::ProposeStatus::forwarded:
        ack.term = raw->term();  // send() stamps the prop message with this term
        break;
      case raft::ProposeStatus::dropped:
        if (raw->role() == raft::Role::leader && raw->transferee() == raft::kNoNode) {
          return refuse(ErrorCode::overloaded,
                        "the leader holds " + std::to_string(raw->uncommitted_bytes()) +
                            " uncommitted bytes (raft.max_uncommitted_bytes)");
        }
        return refuse(ErrorCode::unavailable, "leadership is moving");
      default:
        return refuse(ErrorCode::unavailable, "no Raft leader known");
    }
    transport->send_app(from, wire::encode_relay_propose_ack(ack));
    schedule_pump();
  }

  void on_relay_read(NodeId from, const wire::RelayRead& m) {
    note_foreign(from, m.peer_address);
    if (!raw) {
      transport->send_app(
          from, wire::encode_relay_read_ack({m.seq, ErrorCode::unavailable, 0, "not a voter"}));
      return;
    }
    add_read([this, from, seq = m.seq](Status st) {
      wire::RelayReadAck ack{seq, st.ok() ? ErrorCode::ok : st.error().code, applied,
                             st.ok() ? std::string() : st.error().message};
      if (transport) transport->send_app(from, wire::encode_relay_read_ack(ack));
    });
    schedule_pump();
  }

  // ---- learner side ----
  // Where a learner's writes and reads go: the leader when known, else the voter at the top
  // of its path, else any voter.
  NodeId request_target() const {
    if (child->parent() == 0) return 0;  // detached: nothing is known current; wait (bounded)
    auto usable = [&](NodeId id) {
      auto it = members.find(id);
      return id != 0 && it != members.end() && !it->second.peer_address.empty();
    };
    if (usable(child->header().leader)) return child->header().leader;
    if (!child->path().empty() && usable(child->path().back())) return child->path().back();
    for (const auto& [id, m] : members) {
      if (usable(id) && !m.learner) return id;
    }
    return 0;
  }
  std::string advertise() const {
    return opt.advertise_peer.empty() ? opt.listen_peer : opt.advertise_peer;
  }

  void learner_submit(uint64_t seq, std::string data, Completion done, size_t bytes,
                      Clock::time_point now) {
    pending[seq] = Pending{
        std::move(done), 0, 0, now + std::chrono::milliseconds(opt.request_timeout_ms), bytes, 0};
    relay_unacked[seq] = Unacked{std::move(data), false};
    send_unacked(seq, now);
  }
  void send_unacked(uint64_t seq, Clock::time_point now) {
    auto u = relay_unacked.find(seq);
    auto p = pending.find(seq);
    if (u == relay_unacked.end()) return;
    if (p == pending.end()) {
      relay_unacked.erase(u);
      return;
    }
    const auto created = p->second.deadline - std::chrono::milliseconds(opt.request_timeout_ms);
    const NodeId to = request_target();
    if (to != 0 &&
        transport->send_app(to, wire::encode_relay_propose({seq, advertise(), u->second.data}))) {
      u->second.sent = true;
      return;
    }
    if (now - created > std::chrono::milliseconds(opt.leader_wait_ms)) {
      auto done = std::move(p->second.done);
      const size_t bytes = p->second.bytes;
      pending.erase(p);
      relay_unacked.erase(u);
      complete(std::move(done), bytes,
               err(ErrorCode::unavailable, "no voter reachable within " +
                                               std::to_string(opt.leader_wait_ms) +
                                               " ms (raft.leader_wait_ms); not applied"));
    }
  }
  void on_relay_propose_ack(const wire::RelayProposeAck& a) {
    auto u = relay_unacked.find(a.seq);
    auto p = pending.find(a.seq);
    if (u == relay_unacked.end() || p == pending.end()) return;
    if (a.code == ErrorCode::ok) {
      p->second.forward_term = std::max<uint64_t>(a.term, 1);
      relay_unacked.erase(u);
      return;
    }
    if (a.code == ErrorCode::unavailable) {  // not proposed: the next tick sends it again
      u->second.sent = false;
      return;
    }
    auto done = std::move(p->second.done);
    const size_t bytes = p->second.bytes;
    pending.erase(p);
    relay_unacked.erase(u);
    complete(std::move(done), bytes, err(a.code, a.message));
  }

  void learner_issue_reads() {
    const NodeId to = request_target();
    if (to == 0) return;  // wait (expire() bounds it)
    const uint64_t seq = next_read_ctx++;
    if (!transport->send_app(to, wire::encode_relay_read({seq, advertise()}))) return;
    ReadRound round{std::move(reads_unsent), Clock::now()};
    reads_unsent.clear();
    reads_inflight.emplace(std::to_string(seq), std::move(round));
  }
  void on_relay_read_ack(const wire::RelayReadAck& a) {
    auto it = reads_inflight.find(std::to_string(a.seq));
    if (it == reads_inflight.end()) return;
    auto round = std::move(it->second);
    reads_inflight.erase(it);
    for (auto& w : round.waiters) {
      if (a.code == ErrorCode::ok) {
        reads_released.emplace(a.index, std::move(w));
      } else if (a.code == ErrorCode::unavailable) {
        reads_unsent.push_back(std::move(w));  // asked again at the next tick
      } else {
        w.done(err(a.code, a.message));
      }
    }
    release_reads();
  }

  void learner_tick(Clock::time_point now) {
    child->tick(now);
    for (auto it = relay_unacked.begin(); it != relay_unacked.end();) {
      const uint64_t seq = it->first;
      const bool resend = !it->second.sent;
      ++it;
      if (resend) send_unacked(seq, now);
    }
    expire(now);
    expire_snapshots(now);
    relay->tick(now);
    pump();
  }
  void on_relay_entries(NodeId from, wire::RelayEntries m, Clock::time_point now) {
    child->on_entries(from, std::move(m), now);
    release_reads();  // also after a snapshot install that no entries followed
    relay->pump(now);
    publish_status();
  }

  // RelayUplink
  uint64_t uplink_applied() override { return applied; }
  std::vector<Member> uplink_voters() override {
    std::vector<Member> voters;
    for (const auto& m : member_list()) {
      if (m.id != opt.id && !m.learner && !m.peer_address.empty()) voters.push_back(m);
    }
    return voters;
  }
  bool uplink_send(NodeId to, std::string payload) override {
    return transport->send_app(to, std::move(payload));
  }
  void uplink_dial(NodeId id, const std::string& peer_address) override {
    if (!members.count(id)) transport->set_peer(id, peer_address);
  }
  void uplink_apply(const std::vector<raft::Entry>& entries) override {
    apply_entries(entries);
    release_reads();
  }
  bool uplink_receiving() override { return snap_in.has_value(); }
  std::optional<uint64_t> uplink_staged() override {
    if (snap_in && snap_in->info) return snap_in->info->applied_index;
    return std::nullopt;
  }
  void uplink_install(uint64_t term) override { install_relayed_snapshot(term); }
  std::vector<Learner> uplink_subtree() override { return relay->subtree(); }

  void install_relayed_snapshot(uint64_t term) {
    raft::Ready rd;
    auto snap = std::make_shared<raft::Snapshot>();
    snap->meta.index = snap_in->info->applied_index;
    snap->meta.term = term;
    snap->meta.conf = snap_in->info->conf;
    rd.snapshot = snap;
    auto st = engine.install_snapshot(*snap_in->sink, rd);
    KEEL_ASSERT(st.ok(), "snapshot install failed after its commit (restart recovers)");
    ring.clear();
    ring_bytes = 0;
    installed_snapshot(*snap);
    if (on_applied) on_applied(store.current_revision());
  }
  void keep_in_ring(const std::vector<raft::Entry>& entries) {
    for (const auto& e : entries) {
      if (!ring.empty() && e.index != ring.back().index + 1) {
        ring.clear();
        ring_bytes = 0;
      }
      ring_bytes += e.data.size() + 24;
      ring.push_back(e);
    }
    while (ring_bytes > opt.relay_ring_bytes && ring.size() > 1) {
      ring_bytes -= ring.front().data.size() + 24;
      ring.pop_front();
    }
  }

  // ---- the loop ------------------------------------------------------------------------
  void pump() {
    if (removed) {
      publish_status();
      return;
    }
    issue_reads();
    relay->pump(Clock::now());
    if (!raw) {
      publish_status();
      return;
    }
    for (int round = 0; round < 16 && (raw->has_ready() || !snap_reports.empty()); ++round) {
      report_snapshots();
      raft::drive_ready(*raw, *this);
      if (raw->leader() != soft.lead || raw->role() != soft.role) {
        const bool leader_appeared = raw->leader() != raft::kNoNode && soft.lead != raw->leader();
        soft = {raw->leader(), raw->role()};
        if (soft.role == raft::Role::leader) start_cluster_clock();
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
    if (raw->has_ready() || !snap_reports.empty()) asio::post(io, [this] { pump(); });
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
    if (!raw) return finish_stop();
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
    // A write still waiting for a leader never reached the log; one handed to Raft may be
    // committed by the others after this member stops.
    fail_all(err(ErrorCode::shutting_down, "the agent is shutting down; not applied"),
             err(ErrorCode::outcome_unknown,
                 "the agent shut down before the write was seen applied; it may still be "
                 "applied: read before retrying"));
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
                          std::function<void(std::vector<MemberStatus>)> done) {
  asio::post(impl_->io, [impl = impl_.get(), timeout_ms, done = std::move(done)]() mutable {
    impl->query_cluster(timeout_ms, std::move(done));
  });
}

NodeStatus Node::status() const {
  std::lock_guard lock(impl_->mu);
  return impl_->shared_status;
}

ReplicaPosition Node::position() const {
  std::lock_guard lock(impl_->mu);
  return impl_->shared_position;
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
