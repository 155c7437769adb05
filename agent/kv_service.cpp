// GCC 12 reports false -Wmaybe-uninitialized warnings for values held in kj's ExceptionOr
// (promise results carrying std::vector, std::shared_ptr or std::variant), inlined from the
// standard headers, so the pragma comes before every include. Only this file needs it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "agent/kv_service.hpp"

#include <capnp/keel.capnp.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <type_traits>

#include "agent/convert.hpp"
#include "agent/node_calls.hpp"
#include "agent/prim_service.hpp"

#include "cluster/storage/mvcc_store.hpp"

namespace keel::agent {

using storage::Command;
using storage::CommandResult;

// Calls whose reply is not sent yet. Shared with the calls themselves: Cap'n Proto may keep a
// call's promise alive until the event loop is destroyed, after the service.
struct KvService::Calls {
  uint64_t count = 0;
  kj::Own<kj::PromiseFulfiller<void>> on_zero;  // set by drained()
};

namespace {

Error shutting_down() {
  return make_error(ErrorCode::shutting_down, "the agent is shutting down");
}

template <typename Reader>
std::optional<Error> oversized(Reader params, size_t limit) {
  size_t bytes = params.totalSize().wordCount * 8;
  if (bytes <= limit) return std::nullopt;
  return make_error(ErrorCode::request_too_large, "request is " + std::to_string(bytes) +
                                                      " bytes; limit is " + std::to_string(limit) +
                                                      " (limits.max_request_bytes)");
}

class WatchHandleImpl final : public rpc::WatchHandle::Server {
 public:
  WatchHandleImpl(std::shared_ptr<WatchHub> hub, int64_t id) : hub_(std::move(hub)), id_(id) {}
  ~WatchHandleImpl() { hub_->remove(id_); }

 protected:
  kj::Promise<void> cancel(CancelContext) override {
    hub_->remove(id_);
    return kj::READY_NOW;
  }
  kj::Promise<void> requestProgress(RequestProgressContext) override {
    hub_->request_progress(id_);
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<WatchHub> hub_;
  int64_t id_;
};

}  // namespace

// A plain struct rather than Result: GCC 12 reports a false -Wmaybe-uninitialized for
// std::variant inside kj's ExceptionOr (see client.cpp's WatchEnd).
struct MembersReply {
  bool ok = true;
  Error error;
  std::vector<node::Member> members;
};

class KeelImpl final : public rpc::Keel::Server {
 public:
  KeelImpl(std::shared_ptr<KvService> service, Peer peer) : s_(std::move(service)), peer_(peer) {}

 protected:
  kj::Promise<void> range(RangeContext ctx) override {
    auto params = ctx.getParams();
    auto results = ctx.getResults();
    if (s_->engine_ == nullptr) return fail(results, shutting_down());
    if (auto e = oversized(params, s_->limits_.max_request_bytes)) return fail(results, *e);
    auto req = from_rpc(params.getRequest());
    if (!req) return fail(results, req.error());
    if (auto st = storage::validate(*req, s_->limits_); !st) return fail(results, st.error());
    const bool skip_count = params.getRequest().getSkipCount();
    if (req->serializable) return serve_range(*s_, ctx, *req, skip_count);
    // Linearizable (the default): wait until this member has applied a read point confirmed
    // by a quorum (ReadIndex), then read the local replica. Concurrent reads share a round.
    auto p = from_node<Status>([](node::Node& n, auto done) {
               n.read_index(std::move(done));
             }).then([s = s_, ctx, req = std::move(req).value(), skip_count](Status st) mutable {
      if (!st) return fail(ctx.getResults(), st.error());
      if (s->engine_ == nullptr) return fail(ctx.getResults(), shutting_down());
      return serve_range(*s, ctx, req, skip_count);
    });
    return track(kj::mv(p));
  }

  kj::Promise<void> put(PutContext ctx) override { return write_call<storage::PutResponse>(ctx); }
  kj::Promise<void> deleteRange(DeleteRangeContext ctx) override {
    return write_call<storage::DeleteRangeResponse>(ctx);
  }
  kj::Promise<void> txn(TxnContext ctx) override { return write_call<storage::TxnResponse>(ctx); }

