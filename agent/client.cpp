#include "agent/client.hpp"

#include <capnp/keel.capnp.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "agent/buffered_stream.hpp"
#include "agent/convert.hpp"

namespace keel::client {

using agent::as_data;
using agent::from_rpc;
using agent::to_rpc;

namespace {
// KJ allows one event loop per thread; every Client on a thread shares it, and the last one
// to go closes it.
std::shared_ptr<kj::AsyncIoContext> thread_io() {
  thread_local std::weak_ptr<kj::AsyncIoContext> current;
  if (auto io = current.lock()) return io;
  auto io = std::make_shared<kj::AsyncIoContext>(kj::setupAsyncIo());
  current = io;
  return io;
}
}  // namespace

struct Client::Impl {
  std::shared_ptr<kj::AsyncIoContext> io_owner = thread_io();  // destroyed last
  kj::AsyncIoContext& io = *io_owner;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  rpc::Keel::Client keel = nullptr;
  ReplyHeader header;  // of the last KV reply
};

namespace {

ReplyHeader header_from(rpc::ResponseHeader::Reader h) {
  return ReplyHeader{h.getRevision(),     h.getMemberId(),      h.getRaftTerm(),
                     h.getAppliedIndex(), h.getClusterTimeMs(), h.getPossiblyStale()};
}

Error lost(const kj::Exception& e) {
  return make_error(ErrorCode::internal,
                    std::string("connection to keeld failed: ") + e.getDescription().cStr());
}

// Runs `fn` (which waits on the event loop); turns a KJ exception (disconnect, bug on the
// other side) into an internal error.
template <typename T, typename Fn>
Result<T> call(Fn&& fn) {
  std::optional<Result<T>> out;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { out.emplace(fn()); })) {
    return lost(*e);
  }
  return std::move(*out);
}

// How a watch ended: ok, or the agent's error. A plain struct rather than Status because GCC 12
// reports a false -Wmaybe-uninitialized for std::variant inside kj's ExceptionOr.
struct WatchEnd {
  bool ok = true;
  Error error;
};

class WatcherImpl final : public rpc::Watcher::Server {
 public:
  WatcherImpl(const EventsFn& on_events, const ProgressFn& on_progress,
              kj::Own<kj::PromiseFulfiller<WatchEnd>> done)
      : on_events_(on_events), on_progress_(on_progress), done_(kj::mv(done)) {}

 protected:
  kj::Promise<void> events(EventsContext ctx) override {
    if (!done_->isWaiting()) return kj::READY_NOW;
    auto p = ctx.getParams();
    std::vector<storage::Event> events;
    events.reserve(p.getEvents().size());
    for (auto e : p.getEvents())
      events.push_back(from_rpc(e));
    if (!on_events_(p.getHeader().getRevision(), events)) done_->fulfill(WatchEnd{});
    return kj::READY_NOW;
  }
  kj::Promise<void> progress(ProgressContext ctx) override {
    if (!done_->isWaiting()) return kj::READY_NOW;
    if (on_progress_ && !on_progress_(ctx.getParams().getHeader().getRevision())) {
      done_->fulfill(WatchEnd{});
    }
    return kj::READY_NOW;
  }
  kj::Promise<void> canceled(CanceledContext ctx) override {
    if (done_->isWaiting()) done_->fulfill(WatchEnd{false, from_rpc(ctx.getParams().getError())});
    return kj::READY_NOW;
  }

 private:
  const EventsFn& on_events_;
  const ProgressFn& on_progress_;
  kj::Own<kj::PromiseFulfiller<WatchEnd>> done_;
};

}  // namespace

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path) {
  auto impl = std::make_unique<Impl>();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 auto addr = impl->io.provider->getNetwork()
                                 .parseAddress(kj::str("unix:", socket_path.c_str()))
                                 .wait(impl->io.waitScope);
                 impl->stream =
                     kj::heap<agent::BufferedStream>(addr->connect().wait(impl->io.waitScope));
               })) {
    return make_error(ErrorCode::internal, "cannot connect to keeld at " + socket_path + ": " +
                                               e->getDescription().cStr());
  }
  impl->rpc = kj::heap<capnp::TwoPartyClient>(*impl->stream);
  impl->keel = impl->rpc->bootstrap().castAs<rpc::Keel>();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Result<storage::RangeResponse> Client::range(const storage::RangeRequest& request,
                                             bool skip_count) {
  return call<storage::RangeResponse>([&]() -> Result<storage::RangeResponse> {
    auto req = impl_->keel.rangeRequest();
    auto r = req.initRequest();
    to_rpc(request, r);
    r.setSkipCount(skip_count);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (resp.hasError()) return from_rpc(resp.getError());
    impl_->header = header_from(resp.getResponse().getHeader());
    return from_rpc(resp.getResponse());
  });
}

