// See prim_service.hpp. GCC 12's false -Wmaybe-uninitialized on kj's ExceptionOr (see
// kv_service.cpp) needs the pragma before every include here too.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "agent/prim_service.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/convert.hpp"
#include "agent/node_calls.hpp"
#include "primitives/state.hpp"

namespace keel::agent {

using primitives::State;
using storage::Command;
using storage::CommandResult;

namespace {

Error shutting_down() {
  return make_error(ErrorCode::shutting_down, "the agent is shutting down");
}

template <typename Results>
kj::Promise<void> fail(Results results, const Error& error) {
  to_rpc(error, results.initError());
  return kj::READY_NOW;
}

void fill_info(const primitives::LeaseInfo& info, rpc::LeaseInfo::Builder b) {
  b.setId(info.id);
  b.setTtlMs(info.ttl_ms);
  b.setRemainingMs(info.remaining_ms);
  auto keys = b.initKeys(info.keys.size());
  for (size_t i = 0; i < info.keys.size(); ++i)
    keys.set(i, as_data(info.keys[i]));
  auto locks = b.initLocks(info.locks.size());
  for (size_t i = 0; i < info.locks.size(); ++i)
    locks.set(i, as_data(info.locks[i]));
}

}  // namespace

struct PrimService::ErrorHandler final : public kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&& e) override {
    spdlog::debug("primitives task ended: {}", e.getDescription().cStr());
  }
};

// ---- capabilities ----

class LeaseImpl final : public rpc::Lease::Server {
 public:
  LeaseImpl(std::shared_ptr<PrimService> s, int64_t id, int64_t ttl_ms, bool session)
      : s_(std::move(s)), id_(id), session_(session) {
    s_->retain(id_, ttl_ms);
  }
  ~LeaseImpl() {
    if (!s_->closed() && !revoked_) s_->release(id_, session_);
  }

 protected:
  kj::Promise<void> info(InfoContext ctx) override {
    if (s_->closed()) return fail(ctx.getResults(), shutting_down());
    auto info = State::lease_info(s_->reader(), id_, ctx.getParams().getKeys());
    if (!info) return fail(ctx.getResults(), info.error());
    if (!*info) {
      return fail(ctx.getResults(), make_error(ErrorCode::lease_not_found,
                                               "lease " + std::to_string(id_) + " has ended"));
    }
    fill_info(**info, ctx.getResults().initInfo());
    return kj::READY_NOW;
  }
  kj::Promise<void> revoke(RevokeContext ctx) override {
    if (s_->closed()) return fail(ctx.getResults(), shutting_down());
    if (!revoked_) {
      revoked_ = true;
      s_->release(id_, false);
    }
    return s_->propose(storage::LeaseRevokeRequest{id_})
        .then([ctx](Result<CommandResult> r) mutable {
          if (!r) to_rpc(r.error(), ctx.getResults().initError());
        });
  }
  kj::Promise<void> ended(EndedContext ctx) override {
    ctx.allowCancellation();  // see LockHandleImpl::lost
    if (s_->closed()) return kj::READY_NOW;
    return s_->lease_ended(id_);
  }

 private:
  std::shared_ptr<PrimService> s_;
  int64_t id_;
  bool session_;
  bool revoked_ = false;
};

class LockHandleImpl final : public rpc::LockHandle::Server, public Held {
 public:
  // own_lease: the agent granted `lease` for this lock alone; it is revoked with the handle.
  LockHandleImpl(std::shared_ptr<PrimService> s, std::string name, int64_t lease, int64_t token,
                 bool own_lease)
      : s_(std::move(s)),
        name_(std::move(name)),
        lease_(lease),
        token_(token),
        own_lease_(own_lease) {
    s_->add_holder(this);
  }
  ~LockHandleImpl() {
    if (s_->closed()) return;
    s_->remove_holder(this);
    if (own_lease_) {
      s_->release(lease_, /*revoke=*/true);  // the lock passes on with the lease
    } else if (!is_lost()) {
      s_->propose_detached(storage::UnlockRequest{name_, lease_});
    }
  }

  const std::string& name() const { return name_; }
  int64_t lease() const { return lease_; }
  int64_t token() const { return token_; }
  bool still_held(storage::Reader& reader) override {
    auto lock = State::lock_info(reader, name_);
    if (!lock) return true;  // cannot tell: asked again at the next change
    return *lock && (*lock)->holder == lease_ && (*lock)->token == token_;
  }

 protected:
  kj::Promise<void> unlock(UnlockContext ctx) override {
    if (s_->closed()) return fail(ctx.getResults(), shutting_down());
    if (is_lost()) {
      return fail(ctx.getResults(),
                  make_error(ErrorCode::lock_not_held, "lock '" + name_ + "' with token " +
                                                           std::to_string(token_) +
                                                           " is no longer held by this handle"));
    }
    return s_->propose(storage::UnlockRequest{name_, lease_})
        .then([this, ctx](Result<CommandResult> r) mutable {
          if (!r) return (void)to_rpc(r.error(), ctx.getResults().initError());
          mark_lost();
        });
  }
  kj::Promise<void> lost(LostContext ctx) override {
    // Cap'n Proto 0.9 keeps a call (and its capability) alive after its caller went away
    // unless the call allows cancellation: without this a dead client's handle, and so its
    // lock, would live on.
    ctx.allowCancellation();
    if (s_->closed()) return kj::READY_NOW;
    return when_lost();
  }