  kj::Promise<void> leaseGrant(LeaseGrantContext ctx) override {
    return prim_call(ctx, &PrimService::lease_grant);
  }
  kj::Promise<void> leaseRevoke(LeaseRevokeContext ctx) override {
    return prim_call(ctx, &PrimService::lease_revoke);
  }
  kj::Promise<void> leaseTimeToLive(LeaseTimeToLiveContext ctx) override {
    return prim_call(ctx, &PrimService::lease_time_to_live);
  }
  kj::Promise<void> leaseList(LeaseListContext ctx) override {
    return prim_call(ctx, &PrimService::lease_list);
  }
  kj::Promise<void> leaseKeepAlive(LeaseKeepAliveContext ctx) override {
    return prim_call(ctx, &PrimService::lease_keep_alive);
  }
  kj::Promise<void> lock(LockContext ctx) override { return prim_call(ctx, &PrimService::lock); }
  kj::Promise<void> checkFence(CheckFenceContext ctx) override {
    return prim_call(ctx, &PrimService::check_fence);
  }
  kj::Promise<void> unlock(UnlockContext ctx) override {
    return prim_call(ctx, &PrimService::unlock);
  }
  kj::Promise<void> campaign(CampaignContext ctx) override {
    return prim_call(ctx, &PrimService::campaign);
  }
  kj::Promise<void> leader(LeaderContext ctx) override {
    return prim_call(ctx, &PrimService::leader);
  }
  kj::Promise<void> semAcquire(SemAcquireContext ctx) override {
    return prim_call(ctx, &PrimService::sem_acquire);
  }
  kj::Promise<void> semRelease(SemReleaseContext ctx) override {
    return prim_call(ctx, &PrimService::sem_release);
  }
  kj::Promise<void> semHolders(SemHoldersContext ctx) override {
    return prim_call(ctx, &PrimService::sem_holders);
  }

  kj::Promise<void> compact(CompactContext ctx) override {
    auto params = ctx.getParams();
    if (s_->node_ == nullptr) return fail(ctx.getResults(), shutting_down());
    storage::CompactRequest req{params.getRequest().getRevision()};
    bool physical = params.getRequest().getPhysical();
    auto p =
        propose(Command(req))
            .then([s = s_, ctx, physical](Result<CommandResult> r) mutable -> kj::Promise<void> {
              auto results = ctx.getResults();
              if (!r) {
                to_rpc(r.error(), results.initError());
                return kj::READY_NOW;
              }
              results.initResponse().initHeader().setRevision(
                  std::get<storage::CompactResponse>(r.value()).revision);
              if (!physical || s->engine_ == nullptr) return kj::READY_NOW;
              // Physical deletion runs on the store's compaction thread; the event loop checks
              // on it, so no thread waits and shutdown never does.
              return s->wait_compaction().then([ctx](bool done) mutable {
                if (done) return;
                Error e =
                    make_error(ErrorCode::shutting_down,
                               "the compaction is recorded but the agent shut down before "
                               "its history was physically removed; that resumes at start-up");
                to_rpc(e, ctx.getResults().initError());
              });
            });
    return track(kj::mv(p));
  }

  kj::Promise<void> watch(WatchContext ctx) override {
    auto params = ctx.getParams();
    auto results = ctx.getResults();
    if (s_->engine_ == nullptr) return fail(results, shutting_down());
    if (auto e = oversized(params, s_->limits_.max_request_bytes)) return fail(results, *e);
    auto r = params.getRequest();
    storage::RangeRequest range;
    range.key = to_string(r.getKey());
    range.range_end = to_string(r.getRangeEnd());
    if (auto st = storage::validate(range, s_->limits_); !st) return fail(results, st.error());
    WatchSpec spec;
    spec.key = std::move(range.key);
    spec.range_end = std::move(range.range_end);
    spec.start_revision = r.getStartRevision();
    spec.prev_kv = r.getPrevKv();
    spec.no_put = r.getNoPut();
    spec.no_delete = r.getNoDelete();
    spec.progress_notify = r.getProgressNotify();
    auto added = s_->hub_->add(spec, params.getWatcher());
    if (!added) return fail(results, added.error());
    results.setWatchId(added->id);
    results.setHandle(kj::heap<WatchHandleImpl>(s_->hub_, added->id));
    spdlog::debug("watch {} created for uid {} pid {} from revision {}", added->id, peer_.uid,
                  peer_.pid, added->next_revision);
    return kj::READY_NOW;
  }