Result<storage::RangeResponse> Client::range_all(
    const storage::RangeRequest& request,
    const std::function<void(const storage::KeyValue&)>& visit) {
  storage::RangeRequest page = request;
  auto first = range(page);
  if (!first) return first;
  storage::RangeResponse summary = first.value();
  summary.kvs.clear();
  summary.continue_key.clear();
  int64_t returned = 0;
  storage::RangeResponse current = std::move(first).value();
  for (;;) {
    for (const auto& kv : current.kvs)
      visit(kv);
    returned += static_cast<int64_t>(current.kvs.size());
    if (current.continue_key.empty()) break;
    page.key = current.continue_key;
    page.revision = summary.revision;  // one consistent snapshot across pages
    if (request.limit > 0) page.limit = request.limit - returned;
    auto next = range(page, /*skip_count=*/true);
    if (!next) return next;
    current = std::move(next).value();
  }
  summary.more = current.more;
  // The agent counts only the keys a cut page returns; every key of an unfiltered range
  // without a limit has now been seen.
  bool filtered = request.min_mod_revision || request.max_mod_revision ||
                  request.min_create_revision || request.max_create_revision;
  if (!request.count_only && request.limit == 0 && !filtered) summary.count = returned;
  return summary;
}

namespace {
// One unary KV call: fill the request, send, map the reply or its error.
template <typename Response, typename Request, typename Send>
Result<Response> unary(Client::Impl& impl, const Request& request, Send&& make) {
  return call<Response>([&]() -> Result<Response> {
    auto req = make(impl.keel);
    to_rpc(request, req.initRequest());
    auto resp = req.send().wait(impl.io.waitScope);
    if (resp.hasError()) return from_rpc(resp.getError());
    impl.header = header_from(resp.getResponse().getHeader());
    return from_rpc(resp.getResponse());
  });
}
}  // namespace

const ReplyHeader& Client::last_header() const {
  return impl_->header;
}

Result<storage::PutResponse> Client::put(const storage::PutRequest& request) {
  return unary<storage::PutResponse>(*impl_, request,
                                     [](rpc::Keel::Client& k) { return k.putRequest(); });
}

Result<storage::DeleteRangeResponse> Client::delete_range(
    const storage::DeleteRangeRequest& request) {
  return unary<storage::DeleteRangeResponse>(
      *impl_, request, [](rpc::Keel::Client& k) { return k.deleteRangeRequest(); });
}

Result<storage::TxnResponse> Client::txn(const storage::TxnRequest& request) {
  return unary<storage::TxnResponse>(*impl_, request,
                                     [](rpc::Keel::Client& k) { return k.txnRequest(); });
}

Result<int64_t> Client::compact(int64_t revision, bool physical) {
  return call<int64_t>([&]() -> Result<int64_t> {
    auto req = impl_->keel.compactRequest();
    req.initRequest().setRevision(revision);
    req.getRequest().setPhysical(physical);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (resp.hasError()) return from_rpc(resp.getError());
    return resp.getResponse().getHeader().getRevision();
  });
}