 private:
  std::shared_ptr<PrimService> s_;
  std::string name_;
  int64_t lease_;
  int64_t token_;
  bool own_lease_;
};

std::string election_lock(const std::string& name) {
  return "election/" + name;
}
std::string leader_key(const std::string& name, int64_t lease) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(lease));
  return name + "/" + hex;
}
// A one-op txn that applies only while `lock` is the election lock's current holder.
storage::TxnRequest fenced(storage::RequestOp op, const LockHandleImpl& lock) {
  storage::TxnRequest txn;
  txn.success.push_back(std::move(op));
  txn.fences.push_back(storage::Fence{lock.name(), lock.token()});
  return txn;
}

class LeadershipImpl final : public rpc::Leadership::Server {
 public:
  LeadershipImpl(std::shared_ptr<PrimService> s, std::string key, kj::Own<LockHandleImpl> lock)
      : s_(std::move(s)), key_(std::move(key)), lock_(kj::mv(lock)) {}
  ~LeadershipImpl() {
    // Resign: the value goes first, then the lock (dropping it unlocks or revokes).
    if (!s_->closed() && lock_.get() != nullptr) {
      s_->propose_detached(fenced(storage::DeleteRangeRequest{key_, "", false}, *lock_));
    }
  }

 protected:
  kj::Promise<void> proclaim(ProclaimContext ctx) override {
    if (s_->closed()) return fail(ctx.getResults(), shutting_down());
    if (lock_.get() == nullptr) return fail(ctx.getResults(), resigned());
    storage::PutRequest put;
    put.key = key_;
    put.value = to_string(ctx.getParams().getValue());
    put.lease = lock_->lease();
    return s_->propose(fenced(std::move(put), *lock_)).then([ctx](Result<CommandResult> r) mutable {
      auto results = ctx.getResults();
      if (!r) return (void)to_rpc(r.error(), results.initError());
      results.setRevision(std::get<storage::TxnResponse>(r.value()).revision);
    });
  }
  kj::Promise<void> resign(ResignContext ctx) override {
    if (s_->closed()) return fail(ctx.getResults(), shutting_down());
    if (lock_.get() == nullptr) return fail(ctx.getResults(), resigned());
    return s_->propose(fenced(storage::DeleteRangeRequest{key_, "", false}, *lock_))
        .then([this, ctx](Result<CommandResult> r) mutable {
          if (!r && r.error().code != ErrorCode::fenced) {
            return (void)to_rpc(r.error(), ctx.getResults().initError());
          }
          lock_ = nullptr;  // unlocks: the next candidate is leader
        });
  }
  kj::Promise<void> lost(LostContext ctx) override {
    ctx.allowCancellation();  // see LockHandleImpl::lost
    if (lock_.get() == nullptr) return kj::READY_NOW;
    return lock_->when_lost();
  }

 private:
  static Error resigned() {
    return make_error(ErrorCode::lock_not_held, "this leadership was resigned");
  }
  std::shared_ptr<PrimService> s_;
  std::string key_;
  kj::Own<LockHandleImpl> lock_;
};

class SemHandleImpl final : public rpc::SemHandle::Server, public Held {
 public:
  SemHandleImpl(std::shared_ptr<PrimService> s, std::string name, std::string holder_id,
                int64_t lease, bool own_lease)
      : s_(std::move(s)),
        name_(std::move(name)),
        holder_id_(std::move(holder_id)),
        lease_(lease),
        own_lease_(own_lease) {
    s_->add_holder(this);
  }
  ~SemHandleImpl() {
    if (s_->closed()) return;
    s_->remove_holder(this);
    if (own_lease_) {
      s_->release(lease_, /*revoke=*/true);  // the slot ends with the lease
    } else if (!is_lost()) {
      s_->propose_detached(storage::SemReleaseRequest{name_, holder_id_, lease_});
    }
  }

  bool still_held(storage::Reader& reader) override {
    auto sem = State::semaphore_info(reader, name_);
    if (!sem) return true;  // cannot tell: asked again at the next change
    if (!*sem) return false;
    for (const auto& h : (*sem)->holders) {
      if (h.holder_id == holder_id_ && h.lease == lease_) return true;
    }
    return false;
  }

 protected:
  kj::Promise<void> release(ReleaseContext ctx) override {
    if (s_->closed()) return fail(ctx.getResults(), shutting_down());
    if (is_lost()) {
      return fail(ctx.getResults(),
                  make_error(ErrorCode::lock_not_held,
                             "holder '" + holder_id_ + "' no longer holds a slot of semaphore '" +
                                 name_ + "' through this handle"));
    }
    return s_->propose(storage::SemReleaseRequest{name_, holder_id_, lease_})
        .then([this, ctx](Result<CommandResult> r) mutable {
          if (!r) return (void)to_rpc(r.error(), ctx.getResults().initError());
          mark_lost();
        });
  }
  kj::Promise<void> lost(LostContext ctx) override {
    ctx.allowCancellation();  // see LockHandleImpl::lost
    if (s_->closed()) return kj::READY_NOW;
    return when_lost();
  }