  kj::Promise<void> status(StatusContext ctx) override {
    fill_status(*s_, peer_, ctx.getResults().initStatus());
    return kj::READY_NOW;
  }

  kj::Promise<void> clusterStatus(ClusterStatusContext ctx) override {
    if (s_->node_ == nullptr) {
      auto list = ctx.getResults().initStatuses(1);
      fill_status(*s_, peer_, list[0]);
      return kj::READY_NOW;
    }
    using Statuses = std::shared_ptr<std::vector<node::MemberStatus>>;
    auto p = from_node<Statuses>([](node::Node& n, auto done) {
               n.cluster_status(2000, [done = std::move(done)](auto all) mutable {
                 done(std::make_shared<std::vector<node::MemberStatus>>(std::move(all)));
               });
             }).then([s = s_, peer = peer_, ctx](Statuses shared) mutable {
      auto& all = *shared;
      auto list = ctx.getResults().initStatuses(all.size());
      for (size_t i = 0; i < all.size(); ++i) {
        auto out = list[i];
        if (i == 0) {
          fill_status(*s, peer, out);  // this member: the full local status
          continue;
        }
        auto& st = all[i].status;
        if (!st) {
          // Who did not answer: the row still names the member.
          out.setMemberId(all[i].id);
          out.setName(all[i].name);
          to_rpc(st.error(), out.initError());
          continue;
        }
        fill_raft(out, *st);
        out.initHeader().setRevision(st->revision);
        out.setAppliedIndex(st->applied_index);
      }
    });
    return track(kj::mv(p));
  }

  // The Raft members as this agent knows them, then every learner agent any member feeds
  // (each member reports its relay subtree; a member that does not answer within 2 s is left
  // out, with its learners).
  kj::Promise<void> memberList(MemberListContext ctx) override {
    if (s_->node_ == nullptr) return fail(ctx.getResults(), shutting_down());
    using Statuses = std::shared_ptr<std::vector<node::MemberStatus>>;
    auto p = from_node<Statuses>([](node::Node& n, auto done) {
               n.cluster_status(2000, [done = std::move(done)](auto all) mutable {
                 done(std::make_shared<std::vector<node::MemberStatus>>(std::move(all)));
               });
             }).then([ctx](Statuses shared) mutable {
      auto& all = *shared;
      std::vector<node::Member> members;
      std::map<uint64_t, node::Learner> learners;
      if (!all.empty() && all[0].status) members = all[0].status->members;
      for (auto& m : all) {
        if (!m.status) continue;
        for (auto& l : m.status->learners) {
          auto [it, fresh] = learners.emplace(l.id, l);
          if (!fresh && l.applied > it->second.applied) it->second = l;
        }
      }
      fill_members(ctx.getResults(), members, learners);
    });
    return track(kj::mv(p));
  }
  kj::Promise<void> memberAdd(MemberAddContext ctx) override {
    auto params = ctx.getParams();
    return member_change(ctx, node::MemberChange::add_learner, params.getName(),
                         params.getPeerAddress());
  }
  kj::Promise<void> memberPromote(MemberPromoteContext ctx) override {
    return member_change(ctx, node::MemberChange::promote, ctx.getParams().getName(), "");
  }
  kj::Promise<void> memberRemove(MemberRemoveContext ctx) override {
    return member_change(ctx, node::MemberChange::remove, ctx.getParams().getName(), "");
  }

