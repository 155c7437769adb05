#pragma once
// The primitives service: leases and locks for the clients of this agent, on the KJ
// event-loop thread. The replicated rules live in primitives/state.hpp; this is the agent's
// part of them:
//  - Renewal: every lease a client holds as a `Lease` or `LockHandle` capability is renewed
//    by the agent, in ONE LeaseRenewRequest per lease.renew_tick_ms for all leases due
//    (each after a third of its TTL), so the leader sees one message per agent, not per
//    lease.
//  - Sessions: a session lease (the default, and every lock's own lease) is revoked as soon
//    as its capability is dropped; a client that dies closes its socket, which drops every
//    capability it held, so its locks pass on at once (Chubby's behaviour).
//  - Waiting: a queued lock call waits for the replicated state to name it holder, checked
//    whenever the primitives' rows change on this replica (the applied epoch), so a hand-off
//    costs one apply, and exactly the next waiter wakes.
//
// Lifetime: held by std::shared_ptr; capabilities hold counted references. After close()
// every call fails with shutting_down and nothing touches the node or the engine.
#include <capnp/keel.capnp.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "agent/config.hpp"
#include "agent/counts.hpp"
#include "agent/watch_hub.hpp"
#include "cluster/node/node.hpp"

namespace keel::agent {

// A lock or semaphore slot held through a capability: told when the replicated state no
// longer names it (PrimService::on_epoch).
class Held {
 public:
  virtual ~Held() { wake(); }
  virtual bool still_held(storage::Reader& reader) = 0;
  bool is_lost() const { return lost_; }
  // The replicated state no longer names this holder (or it let go): wakes when_lost().
  void mark_lost() {
    lost_ = true;
    wake();
  }
  // Resolves once lost (at once if it already is).
  kj::Promise<void> when_lost() {
    if (lost_) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiters_.push_back(kj::mv(paf.fulfiller));
    return kj::mv(paf.promise);
  }

 private:
  void wake() {
    for (auto& w : waiters_)
      w->fulfill();
    waiters_.clear();
  }
  bool lost_ = false;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;
};

class LockHandleImpl;

class PrimService : public std::enable_shared_from_this<PrimService> {
 public:
  // `epoch` is published (by the node thread) whenever the primitives' rows change.
  // `counts` is shared by every server thread's service (limits.max_leases_per_agent and the
  // renewal figures of `status` are agent-wide; each thread sends its own batched renewal).
  PrimService(const Config& config, storage::Engine& engine, node::Node& node,
              std::shared_ptr<RevisionSignal> epoch, kj::Timer& timer,
              std::shared_ptr<AgentCounts> counts);
  ~PrimService();
  PrimService(const PrimService&) = delete;
  PrimService& operator=(const PrimService&) = delete;

  void start();
  // Shutdown begins: queued lock, semaphore and campaign calls end with shutting_down, and
  // renewal stops (the leases live on for their TTL, as if the host had died).
  void stop();
  void close();

  // The Keel methods (KvService's capability forwards them here).
  kj::Promise<void> lease_grant(
      capnp::CallContext<rpc::Keel::LeaseGrantParams, rpc::Keel::LeaseGrantResults> ctx);
  kj::Promise<void> lease_revoke(
      capnp::CallContext<rpc::Keel::LeaseRevokeParams, rpc::Keel::LeaseRevokeResults> ctx);
  kj::Promise<void> lease_time_to_live(
      capnp::CallContext<rpc::Keel::LeaseTimeToLiveParams, rpc::Keel::LeaseTimeToLiveResults> ctx);
  kj::Promise<void> lease_list(
      capnp::CallContext<rpc::Keel::LeaseListParams, rpc::Keel::LeaseListResults> ctx);
  kj::Promise<void> lease_keep_alive(
      capnp::CallContext<rpc::Keel::LeaseKeepAliveParams, rpc::Keel::LeaseKeepAliveResults> ctx);
  kj::Promise<void> lock(capnp::CallContext<rpc::Keel::LockParams, rpc::Keel::LockResults> ctx);
  kj::Promise<void> check_fence(
      capnp::CallContext<rpc::Keel::CheckFenceParams, rpc::Keel::CheckFenceResults> ctx);
  kj::Promise<void> unlock(
      capnp::CallContext<rpc::Keel::UnlockParams, rpc::Keel::UnlockResults> ctx);
  kj::Promise<void> campaign(
      capnp::CallContext<rpc::Keel::CampaignParams, rpc::Keel::CampaignResults> ctx);
  kj::Promise<void> leader(
      capnp::CallContext<rpc::Keel::LeaderParams, rpc::Keel::LeaderResults> ctx);
  kj::Promise<void> sem_acquire(
      capnp::CallContext<rpc::Keel::SemAcquireParams, rpc::Keel::SemAcquireResults> ctx);
  kj::Promise<void> sem_release(
      capnp::CallContext<rpc::Keel::SemReleaseParams, rpc::Keel::SemReleaseResults> ctx);
  kj::Promise<void> sem_holders(
      capnp::CallContext<rpc::Keel::SemHoldersParams, rpc::Keel::SemHoldersResults> ctx);