 private:
  std::shared_ptr<PrimService> s_;
  std::string name_;
  std::string holder_id_;
  int64_t lease_;
  bool own_lease_;
};

// ---- the service ----

PrimService::PrimService(const Config& config, storage::Engine& engine, node::Node& node,
                         std::shared_ptr<RevisionSignal> epoch, kj::Timer& timer,
                         std::shared_ptr<AgentCounts> counts)
    : config_(config),
      limits_(config.limits),
      engine_(&engine),
      node_(&node),
      reader_(engine.store().reader()),
      epoch_(std::move(epoch)),
      timer_(timer),
      rng_(std::random_device{}()),
      counts_(std::move(counts)),
      error_handler_(kj::heap<ErrorHandler>()) {
  tasks_ = kj::heap<kj::TaskSet>(*error_handler_);
}

PrimService::~PrimService() {
  close();
}

void PrimService::start() {
  renew_task_ = renew_loop().eagerlyEvaluate(nullptr);
  epoch_task_ = epoch_loop().eagerlyEvaluate(nullptr);
}

void PrimService::stop() {
  renew_task_ = nullptr;
  stopping_ = true;
  auto waits = std::move(waits_);
  waits_.clear();
  for (auto& [id, w] : waits)
    w.acquired->fulfill(int64_t{-1});  // wait_for: -1 = shutting down
}

void PrimService::close() {
  background_.clear();
  renew_task_ = nullptr;
  epoch_task_ = nullptr;
  waits_.clear();  // their calls break: the agent is going away
  end_waiters_.clear();
  holders_.clear();
  renewed_.clear();
  renewed_share_.set(0);
  if (tasks_.get() != nullptr) tasks_ = nullptr;
  reader_.reset();
  engine_ = nullptr;
  node_ = nullptr;
}

kj::Promise<Result<CommandResult>> PrimService::propose(Command command) {
  if (node_ == nullptr) return Result<CommandResult>(shutting_down());
  return agent::propose(*node_, std::move(command));
}

void PrimService::propose_detached(Command command) {
  if (node_ == nullptr) return;
  // Bounded: a client that drops 100,000 session leases at once must not fill the node's
  // proposal queue (raft.max_pending_proposals) and crowd out the renewals of everyone
  // else; the rest wait here and go as earlier ones complete.
  background_.push_back(std::move(command));
  pump_background();
}

void PrimService::pump_background() {
  while (node_ != nullptr && background_in_flight_ < kMaxBackgroundInFlight &&
         !background_.empty()) {
    Command c = std::move(background_.front());
    background_.pop_front();
    ++background_in_flight_;
    tasks_->add(propose(std::move(c)).then([this](Result<CommandResult> r) {
      if (!r) spdlog::debug("background primitive call: {}", r.error().message);
      --background_in_flight_;
      pump_background();
    }));
  }
}

void PrimService::retain(int64_t id, int64_t ttl_ms) {
  auto& r = renewed_[id];
  if (r.refs++ == 0) {
    r.ttl_ms = ttl_ms;
    r.last = timer_.now();
  }
  renewed_share_.set(renewed_.size());
}

void PrimService::release(int64_t id, bool revoke) {
  auto it = renewed_.find(id);
  if (it != renewed_.end() && --it->second.refs == 0) renewed_.erase(it);
  renewed_share_.set(renewed_.size());
  if (revoke) propose_detached(storage::LeaseRevokeRequest{id});
}