 private:
  template <typename Builder>
  static void fill_raft(Builder s, const node::NodeStatus& st) {
    s.setMemberId(st.id);
    s.setName(st.name);
    s.setRole(st.role);
    s.setLeader(st.leader);
    for (const auto& m : st.members) {
      if (m.id == st.leader) s.setLeaderName(m.name);
    }
    s.setRaftTerm(st.term);
    s.setCommitIndex(st.commit_index);
    s.setLastIndex(st.last_index);
    s.setClusterId(st.cluster_id);
    s.setClusterTimeMs(st.cluster_ms);
    s.setDroppedPeerMsgs(st.dropped_peer_msgs);
    s.setDroppedByReason(st.dropped_by_reason);
    s.setTimeEntries(st.time_entries);
    s.setUpstream(st.upstream);
    auto path = s.initUpstreamPath(st.upstream_path.size());
    for (size_t i = 0; i < st.upstream_path.size(); ++i)
      path.set(i, st.upstream_path[i]);
    s.setLagEntries(st.lag_entries);
    s.setLagMs(st.lag_ms);
    s.setRelayChildren(st.relay_children);
  }

  template <typename Builder>
  static void fill_status(KvService& service, const Peer& peer, Builder s) {
    KvService* s_ = &service;
    const Peer& peer_ = peer;
    s.setVersion(KEEL_VERSION);
    s.setWatchers(s_->hub_->total());
    s.setConnections(s_->counts_->connections.load());
    s.setServerThread(s_->thread_.index);
    s.setServerThreads(s_->thread_.count);
    s.setPeerUid(peer_.uid);
    s.setPeerPid(peer_.pid);
    if (s_->engine_ == nullptr) return;
    if (s_->prim_) {
      auto ps = s_->prim_->stats();
      s.setLeasesRenewing(ps.leases_renewing);
      s.setRenewMessages(ps.renew_messages);
      s.setLeasesRenewed(ps.leases_renewed);
    }
    auto& store = s_->engine_->store();
    s.initHeader().setRevision(store.current_revision());
    s.setDataDir(s_->engine_->dir());
    s.setCompactRevision(store.compact_revision());
    s.setAppliedIndex(store.applied_index());
    auto stats = s_->engine_->stats();
    s.setLogSyncs(stats.log_syncs);
    s.setLogEntries(stats.log_entries);
    if (s_->node_ != nullptr) {
      auto st = s_->node_->status();
      fill_raft(s, st);
      s.initHeader().setMemberId(st.id);
      s.getHeader().setRaftTerm(st.term);
      s.getHeader().setRevision(store.current_revision());
    }
  }

  template <typename Results>
  static void fill_members(Results results, const std::vector<node::Member>& members,
                           const std::map<uint64_t, node::Learner>& learners = {}) {
    auto list = results.initMembers(members.size() + learners.size());
    for (size_t i = 0; i < members.size(); ++i) {
      list[i].setId(members[i].id);
      list[i].setName(members[i].name);
      list[i].setPeerAddress(members[i].peer_address);
      list[i].setLearner(members[i].learner);
    }
    size_t i = members.size();
    for (const auto& [id, l] : learners) {
      auto out = list[i++];
      out.setId(id);
      out.setName(l.name);
      out.setPeerAddress(l.peer_address);
      out.setLearner(true);
      out.setRelayParent(l.parent);
      out.setAppliedIndex(l.applied);
    }
  }

  template <typename Context>
  kj::Promise<void> member_change(Context ctx, node::MemberChange kind, capnp::Text::Reader name,
                                  capnp::Text::Reader peer) {
    if (s_->node_ == nullptr) return fail(ctx.getResults(), shutting_down());
    if (name.size() == 0 || name.size() > 256) {
      return fail(ctx.getResults(),
                  make_error(ErrorCode::invalid_argument, "member name must be 1-256 bytes"));
    }
    std::string n = name, a = peer;
    auto p = from_node<MembersReply>([kind, n, a](node::Node& nd, auto done) {
               nd.change_member(kind, n, a, [done = std::move(done)](auto r) mutable {
                 MembersReply reply;
                 if (r) {
                   reply.members = std::move(r).value();
                 } else {
                   reply.ok = false;
                   reply.error = std::move(r).error();
                 }
                 done(std::move(reply));
               });
             }).then([ctx](MembersReply r) mutable {
      if (!r.ok) {
        to_rpc(r.error, ctx.getResults().initError());
        return;
      }
      fill_members(ctx.getResults(), r.members);
    });
    return track(kj::mv(p));
  }