namespace {
StatusInfo status_from_rpc(rpc::Status::Reader s) {
  StatusInfo out;
  out.revision = s.getHeader().getRevision();
  out.compact_revision = s.getCompactRevision();
  out.applied_index = s.getAppliedIndex();
  out.log_syncs = s.getLogSyncs();
  out.log_entries = s.getLogEntries();
  out.watchers = s.getWatchers();
  out.connections = s.getConnections();
  out.peer_uid = s.getPeerUid();
  out.peer_pid = s.getPeerPid();
  out.version = s.getVersion();
  out.data_dir = s.getDataDir();
  out.member_id = s.getMemberId();
  out.name = s.getName();
  out.role = s.getRole();
  out.leader = s.getLeader();
  out.leader_name = s.getLeaderName();
  out.raft_term = s.getRaftTerm();
  out.commit_index = s.getCommitIndex();
  out.last_index = s.getLastIndex();
  out.cluster_id = s.getClusterId();
  out.cluster_time_ms = s.getClusterTimeMs();
  out.dropped_peer_msgs = s.getDroppedPeerMsgs();
  out.dropped_by_reason = s.getDroppedByReason();
  out.leases_renewing = s.getLeasesRenewing();
  out.renew_messages = s.getRenewMessages();
  out.leases_renewed = s.getLeasesRenewed();
  out.time_entries = s.getTimeEntries();
  out.upstream = s.getUpstream();
  for (auto id : s.getUpstreamPath())
    out.upstream_path.push_back(id);
  out.lag_entries = s.getLagEntries();
  out.lag_ms = s.getLagMs();
  out.relay_children = s.getRelayChildren();
  out.server_thread = s.getServerThread();
  out.server_threads = s.getServerThreads();
  if (s.hasError() && s.getError().getCode() != rpc::ErrorCode::OK)
    out.error = from_rpc(s.getError());
  return out;
}

template <typename Resp>
Result<std::vector<MemberInfo>> members_from(Resp& resp) {
  if (resp.hasError()) return from_rpc(resp.getError());
  std::vector<MemberInfo> out;
  for (auto m : resp.getMembers()) {
    MemberInfo x;
    x.id = m.getId();
    x.name = m.getName();
    x.peer_address = m.getPeerAddress();
    x.learner = m.getLearner();
    x.relay_parent = m.getRelayParent();
    x.applied_index = m.getAppliedIndex();
    out.push_back(std::move(x));
  }
  return out;
}
}  // namespace

Result<StatusInfo> Client::status() {
  return call<StatusInfo>([&]() -> Result<StatusInfo> {
    auto resp = impl_->keel.statusRequest().send().wait(impl_->io.waitScope);
    return status_from_rpc(resp.getStatus());
  });
}

Result<std::vector<StatusInfo>> Client::cluster_status() {
  return call<std::vector<StatusInfo>>([&]() -> Result<std::vector<StatusInfo>> {
    auto resp = impl_->keel.clusterStatusRequest().send().wait(impl_->io.waitScope);
    std::vector<StatusInfo> out;
    for (auto s : resp.getStatuses())
      out.push_back(status_from_rpc(s));
    return out;
  });
}

Result<std::vector<MemberInfo>> Client::member_list() {
  return call<std::vector<MemberInfo>>([&]() -> Result<std::vector<MemberInfo>> {
    auto resp = impl_->keel.memberListRequest().send().wait(impl_->io.waitScope);
    return members_from(resp);
  });
}

Result<std::vector<MemberInfo>> Client::member_add(const std::string& name,
                                                   const std::string& peer_address) {
  return call<std::vector<MemberInfo>>([&]() -> Result<std::vector<MemberInfo>> {
    auto req = impl_->keel.memberAddRequest();
    req.setName(name);
    req.setPeerAddress(peer_address);
    auto resp = req.send().wait(impl_->io.waitScope);
    return members_from(resp);
  });
}

Result<std::vector<MemberInfo>> Client::member_promote(const std::string& name) {
  return call<std::vector<MemberInfo>>([&]() -> Result<std::vector<MemberInfo>> {
    auto req = impl_->keel.memberPromoteRequest();
    req.setName(name);
    auto resp = req.send().wait(impl_->io.waitScope);
    return members_from(resp);
  });
}

Result<std::vector<MemberInfo>> Client::member_remove(const std::string& name) {
  return call<std::vector<MemberInfo>>([&]() -> Result<std::vector<MemberInfo>> {
    auto req = impl_->keel.memberRemoveRequest();
    req.setName(name);
    auto resp = req.send().wait(impl_->io.waitScope);
    return members_from(resp);
  });
}