  // ---- used by the capabilities (prim_service.cpp) ----
  bool closed() const { return node_ == nullptr; }
  // Starts (or adds a holder to) renewing lease `id`.
  void retain(int64_t id, int64_t ttl_ms);
  // Drops a holder; the last one stops the renewal, and revokes the lease when `revoke`.
  void release(int64_t id, bool revoke);
  // Resolves when lease `id` has ended (revoked, expired or found gone by a renewal).
  kj::Promise<void> lease_ended(int64_t id);
  kj::Promise<Result<storage::CommandResult>> propose(storage::Command command);
  // Runs a proposal in the background (its outcome is logged, not returned).
  void propose_detached(storage::Command command);
  void cancel_wait(uint64_t wait_id) { waits_.erase(wait_id); }
  void add_holder(Held* h) { holders_.insert(h); }
  void remove_holder(Held* h) { holders_.erase(h); }
  storage::Reader& reader() { return *reader_; }
  struct Stats {
    uint64_t leases_renewing = 0;
    uint64_t renew_messages = 0;
    uint64_t leases_renewed = 0;
  };
  Stats stats() const {  // the agent's, summed over its server threads
    return Stats{counts_->leases_renewing.load(), counts_->renew_messages.load(),
                 counts_->leases_renewed.load()};
  }

 private:
  struct Renewed {
    int64_t ttl_ms = 0;
    uint32_t refs = 0;
    kj::TimePoint last = kj::origin<kj::TimePoint>();
    bool in_flight = false;
  };
  // A queued lock or semaphore call: `ready` reads the replica and gives the token (1 for
  // a semaphore slot) once the state machine has handed it over.
  using Ready = std::function<std::optional<int64_t>(storage::Reader&)>;
  struct Wait {
    Ready ready;
    kj::Own<kj::PromiseFulfiller<int64_t>> acquired;
  };
  // Registers a wait (its id in *wait_id, for cancel_wait); resolves with ready()'s value,
  // or nullptr after timeout_ms (0 = never).
  kj::Promise<kj::Maybe<int64_t>> wait_for(uint64_t* wait_id, Ready ready, int64_t timeout_ms);

  struct LockArgs {
    std::string name;
    int64_t lease = 0;  // 0: a session lease of ttl_ms, owned by the handle
    int64_t ttl_ms = 0;
    bool wait = true;
    int64_t timeout_ms = 0;
    int64_t delay_ms = -1;
  };
  // A plain struct, not Result (GCC 12's false -Wmaybe-uninitialized in kj's ExceptionOr).
  struct LockOutcome {
    bool ok = true;
    Error error;
    int64_t lease = 0;
    int64_t token = 0;
    kj::Own<LockHandleImpl> handle;  // null when not acquired (tryLock)
  };
  kj::Promise<LockOutcome> acquire_lock(LockArgs args);

  template <typename Context>
  kj::Promise<void> propose_only(Context ctx, storage::Command command);
  template <typename Context, typename Read>
  kj::Promise<void> after_read_index(Context ctx, Read read);

  kj::Promise<void> renew_loop();
  void renew_due();
  kj::Promise<void> epoch_loop();
  void on_epoch();
  void lease_gone(int64_t id);
  Result<int64_t> new_lease_id_checked(int64_t ttl_ms);
  kj::Promise<Result<int64_t>> grant(int64_t ttl_ms);  // a new lease id, granted

  const Config config_;
  const storage::Limits limits_;
  storage::Engine* engine_;  // null after close()
  node::Node* node_;         // null after close()
  std::unique_ptr<storage::Reader> reader_;
  std::shared_ptr<RevisionSignal> epoch_;
  kj::Timer& timer_;
  std::mt19937_64 rng_;  // lease ids (not part of the replicated state: the id is in the entry)
  std::map<int64_t, Renewed> renewed_;
  std::shared_ptr<AgentCounts> counts_;
  CountShare renewed_share_{counts_->leases_renewing};  // kept equal to renewed_.size()
  std::multimap<int64_t, kj::Own<kj::PromiseFulfiller<void>>> end_waiters_;
  std::map<uint64_t, Wait> waits_;
  uint64_t next_wait_ = 1;
  std::set<Held*> holders_;
  // propose_detached's queue (unlocks and revokes of dropped handles), at most
  // kMaxBackgroundInFlight proposals at a time.
  static constexpr size_t kMaxBackgroundInFlight = 256;
  void pump_background();
  std::deque<storage::Command> background_;
  size_t background_in_flight_ = 0;
  int64_t seen_epoch_ = 0;
  bool stopping_ = false;
  kj::Promise<void> renew_task_ = nullptr;
  kj::Promise<void> epoch_task_ = nullptr;
  kj::Own<kj::TaskSet> tasks_;
  struct ErrorHandler;
  kj::Own<ErrorHandler> error_handler_;
};

}  // namespace keel::agent