  template <typename Context>
  static kj::Promise<void> serve_range(KvService& s, Context& ctx, const storage::RangeRequest& req,
                                       bool skip_count) {
    auto results = ctx.getResults();
    auto resp = read_range(s, req, skip_count);
    if (!resp) return fail(results, resp.error());
    auto out = results.initResponse();
    to_rpc(*resp, out);
    fill_header(s, out.getHeader());
    return kj::READY_NOW;
  }

  // Who served a reply and how current its replica is (ReplicaPosition).
  static void fill_header(KvService& s, rpc::ResponseHeader::Builder h) {
    if (s.node_ == nullptr) return;
    const node::ReplicaPosition p = s.node_->position();
    h.setMemberId(p.id);
    h.setRaftTerm(p.term);
    h.setAppliedIndex(p.applied_index);
    h.setClusterTimeMs(p.cluster_ms);
    h.setPossiblyStale(p.possibly_stale);
  }

  template <typename T, typename Call>
  kj::Promise<T> from_node(Call&& call) {
    return agent::from_node<T>(*s_->node_, std::forward<Call>(call));
  }

  template <typename Results>
  static kj::Promise<void> fail(Results results, const Error& error) {
    to_rpc(error, results.initError());
    return kj::READY_NOW;
  }

  // A key-ordered page is never counted past what it scanned: counting the rest of a large
  // range would stall every connection and watch on this thread. count is exact when the
  // reply holds the whole range or with count_only; a reply cut by limit or page size counts
  // the keys it returns (README: where keel differs from etcd).
  static Result<storage::RangeResponse> read_range(KvService& s, const storage::RangeRequest& req,
                                                   bool skip_count) {
    auto& reader = *s.reader_;
    size_t page = s.limits_.max_response_bytes;
    bool key_ordered = req.sort_target == storage::SortTarget::key &&
                       req.sort_order != storage::SortOrder::descend;
    if (skip_count || req.count_only || !key_ordered) return reader.range(req, page, skip_count);
    auto resp = reader.range(req, page, /*skip_count=*/true);
    if (!resp) return resp;
    bool filtered = req.min_mod_revision || req.max_mod_revision || req.min_create_revision ||
                    req.max_create_revision;
    if (resp->more || !filtered) {
      resp->count = static_cast<int64_t>(resp->kvs.size());
      return resp;
    }
    // The whole range was scanned for this reply already; count it (filters do not apply).
    storage::RangeRequest count = req;
    count.count_only = true;
    count.revision = resp->revision;
    auto counted = reader.range(count, page);
    if (!counted) return std::move(counted).error();
    resp->count = counted->count;
    return resp;
  }

  kj::Promise<Result<CommandResult>> propose(Command command) {
    return agent::propose(*s_->node_, std::move(command));
  }

  // Counts a call until its promise settles, so shutdown can wait for the replies.
  kj::Promise<void> track(kj::Promise<void> p) {
    ++s_->calls_->count;
    return p.attach(kj::defer([calls = s_->calls_] {
      if (--calls->count == 0 && calls->on_zero.get() != nullptr && calls->on_zero->isWaiting()) {
        calls->on_zero->fulfill();
      }
    }));
  }