Status Client::watch(const WatchOptions& o, const EventsFn& on_events,
                     const ProgressFn& on_progress) {
  return call<Unit>([&]() -> Status {
    auto paf = kj::newPromiseAndFulfiller<WatchEnd>();
    auto req = impl_->keel.watchRequest();
    auto r = req.initRequest();
    r.setKey(as_data(o.key));
    r.setRangeEnd(as_data(o.range_end));
    r.setStartRevision(o.start_revision);
    r.setPrevKv(o.prev_kv);
    r.setNoPut(o.no_put);
    r.setNoDelete(o.no_delete);
    r.setProgressNotify(o.progress_notify);
    req.setWatcher(kj::heap<WatcherImpl>(on_events, on_progress, kj::mv(paf.fulfiller)));
    auto resp = req.send().wait(impl_->io.waitScope);
    if (resp.hasError()) return from_rpc(resp.getError());
    auto handle = resp.getHandle();  // kept alive until the watch ends; dropping it cancels
    // A broken connection ends the watch too.
    auto ended = paf.promise.exclusiveJoin(impl_->rpc->onDisconnect().then([] {
      return WatchEnd{false, make_error(ErrorCode::internal, "connection to keeld closed")};
    }));
    WatchEnd end = ended.wait(impl_->io.waitScope);
    if (!end.ok) return end.error;
    // Cancel at once rather than when the handle is dropped, so no more events are sent.
    handle.cancelRequest().send().ignoreResult().wait(impl_->io.waitScope);
    return ok_status();
  });
}

}  // namespace keel::client

// ---- leases and locks ----