kj::Promise<void> PrimService::lease_ended(int64_t id) {
  auto info = State::lease_info(*reader_, id, false);
  if (info && !*info) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  end_waiters_.emplace(id, kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void PrimService::lease_gone(int64_t id) {
  renewed_.erase(id);
  renewed_share_.set(renewed_.size());
  auto [a, b] = end_waiters_.equal_range(id);
  for (auto it = a; it != b; ++it)
    it->second->fulfill();
  end_waiters_.erase(a, b);
}

// One LeaseRenewRequest for every lease whose last renewal is a third of its TTL old.
kj::Promise<void> PrimService::renew_loop() {
  return timer_.afterDelay(config_.lease_renew_tick_ms * kj::MILLISECONDS).then([this] {
    renew_due();
    return renew_loop();
  });
}

void PrimService::renew_due() {
  if (node_ == nullptr) return;
  const auto now = timer_.now();
  storage::LeaseRenewRequest req;
  for (auto& [id, r] : renewed_) {
    if (r.in_flight || now - r.last < (r.ttl_ms / 3) * kj::MILLISECONDS) continue;
    if (req.ids.size() >= limits_.max_renew_ids) break;  // the rest go at the next tick
    r.in_flight = true;
    req.ids.push_back(id);
  }
  if (req.ids.empty()) return;
  counts_->renew_messages++;
  counts_->leases_renewed += req.ids.size();
  auto ids = req.ids;
  tasks_->add(propose(std::move(req)).then([this, ids, now](Result<CommandResult> r) {
    for (size_t i = 0; i < ids.size(); ++i) {
      auto it = renewed_.find(ids[i]);
      if (it == renewed_.end()) continue;  // released meanwhile
      it->second.in_flight = false;
      if (!r) continue;  // retried at the next tick
      const auto& ttls = std::get<storage::LeaseRenewResponse>(r.value()).ttl_ms;
      if (i < ttls.size() && ttls[i] == 0) {
        lease_gone(ids[i]);
      } else {
        it->second.last = now;
      }
    }
    if (!r && r.error().code != ErrorCode::shutting_down) {
      spdlog::warn("lease renewal of {} leases failed: {}; retried at the next tick", ids.size(),
                   r.error().message);
    }
  }));
}

kj::Promise<void> PrimService::epoch_loop() {
  return epoch_->next(seen_epoch_).then([this](int64_t e) {
    seen_epoch_ = e;
    on_epoch();
    return epoch_loop();
  });
}

// The primitives' rows changed on this replica: wake the waiters that now hold their lock,
// tell holders that lost theirs, and end waits on leases that are gone.
void PrimService::on_epoch() {
  if (reader_ == nullptr) return;
  for (auto it = waits_.begin(); it != waits_.end();) {
    if (auto token = it->second.ready(*reader_)) {
      it->second.acquired->fulfill(kj::cp(*token));
      it = waits_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<Held*> lost;
  for (auto* h : holders_) {
    if (!h->still_held(*reader_)) lost.push_back(h);
  }
  for (auto* h : lost)
    h->mark_lost();
  std::vector<int64_t> gone;
  for (auto it = end_waiters_.begin(); it != end_waiters_.end();
       it = end_waiters_.upper_bound(it->first)) {
    auto info = State::lease_info(*reader_, it->first, false);
    if (info && !*info) gone.push_back(it->first);
  }
  for (int64_t id : gone)
    lease_gone(id);
}

kj::Promise<kj::Maybe<int64_t>> PrimService::wait_for(uint64_t* wait_id, Ready ready,
                                                      int64_t timeout_ms) {
  if (stopping_) return kj::Maybe<int64_t>(int64_t{-1});
  auto paf = kj::newPromiseAndFulfiller<int64_t>();
  *wait_id = next_wait_++;
  waits_.emplace(*wait_id, Wait{std::move(ready), kj::mv(paf.fulfiller)});
  on_epoch();  // handed over before the wait was registered?
  kj::Promise<kj::Maybe<int64_t>> acquired =
      paf.promise.then([](int64_t t) { return kj::Maybe<int64_t>(t); });
  if (timeout_ms > 0) {
    acquired = acquired.exclusiveJoin(timer_.afterDelay(timeout_ms * kj::MILLISECONDS).then([] {
      return kj::Maybe<int64_t>(nullptr);
    }));
  }
  return acquired;
}

Result<int64_t> PrimService::new_lease_id_checked(int64_t ttl_ms) {
  const int64_t min_ms = config_.effective_min_ttl_ms();
  if (ttl_ms < min_ms || ttl_ms > config_.lease_max_ttl_ms) {
    return make_error(ErrorCode::ttl_out_of_range,
                      "ttl " + std::to_string(ttl_ms) + " ms is outside " + std::to_string(min_ms) +
                          ".." + std::to_string(config_.lease_max_ttl_ms) +
                          " ms (lease.min_ttl_ms, at least twice the election timeout; "
                          "lease.max_ttl_ms)");
  }
  if (renewed_share_.total() >= config_.max_leases_per_agent) {
    return make_error(ErrorCode::too_many_leases,
                      "this agent renews " + std::to_string(renewed_share_.total()) +
                          " leases; limit is " + std::to_string(config_.max_leases_per_agent) +
                          " (limits.max_leases_per_agent)");
  }
  // Random 62-bit ids: a collision is refused by the state machine (lease_exists) and the
  // caller retries with another.
  return static_cast<int64_t>(rng_() >> 2) | 1;
}

kj::Promise<Result<int64_t>> PrimService::grant(int64_t ttl_ms) {
  auto id = new_lease_id_checked(ttl_ms);
  if (!id) return Result<int64_t>(std::move(id).error());
  return propose(storage::LeaseGrantRequest{*id, ttl_ms})
      .then([id = *id](Result<CommandResult> r) -> Result<int64_t> {
        if (!r) return std::move(r).error();
        return id;
      });
}

// A command whose reply is only its error (validated here, before it is replicated).
template <typename Context>
kj::Promise<void> PrimService::propose_only(Context ctx, storage::Command command) {
  if (node_ == nullptr) return fail(ctx.getResults(), shutting_down());
  if (auto st = storage::validate(command, limits_); !st) return fail(ctx.getResults(), st.error());
  return propose(std::move(command)).then([ctx](Result<CommandResult> r) mutable {
    if (!r) to_rpc(r.error(), ctx.getResults().initError());
  });
}

// A linearizable read: once this replica has applied a read index confirmed by a quorum,
// read(self, results) answers from it.
template <typename Context, typename Read>
kj::Promise<void> PrimService::after_read_index(Context ctx, Read read) {
  if (node_ == nullptr) return fail(ctx.getResults(), shutting_down());
  return from_node<Status>(*node_, [](node::Node& n, auto done) { n.read_index(std::move(done)); })
      .then([self = shared_from_this(), ctx, read = std::move(read)](Status st) mutable {
        auto results = ctx.getResults();
        if (!st) return (void)to_rpc(st.error(), results.initError());
        if (self->closed()) return (void)to_rpc(shutting_down(), results.initError());
        read(*self, ctx.getParams(), results);
      });
}

kj::Promise<void> PrimService::lease_grant(
    capnp::CallContext<rpc::Keel::LeaseGrantParams, rpc::Keel::LeaseGrantResults> ctx) {
  if (node_ == nullptr) return fail(ctx.getResults(), shutting_down());
  const int64_t ttl_ms = ctx.getParams().getTtlMs();
  const bool keep = ctx.getParams().getKeep();
  return grant(ttl_ms).then(
      [self = shared_from_this(), ctx, ttl_ms, keep](Result<int64_t> id) mutable {
        auto results = ctx.getResults();
        if (!id) return (void)to_rpc(id.error(), results.initError());
        if (self->closed()) return (void)to_rpc(shutting_down(), results.initError());
        results.setId(*id);
        results.setTtlMs(ttl_ms);
        results.setLease(kj::heap<LeaseImpl>(self, *id, ttl_ms, !keep));
      });
}

kj::Promise<void> PrimService::lease_revoke(
    capnp::CallContext<rpc::Keel::LeaseRevokeParams, rpc::Keel::LeaseRevokeResults> ctx) {
  return propose_only(ctx, storage::LeaseRevokeRequest{ctx.getParams().getId()});
}

kj::Promise<void> PrimService::lease_time_to_live(
    capnp::CallContext<rpc::Keel::LeaseTimeToLiveParams, rpc::Keel::LeaseTimeToLiveResults> ctx) {
  // Linearizable: the replica has applied everything acknowledged before the call.
  return after_read_index(ctx, [](PrimService& self, auto params, auto results) {
    const int64_t id = params.getId();
    auto info = State::lease_info(self.reader(), id, params.getKeys());
    if (!info) return (void)to_rpc(info.error(), results.initError());
    if (!*info) {
      return (void)to_rpc(
          make_error(ErrorCode::lease_not_found, "lease " + std::to_string(id) + " not found"),
          results.initError());
    }
    fill_info(**info, results.initInfo());
  });
}

kj::Promise<void> PrimService::lease_list(
    capnp::CallContext<rpc::Keel::LeaseListParams, rpc::Keel::LeaseListResults> ctx) {
  return after_read_index(ctx, [](PrimService& self, auto, auto results) {
    auto ids = State::list_leases(self.reader());
    if (!ids) return (void)to_rpc(ids.error(), results.initError());
    auto list = results.initIds(ids->size());
    for (size_t i = 0; i < ids->size(); ++i)
      list.set(i, (*ids)[i]);
  });
}

kj::Promise<void> PrimService::lease_keep_alive(
    capnp::CallContext<rpc::Keel::LeaseKeepAliveParams, rpc::Keel::LeaseKeepAliveResults> ctx) {
  if (node_ == nullptr) return fail(ctx.getResults(), shutting_down());
  const int64_t id = ctx.getParams().getId();
  storage::Command c = storage::LeaseRenewRequest{{id}};
  if (auto st = storage::validate(c, limits_); !st) return fail(ctx.getResults(), st.error());
  // One renewal now (which also says whether it exists), then the agent's batched ones.
  return propose(std::move(c))
      .then([self = shared_from_this(), ctx, id](Result<CommandResult> r) mutable {
        auto results = ctx.getResults();
        if (!r) return (void)to_rpc(r.error(), results.initError());
        if (self->closed()) return (void)to_rpc(shutting_down(), results.initError());
        const auto& ttls = std::get<storage::LeaseRenewResponse>(r.value()).ttl_ms;
        if (ttls.empty() || ttls[0] == 0) {
          return (void)to_rpc(
              make_error(ErrorCode::lease_not_found, "lease " + std::to_string(id) + " not found"),
              results.initError());
        }
        results.setTtlMs(ttls[0]);
        results.setLease(kj::heap<LeaseImpl>(self, id, ttls[0], /*session=*/false));
      });
}

namespace {

// One lock or semaphore call's loose ends: whatever way the call ends without handing out a
// handle (an error, a timeout, or the caller going away, which cancels the call), its place
// in the queue goes (`leave`) and the agent's own lease for it is revoked. A grant still in
// flight at that moment completes unseen; that lease is not renewed and ends after its TTL.
struct PendingAcquire {
  std::shared_ptr<PrimService> s;
  int64_t lease = 0;  // once known
  bool own = false;   // the agent granted `lease` for this call
  bool handed = false;
  uint64_t wait_id = 0;
  std::optional<storage::Command> leave;  // set once queued with the caller's own lease
  ~PendingAcquire() {
    if (handed || s->closed()) return;
    if (wait_id != 0) s->cancel_wait(wait_id);
    if (lease == 0) return;
    if (own) {
      s->release(lease, /*revoke=*/true);
    } else if (leave) {
      s->propose_detached(std::move(*leave));
    }
  }
};

}  // namespace

kj::Promise<PrimService::LockOutcome> PrimService::acquire_lock(LockArgs args) {
  auto failed = [](Error e) {
    LockOutcome out;
    out.ok = false;
    out.error = std::move(e);
    return out;
  };
  if (node_ == nullptr) return failed(shutting_down());
  if (args.timeout_ms < 0) {
    return failed(
        make_error(ErrorCode::invalid_argument, "lock: timeoutMs must be >= 0 (0 = no timeout)"));
  }
  if (args.lease < 0) {
    return failed(make_error(ErrorCode::invalid_argument, "lock: leaseId must be >= 0"));
  }
  const int64_t delay_ms = args.delay_ms < 0 ? config_.lock_default_delay_ms : args.delay_ms;
  const int64_t ttl_ms = args.ttl_ms > 0 ? args.ttl_ms : config_.lease_default_ttl_ms;
  // Validate before granting anything (the lease id is a placeholder when the agent grants).
  storage::Command probe =
      storage::LockRequest{args.name, args.lease > 0 ? args.lease : 1, args.wait, delay_ms};
  if (auto st = storage::validate(probe, limits_); !st) return failed(st.error());

  struct LockCall : PendingAcquire {
    std::string name;
  };
  auto call = std::make_shared<LockCall>();
  call->s = shared_from_this();
  call->name = args.name;
  call->own = args.lease == 0;
  kj::Promise<Result<int64_t>> lease =
      args.lease > 0 ? kj::Promise<Result<int64_t>>(Result<int64_t>(args.lease)) : grant(ttl_ms);
  auto acquired = [call](int64_t token) {
    call->handed = true;  // the handle takes over the agent's own lease, if any
    LockOutcome out;
    out.lease = call->lease;
    out.token = token;
    out.handle = kj::heap<LockHandleImpl>(call->s, call->name, call->lease, token, call->own);
    return out;
  };
  const bool wait = args.wait;
  const int64_t timeout_ms = args.timeout_ms;
  return lease
      .then([call, wait, delay_ms,
             ttl_ms](Result<int64_t> id) mutable -> kj::Promise<Result<CommandResult>> {
        if (!id) return Result<CommandResult>(std::move(id).error());
        if (call->s->closed()) return Result<CommandResult>(shutting_down());
        call->lease = *id;
        if (call->own) call->s->retain(call->lease, ttl_ms);  // renewed from now on
        return call->s->propose(storage::LockRequest{call->name, call->lease, wait, delay_ms});
      })
      .then([call, wait, timeout_ms, acquired,
             failed](Result<CommandResult> r) mutable -> kj::Promise<LockOutcome> {
        if (!r) return failed(r.error());
        if (call->s->closed()) return failed(shutting_down());
        const auto& resp = std::get<storage::LockResponse>(r.value());
        if (resp.acquired) return acquired(resp.token);
        if (!wait) {  // tryLock: held by someone else
          LockOutcome out;
          out.lease = call->lease;
          return out;
        }
        // Queued: the replicated state hands us the lock (on_epoch), or we give up.
        call->leave = storage::UnlockRequest{call->name, call->lease};
        auto ready = [name = call->name,
                      lease = call->lease](storage::Reader& rd) -> std::optional<int64_t> {
          auto lock = State::lock_info(rd, name);
          if (lock && *lock && (*lock)->holder == lease) return (*lock)->token;
          return std::nullopt;
        };
        return call->s->wait_for(&call->wait_id, ready, timeout_ms)
            .then([call, acquired, failed,
                   timeout_ms](kj::Maybe<int64_t> token) mutable -> LockOutcome {
              KJ_IF_MAYBE (t, token) {
                call->wait_id = 0;  // on_epoch (or stop) removed it
                if (*t < 0) return failed(shutting_down());
                return acquired(*t);
              }
              return failed(make_error(ErrorCode::timeout, "lock not acquired within " +
                                                               std::to_string(timeout_ms) + " ms"));
            });
      });
}

kj::Promise<void> PrimService::lock(
    capnp::CallContext<rpc::Keel::LockParams, rpc::Keel::LockResults> ctx) {
  auto params = ctx.getParams();
  LockArgs args;
  args.name = to_string(params.getName());
  args.lease = params.getLeaseId();
  args.ttl_ms = params.getTtlMs();
  args.wait = params.getWait();
  args.timeout_ms = params.getTimeoutMs();
  args.delay_ms = params.getDelayMs();
  ctx.allowCancellation();  // a caller that goes away while queued gives up its place
  return acquire_lock(std::move(args)).then([ctx](LockOutcome out) mutable {
    auto results = ctx.getResults();
    if (!out.ok) return (void)to_rpc(out.error, results.initError());
    results.setLeaseId(out.lease);
    if (out.handle.get() == nullptr) return;  // tryLock: held
    results.setAcquired(true);
    results.setToken(out.token);
    results.setHandle(kj::mv(out.handle));
  });
}

kj::Promise<void> PrimService::campaign(
    capnp::CallContext<rpc::Keel::CampaignParams, rpc::Keel::CampaignResults> ctx) {
  auto params = ctx.getParams();
  const std::string name = to_string(params.getName());
  const std::string value = to_string(params.getValue());
  if (auto e = storage::validate(
          storage::Command(storage::PutRequest{leader_key(name, 1), value, 0, false, false, false}),
          limits_);
      !e) {
    return fail(ctx.getResults(), e.error());
  }
  LockArgs args;
  args.name = election_lock(name);
  args.lease = params.getLeaseId();
  args.ttl_ms = params.getTtlMs();
  args.wait = true;
  args.timeout_ms = params.getTimeoutMs();
  ctx.allowCancellation();  // a candidate that goes away leaves the queue
  auto self = shared_from_this();
  return acquire_lock(std::move(args))
      .then([self, ctx, name, value](LockOutcome out) mutable -> kj::Promise<void> {
        auto results = ctx.getResults();
        if (!out.ok) return fail(results, out.error);
        KEEL_ASSERT(out.handle.get() != nullptr, "a waiting lock call ends acquired or failed");
        // Leader: publish the value on the leader key, fenced by the election lock's token.
        const std::string key = leader_key(name, out.lease);
        storage::PutRequest put{key, value, out.lease, false, false, false};
        auto txn = fenced(std::move(put), *out.handle);
        auto lock = kj::mv(out.handle);
        const int64_t lease = out.lease;
        return self->propose(std::move(txn))
            .then([self, ctx, name, key, lease,
                   lock = kj::mv(lock)](Result<CommandResult> r) mutable {
              auto results = ctx.getResults();
              if (!r) return (void)to_rpc(r.error(), results.initError());  // lock dropped
              auto leader = results.initLeader();
              leader.setName(as_data(name));
              leader.setKey(as_data(key));
              leader.setRevision(std::get<storage::TxnResponse>(r.value()).revision);
              leader.setLease(lease);
              results.setLeadership(kj::heap<LeadershipImpl>(self, key, kj::mv(lock)));
            });
      });
}

kj::Promise<void> PrimService::leader(
    capnp::CallContext<rpc::Keel::LeaderParams, rpc::Keel::LeaderResults> ctx) {
  return after_read_index(ctx, [](PrimService& self, auto params, auto results) {
    const std::string name = to_string(params.getName());
    auto none = make_error(ErrorCode::key_not_found, "election '" + name + "' has no leader");
    auto lock = State::lock_info(self.reader(), election_lock(name));
    if (!lock) return (void)to_rpc(lock.error(), results.initError());
    if (!*lock || (*lock)->holder == 0) return (void)to_rpc(none, results.initError());
    storage::RangeRequest rr;
    rr.key = leader_key(name, (*lock)->holder);
    auto r = self.reader().range(rr, self.limits_.max_response_bytes);
    if (!r) return (void)to_rpc(r.error(), results.initError());
    if (r->kvs.empty()) return (void)to_rpc(none, results.initError());  // not yet published
    const auto& kv = r->kvs[0];
    auto leader = results.initLeader();
    leader.setName(as_data(name));
    leader.setKey(as_data(kv.key));
    leader.setRevision(kv.create_revision);
    leader.setLease(kv.lease);
    results.setValue(as_data(kv.value));
    results.setValueRevision(kv.mod_revision);
  });
}

kj::Promise<void> PrimService::sem_acquire(
    capnp::CallContext<rpc::Keel::SemAcquireParams, rpc::Keel::SemAcquireResults> ctx) {
  if (node_ == nullptr) return fail(ctx.getResults(), shutting_down());
  auto params = ctx.getParams();
  storage::SemAcquireRequest req;
  req.name = to_string(params.getName());
  req.max = params.getMax();
  req.holder_id = params.getHolderId();
  req.metadata = to_string(params.getMetadata());
  req.wait = params.getWait();
  const int64_t given_lease = params.getLeaseId();
  const int64_t timeout_ms = params.getTimeoutMs();
  const int64_t ttl_ms = params.getTtlMs() > 0 ? params.getTtlMs() : config_.lease_default_ttl_ms;
  if (given_lease < 0 || timeout_ms < 0) {
    return fail(ctx.getResults(),
                make_error(ErrorCode::invalid_argument,
                           "semaphore acquire: leaseId and timeoutMs must be >= 0"));
  }
  req.lease = given_lease > 0 ? given_lease : 1;  // validated before anything is granted
  if (auto st = storage::validate(storage::Command(req), limits_); !st)
    return fail(ctx.getResults(), st.error());
  struct SemCall : PendingAcquire {
    storage::SemAcquireRequest req;
  };
  ctx.allowCancellation();
  auto call = std::make_shared<SemCall>();
  call->s = shared_from_this();
  call->req = req;
  call->req.lease = 0;
  call->own = given_lease == 0;
  kj::Promise<Result<int64_t>> lease =
      given_lease > 0 ? kj::Promise<Result<int64_t>>(Result<int64_t>(given_lease)) : grant(ttl_ms);
  auto handle = [call] {
    call->handed = true;
    return kj::heap<SemHandleImpl>(call->s, call->req.name, call->req.holder_id, call->req.lease,
                                   call->own);
  };
  return lease
      .then([call, ttl_ms](Result<int64_t> id) mutable -> kj::Promise<Result<CommandResult>> {
        if (!id) return Result<CommandResult>(std::move(id).error());
        if (call->s->closed()) return Result<CommandResult>(shutting_down());
        call->req.lease = call->lease = *id;
        if (call->own) call->s->retain(call->lease, ttl_ms);
        return call->s->propose(call->req);
      })
      .then([call, ctx, timeout_ms, handle](Result<CommandResult> r) mutable -> kj::Promise<void> {
        auto results = ctx.getResults();
        if (!r) return fail(results, r.error());
        if (call->s->closed()) return fail(results, shutting_down());
        const auto& resp = std::get<storage::SemAcquireResponse>(r.value());
        results.setLeaseId(call->req.lease);
        results.setHolders(resp.holders);
        if (resp.acquired) {
          results.setAcquired(true);
          results.setHandle(handle());
          return kj::READY_NOW;
        }
        if (!call->req.wait) return kj::READY_NOW;  // every slot is taken
        call->leave = storage::SemReleaseRequest{call->req.name, call->req.holder_id, call->lease};
        auto ready = [name = call->req.name, id = call->req.holder_id,
                      lease = call->req.lease](storage::Reader& rd) -> std::optional<int64_t> {
          auto sem = State::semaphore_info(rd, name);
          if (!sem || !*sem) return std::nullopt;
          for (const auto& h : (*sem)->holders) {
            if (h.holder_id == id && h.lease == lease) return int64_t{1};
          }
          return std::nullopt;
        };
        return call->s->wait_for(&call->wait_id, ready, timeout_ms)
            .then([call, ctx, handle,
                   timeout_ms](kj::Maybe<int64_t> got) mutable -> kj::Promise<void> {
              auto results = ctx.getResults();
              KJ_IF_MAYBE (t, got) {
                call->wait_id = 0;
                if (*t < 0) return fail(results, shutting_down());
                results.setAcquired(true);
                results.setHandle(handle());
                return kj::READY_NOW;
              }
              return fail(results,
                          make_error(ErrorCode::timeout, "no semaphore slot within " +
                                                             std::to_string(timeout_ms) + " ms"));
            });
      });
}

kj::Promise<void> PrimService::sem_release(
    capnp::CallContext<rpc::Keel::SemReleaseParams, rpc::Keel::SemReleaseResults> ctx) {
  return propose_only(ctx, storage::SemReleaseRequest{to_string(ctx.getParams().getName()),
                                                      ctx.getParams().getHolderId()});
}

kj::Promise<void> PrimService::sem_holders(
    capnp::CallContext<rpc::Keel::SemHoldersParams, rpc::Keel::SemHoldersResults> ctx) {
  return after_read_index(ctx, [](PrimService& self, auto params, auto results) {
    auto sem = State::semaphore_info(self.reader(), to_string(params.getName()));
    if (!sem) return (void)to_rpc(sem.error(), results.initError());
    if (!*sem) return;
    results.setMax((*sem)->max);
    auto fill = [](const std::vector<primitives::SemSlot>& from, auto list) {
      for (size_t i = 0; i < from.size(); ++i) {
        list[i].setHolderId(from[i].holder_id);
        list[i].setLeaseId(from[i].lease);
        list[i].setSinceMs(from[i].since_ms);
        list[i].setMetadata(as_data(from[i].metadata));
      }
    };
    fill((*sem)->holders, results.initHolders((*sem)->holders.size()));
    fill((*sem)->waiters, results.initWaiters((*sem)->waiters.size()));
  });
}

kj::Promise<void> PrimService::check_fence(
    capnp::CallContext<rpc::Keel::CheckFenceParams, rpc::Keel::CheckFenceResults> ctx) {
  return after_read_index(ctx, [](PrimService& self, auto params, auto results) {
    const std::string name = to_string(params.getName());
    auto lock = State::lock_info(self.reader(), name);
    if (!lock) return (void)to_rpc(lock.error(), results.initError());
    const int64_t current = *lock && (*lock)->holder != 0 ? (*lock)->token : 0;
    results.setCurrentToken(current);
    results.setValid(current != 0 && current == params.getToken());
  });
}

kj::Promise<void> PrimService::unlock(
    capnp::CallContext<rpc::Keel::UnlockParams, rpc::Keel::UnlockResults> ctx) {
  return propose_only(ctx, storage::UnlockRequest{to_string(ctx.getParams().getName()),
                                                  ctx.getParams().getLeaseId()});
}

}  // namespace keel::agent