  // Put, DeleteRange and Txn: size check, conversion, validation, then the node.
  template <typename Response, typename Context>
  kj::Promise<void> write_call(Context ctx) {
    auto params = ctx.getParams();
    if (s_->node_ == nullptr) return fail(ctx.getResults(), shutting_down());
    if (auto e = oversized(params, s_->limits_.max_request_bytes)) {
      return fail(ctx.getResults(), *e);
    }
    auto req = from_rpc(params.getRequest());
    if (!req) return fail(ctx.getResults(), req.error());
    // A fenced put or delete travels as a one-op txn with the fence (the store checks fences
    // on txns only); its reply is that op's.
    std::optional<storage::Fence> fence;
    std::optional<Command> command;
    if constexpr (!std::is_same_v<Response, storage::TxnResponse>) {
      if (params.getRequest().hasFence()) fence = fence_of(params.getRequest().getFence());
      if (fence) {
        storage::TxnRequest txn;
        txn.success.emplace_back(std::move(req).value());
        txn.fences.push_back(*fence);
        command.emplace(std::move(txn));
      }
    }
    if (!command) command.emplace(std::move(req).value());
    if (auto st = storage::validate(*command, s_->limits_); !st) {
      return fail(ctx.getResults(), st.error());
    }
    const bool wrapped = fence.has_value();
    auto p =
        propose(std::move(*command)).then([s = s_, ctx, wrapped](Result<CommandResult> r) mutable {
          auto results = ctx.getResults();
          if (!r) {
            to_rpc(r.error(), results.initError());
            return;
          } else if constexpr (std::is_same_v<Response, storage::TxnResponse>) {
            to_rpc(std::get<Response>(r.value()), results.initResponse());
          } else if (wrapped) {
            auto& txn = std::get<storage::TxnResponse>(r.value());
            KEEL_ASSERT(txn.responses.size() == 1, "a fenced write is a one-op txn");
            to_rpc(std::get<Response>(txn.responses[0]), results.initResponse());
          } else {
            to_rpc(std::get<Response>(r.value()), results.initResponse());
          }
          fill_header(*s, results.getResponse().getHeader());
        });
    return track(kj::mv(p));
  }

  // The primitives' calls: PrimService serves them.
  template <typename Context>
  kj::Promise<void> prim_call(Context ctx, kj::Promise<void> (PrimService::*method)(Context)) {
    auto prim = s_->prim_;
    if (s_->node_ == nullptr || prim == nullptr) return fail(ctx.getResults(), shutting_down());
    return track(((*prim).*method)(ctx));
  }

  std::shared_ptr<KvService> s_;
  Peer peer_;
};

KvService::KvService(const Config& config, storage::Engine& engine, node::Node& node,
                     std::shared_ptr<WatchHub> hub, kj::Timer& timer,
                     std::shared_ptr<AgentCounts> counts)
    : config_(config),
      limits_(config.limits),
      engine_(&engine),
      node_(&node),
      reader_(engine.store().reader()),
      hub_(std::move(hub)),
      counts_(std::move(counts)),
      calls_(std::make_shared<Calls>()),
      timer_(timer) {}

KvService::~KvService() {
  close();
}

capnp::Capability::Client KvService::connect(const Peer& peer) {
  return kj::heap<KeelImpl>(shared_from_this(), peer);
}

kj::Promise<void> KvService::drained() {
  if (calls_->count == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  calls_->on_zero = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

kj::Promise<bool> KvService::wait_compaction() {
  if (engine_ == nullptr || compaction_waits_stopped_) return false;
  if (engine_->store().compaction_idle()) return true;
  auto paf = kj::newPromiseAndFulfiller<bool>();
  compaction_waiters_.push_back(kj::mv(paf.fulfiller));
  if (compaction_waiters_.size() == 1)
    compaction_poll_ = poll_compaction().eagerlyEvaluate(nullptr);
  return kj::mv(paf.promise);
}

kj::Promise<void> KvService::poll_compaction() {
  return timer_.afterDelay(10 * kj::MILLISECONDS).then([this]() -> kj::Promise<void> {
    if (engine_ == nullptr || !engine_->store().compaction_idle()) return poll_compaction();
    auto waiters = std::move(compaction_waiters_);
    compaction_waiters_.clear();
    for (auto& w : waiters)
      w->fulfill(true);
    return kj::READY_NOW;
  });
}

void KvService::stop_waiting_for_compaction() {
  compaction_waits_stopped_ = true;
  auto waiters = std::move(compaction_waiters_);
  compaction_waiters_.clear();
  for (auto& w : waiters)
    w->fulfill(false);
  compaction_poll_ = nullptr;
}

void KvService::close() {
  stop_waiting_for_compaction();
  calls_->on_zero = nullptr;
  reader_.reset();
  prim_ = nullptr;
  engine_ = nullptr;
  node_ = nullptr;
}

}  // namespace keel::agent