namespace keel::client {

// Each keeps one `ended` / `lost` call outstanding across waits (forked), so an end that
// happens between two waits is never missed.
struct Lease::Impl {
  Client::Impl& client;
  rpc::Lease::Client cap;
  kj::Maybe<kj::ForkedPromise<void>> ended;
};

struct LockHandle::Impl {
  Client::Impl& client;
  rpc::LockHandle::Client cap;
  kj::Maybe<kj::ForkedPromise<void>> lost;
};

struct SemHandle::Impl {
  Client::Impl& client;
  rpc::SemHandle::Client cap;
  kj::Maybe<kj::ForkedPromise<void>> lost;
};

struct Leadership::Impl {
  Client::Impl& client;
  rpc::Leadership::Client cap;
  kj::Maybe<kj::ForkedPromise<void>> lost;
};

namespace {

LeaderKey leader_from(rpc::LeaderKey::Reader r) {
  return LeaderKey{agent::to_string(r.getName()), agent::to_string(r.getKey()), r.getRevision(),
                   r.getLease()};
}

LeaseInfo lease_info_from(rpc::LeaseInfo::Reader r) {
  LeaseInfo out;
  out.id = r.getId();
  out.ttl_ms = r.getTtlMs();
  out.remaining_ms = r.getRemainingMs();
  for (auto k : r.getKeys())
    out.keys.push_back(agent::to_string(k));
  for (auto l : r.getLocks())
    out.locks.push_back(agent::to_string(l));
  return out;
}

template <typename Resp>
Status status_of(Resp& resp) {
  if (resp.hasError() && resp.getError().getCode() != rpc::ErrorCode::OK)
    return from_rpc(resp.getError());
  return ok_status();
}

// Waits for `p` (true when it resolves) or timeout_ms, whichever is first.
Result<bool> wait_for(Client::Impl& c, kj::Promise<void> p, int64_t timeout_ms) {
  return call<bool>([&]() -> Result<bool> {
    auto done =
        p.then([] { return true; })
            .exclusiveJoin(
                c.io.provider->getTimer().afterDelay(timeout_ms * kj::MILLISECONDS).then([] {
                  return false;
                }));
    return done.wait(c.io.waitScope);
  });
}

}  // namespace

Lease::Lease(std::unique_ptr<Impl> impl, int64_t id, int64_t ttl_ms)
    : impl_(std::move(impl)), id_(id), ttl_ms_(ttl_ms) {}
Lease::~Lease() = default;

Result<LeaseInfo> Lease::info(bool keys) {
  return call<LeaseInfo>([&]() -> Result<LeaseInfo> {
    auto req = impl_->cap.infoRequest();
    req.setKeys(keys);
    auto resp = req.send().wait(impl_->client.io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return lease_info_from(resp.getInfo());
  });
}

Status Lease::revoke() {
  return call<Unit>([&]() -> Status {
    auto resp = impl_->cap.revokeRequest().send().wait(impl_->client.io.waitScope);
    return status_of(resp);
  });
}

Result<bool> Lease::wait_ended(int64_t timeout_ms) {
  if (impl_->ended == nullptr)
    impl_->ended = impl_->cap.endedRequest().send().ignoreResult().fork();
  KJ_IF_MAYBE (f, impl_->ended) {
    return wait_for(impl_->client, f->addBranch(), timeout_ms);
  }
  return false;
}

LockHandle::LockHandle(std::unique_ptr<Impl> impl, std::string name, int64_t token, int64_t lease)
    : impl_(std::move(impl)), name_(std::move(name)), token_(token), lease_(lease) {}
LockHandle::~LockHandle() = default;

Status LockHandle::unlock() {
  return call<Unit>([&]() -> Status {
    auto resp = impl_->cap.unlockRequest().send().wait(impl_->client.io.waitScope);
    return status_of(resp);
  });
}

Result<bool> LockHandle::wait_lost(int64_t timeout_ms) {
  if (impl_->lost == nullptr) impl_->lost = impl_->cap.lostRequest().send().ignoreResult().fork();
  KJ_IF_MAYBE (f, impl_->lost) {
    return wait_for(impl_->client, f->addBranch(), timeout_ms);
  }
  return false;
}

SemHandle::SemHandle(std::unique_ptr<Impl> impl, std::string name, std::string holder_id,
                     int64_t lease)
    : impl_(std::move(impl)),
      name_(std::move(name)),
      holder_id_(std::move(holder_id)),
      lease_(lease) {}
SemHandle::~SemHandle() = default;

Status SemHandle::release() {
  return call<Unit>([&]() -> Status {
    auto resp = impl_->cap.releaseRequest().send().wait(impl_->client.io.waitScope);
    return status_of(resp);
  });
}

Result<bool> SemHandle::wait_lost(int64_t timeout_ms) {
  if (impl_->lost == nullptr) impl_->lost = impl_->cap.lostRequest().send().ignoreResult().fork();
  KJ_IF_MAYBE (f, impl_->lost) {
    return wait_for(impl_->client, f->addBranch(), timeout_ms);
  }
  return false;
}

Leadership::Leadership(std::unique_ptr<Impl> impl, LeaderKey key)
    : impl_(std::move(impl)), key_(std::move(key)) {}
Leadership::~Leadership() = default;

Result<int64_t> Leadership::proclaim(const std::string& value) {
  return call<int64_t>([&]() -> Result<int64_t> {
    auto req = impl_->cap.proclaimRequest();
    req.setValue(as_data(value));
    auto resp = req.send().wait(impl_->client.io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return resp.getRevision();
  });
}

Status Leadership::resign() {
  return call<Unit>([&]() -> Status {
    auto resp = impl_->cap.resignRequest().send().wait(impl_->client.io.waitScope);
    return status_of(resp);
  });
}

Result<bool> Leadership::wait_lost(int64_t timeout_ms) {
  if (impl_->lost == nullptr) impl_->lost = impl_->cap.lostRequest().send().ignoreResult().fork();
  KJ_IF_MAYBE (f, impl_->lost) {
    return wait_for(impl_->client, f->addBranch(), timeout_ms);
  }
  return false;
}

Result<std::unique_ptr<Leadership>> Client::campaign(const std::string& name,
                                                     const std::string& value,
                                                     const CampaignOptions& o) {
  return call<std::unique_ptr<Leadership>>([&]() -> Result<std::unique_ptr<Leadership>> {
    auto req = impl_->keel.campaignRequest();
    req.setName(as_data(name));
    req.setValue(as_data(value));
    req.setLeaseId(o.lease);
    req.setTtlMs(o.ttl_ms);
    req.setTimeoutMs(o.timeout_ms);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return std::make_unique<Leadership>(
        std::make_unique<Leadership::Impl>(Leadership::Impl{*impl_, resp.getLeadership(), nullptr}),
        leader_from(resp.getLeader()));
  });
}

Result<std::pair<LeaderKey, std::string>> Client::leader(const std::string& name) {
  return call<std::pair<LeaderKey, std::string>>(
      [&]() -> Result<std::pair<LeaderKey, std::string>> {
        auto req = impl_->keel.leaderRequest();
        req.setName(as_data(name));
        auto resp = req.send().wait(impl_->io.waitScope);
        if (auto st = status_of(resp); !st) return std::move(st).error();
        return std::make_pair(leader_from(resp.getLeader()), agent::to_string(resp.getValue()));
      });
}

Status Client::observe(
    const std::string& name,
    const std::function<bool(const std::string& key, const std::string& value)>& on_leader) {
  // With no leader now, watch from the revision read before asking, so a leader elected in
  // between is not missed; with one, from after its value's revision.
  auto before = status();
  if (!before) return std::move(before).error();
  int64_t from = before->revision + 1;
  auto now =
      call<std::pair<std::string, int64_t>>([&]() -> Result<std::pair<std::string, int64_t>> {
        auto req = impl_->keel.leaderRequest();
        req.setName(as_data(name));
        auto resp = req.send().wait(impl_->io.waitScope);
        if (auto st = status_of(resp); !st) return std::move(st).error();
        if (!on_leader(agent::to_string(resp.getLeader().getKey()),
                       agent::to_string(resp.getValue())))
          return std::make_pair(std::string("stop"), int64_t{0});
        return std::make_pair(std::string(), resp.getValueRevision());
      });
  if (now) {
    if (now->first == "stop") return ok_status();
    from = now->second + 1;
  } else if (now.error().code != ErrorCode::key_not_found) {
    return std::move(now).error();
  }
  WatchOptions wo;
  wo.key = name + "/";
  wo.range_end = storage::prefix_end(wo.key);
  wo.start_revision = from;
  wo.no_delete = true;
  return watch(wo, [&](int64_t, const std::vector<storage::Event>& events) {
    for (const auto& e : events) {
      if (!on_leader(e.kv.key, e.kv.value)) return false;
    }
    return true;
  });
}

Result<std::unique_ptr<SemHandle>> Client::sem_acquire(const std::string& name,
                                                       const SemOptions& o) {
  return call<std::unique_ptr<SemHandle>>([&]() -> Result<std::unique_ptr<SemHandle>> {
    auto req = impl_->keel.semAcquireRequest();
    req.setName(as_data(name));
    req.setMax(o.max);
    req.setHolderId(o.holder_id);
    req.setMetadata(as_data(o.metadata));
    req.setLeaseId(o.lease);
    req.setTtlMs(o.ttl_ms);
    req.setWait(o.wait);
    req.setTimeoutMs(o.timeout_ms);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    if (!resp.getAcquired()) return std::unique_ptr<SemHandle>();
    return std::make_unique<SemHandle>(
        std::make_unique<SemHandle::Impl>(SemHandle::Impl{*impl_, resp.getHandle(), nullptr}), name,
        o.holder_id, resp.getLeaseId());
  });
}

Status Client::sem_release(const std::string& name, const std::string& holder_id) {
  return call<Unit>([&]() -> Status {
    auto req = impl_->keel.semReleaseRequest();
    req.setName(as_data(name));
    req.setHolderId(holder_id);
    auto resp = req.send().wait(impl_->io.waitScope);
    return status_of(resp);
  });
}

Result<SemInfo> Client::sem_holders(const std::string& name) {
  return call<SemInfo>([&]() -> Result<SemInfo> {
    auto req = impl_->keel.semHoldersRequest();
    req.setName(as_data(name));
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    SemInfo out;
    out.max = resp.getMax();
    auto copy = [](auto list, std::vector<SemHolderInfo>* to) {
      for (auto h : list)
        to->push_back(SemHolderInfo{h.getHolderId(), h.getLeaseId(), h.getSinceMs(),
                                    agent::to_string(h.getMetadata())});
    };
    copy(resp.getHolders(), &out.holders);
    copy(resp.getWaiters(), &out.waiters);
    return out;
  });
}

Result<storage::PutResponse> Client::put(const storage::PutRequest& request,
                                         const storage::Fence& fence) {
  return call<storage::PutResponse>([&]() -> Result<storage::PutResponse> {
    auto req = impl_->keel.putRequest();
    to_rpc(request, req.initRequest());
    agent::to_rpc(fence, req.getRequest().initFence());
    auto resp = req.send().wait(impl_->io.waitScope);
    if (resp.hasError()) return from_rpc(resp.getError());
    impl_->header = header_from(resp.getResponse().getHeader());
    return from_rpc(resp.getResponse());
  });
}

Result<storage::DeleteRangeResponse> Client::delete_range(
    const storage::DeleteRangeRequest& request, const storage::Fence& fence) {
  return call<storage::DeleteRangeResponse>([&]() -> Result<storage::DeleteRangeResponse> {
    auto req = impl_->keel.deleteRangeRequest();
    to_rpc(request, req.initRequest());
    agent::to_rpc(fence, req.getRequest().initFence());
    auto resp = req.send().wait(impl_->io.waitScope);
    if (resp.hasError()) return from_rpc(resp.getError());
    impl_->header = header_from(resp.getResponse().getHeader());
    return from_rpc(resp.getResponse());
  });
}

Result<std::unique_ptr<Lease>> Client::lease_grant(int64_t ttl_ms, bool keep) {
  return call<std::unique_ptr<Lease>>([&]() -> Result<std::unique_ptr<Lease>> {
    auto req = impl_->keel.leaseGrantRequest();
    req.setTtlMs(ttl_ms);
    req.setKeep(keep);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return std::make_unique<Lease>(
        std::make_unique<Lease::Impl>(Lease::Impl{*impl_, resp.getLease(), nullptr}), resp.getId(),
        resp.getTtlMs());
  });
}

Status Client::lease_revoke(int64_t id) {
  return call<Unit>([&]() -> Status {
    auto req = impl_->keel.leaseRevokeRequest();
    req.setId(id);
    auto resp = req.send().wait(impl_->io.waitScope);
    return status_of(resp);
  });
}

Result<LeaseInfo> Client::lease_time_to_live(int64_t id, bool keys) {
  return call<LeaseInfo>([&]() -> Result<LeaseInfo> {
    auto req = impl_->keel.leaseTimeToLiveRequest();
    req.setId(id);
    req.setKeys(keys);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return lease_info_from(resp.getInfo());
  });
}

Result<std::vector<int64_t>> Client::lease_list() {
  return call<std::vector<int64_t>>([&]() -> Result<std::vector<int64_t>> {
    auto resp = impl_->keel.leaseListRequest().send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    std::vector<int64_t> ids;
    for (int64_t id : resp.getIds())
      ids.push_back(id);
    return ids;
  });
}

Result<std::unique_ptr<Lease>> Client::lease_keep_alive(int64_t id) {
  return call<std::unique_ptr<Lease>>([&]() -> Result<std::unique_ptr<Lease>> {
    auto req = impl_->keel.leaseKeepAliveRequest();
    req.setId(id);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return std::make_unique<Lease>(
        std::make_unique<Lease::Impl>(Lease::Impl{*impl_, resp.getLease(), nullptr}), id,
        resp.getTtlMs());
  });
}

Result<std::unique_ptr<LockHandle>> Client::lock(const std::string& name, const LockOptions& o) {
  return call<std::unique_ptr<LockHandle>>([&]() -> Result<std::unique_ptr<LockHandle>> {
    auto req = impl_->keel.lockRequest();
    req.setName(as_data(name));
    req.setLeaseId(o.lease);
    req.setTtlMs(o.ttl_ms);
    req.setWait(o.wait);
    req.setTimeoutMs(o.timeout_ms);
    req.setDelayMs(o.delay_ms);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    if (!resp.getAcquired()) return std::unique_ptr<LockHandle>();
    return std::make_unique<LockHandle>(
        std::make_unique<LockHandle::Impl>(LockHandle::Impl{*impl_, resp.getHandle(), nullptr}),
        name, resp.getToken(), resp.getLeaseId());
  });
}

Status Client::unlock(const std::string& name, int64_t lease) {
  return call<Unit>([&]() -> Status {
    auto req = impl_->keel.unlockRequest();
    req.setName(as_data(name));
    req.setLeaseId(lease);
    auto resp = req.send().wait(impl_->io.waitScope);
    return status_of(resp);
  });
}

Result<FenceCheck> Client::check_fence(const std::string& name, int64_t token) {
  return call<FenceCheck>([&]() -> Result<FenceCheck> {
    auto req = impl_->keel.checkFenceRequest();
    req.setName(as_data(name));
    req.setToken(token);
    auto resp = req.send().wait(impl_->io.waitScope);
    if (auto st = status_of(resp); !st) return std::move(st).error();
    return FenceCheck{resp.getValid(), resp.getCurrentToken()};
  });
}

}  // namespace keel::client
