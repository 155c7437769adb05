#include "agent/kv_service.hpp"

#include <capnp/keel.capnp.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "agent/convert.hpp"

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

// Lease ids are validated here, before the command is replicated. Until the lease primitive
// exists no lease is ever granted, so any non-zero id is unknown.
Status check_leases(const Command& cmd) {
  auto check = [](int64_t lease) -> Status {
    if (lease == 0) return ok_status();
    return make_error(ErrorCode::lease_not_found, "lease " + std::to_string(lease) + " not found");
  };
  if (auto* put = std::get_if<storage::PutRequest>(&cmd)) return check(put->lease);
  if (auto* txn = std::get_if<storage::TxnRequest>(&cmd)) {
    for (const auto* ops : {&txn->success, &txn->failure}) {
      for (const auto& op : *ops) {
        if (auto* p = std::get_if<storage::PutRequest>(&op)) {
          if (auto st = check(p->lease); !st) return st;
        }
      }
    }
  }
  return ok_status();
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
    auto resp = read_range(*req, params.getRequest().getSkipCount());
    if (!resp) return fail(results, resp.error());
    to_rpc(*resp, results.initResponse());
    return kj::READY_NOW;
  }

  kj::Promise<void> put(PutContext ctx) override { return write_call<storage::PutResponse>(ctx); }
  kj::Promise<void> deleteRange(DeleteRangeContext ctx) override {
    return write_call<storage::DeleteRangeResponse>(ctx);
  }
  kj::Promise<void> txn(TxnContext ctx) override { return write_call<storage::TxnResponse>(ctx); }

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
    auto s = ctx.getResults().initStatus();
    s.setVersion(KEEL_VERSION);
    s.setWatchers(s_->hub_->size());
    s.setConnections(s_->connections_ ? s_->connections_() : 0);
    s.setPeerUid(peer_.uid);
    s.setPeerPid(peer_.pid);
    if (s_->engine_ == nullptr) return kj::READY_NOW;
    auto& store = s_->engine_->store();
    s.initHeader().setRevision(store.current_revision());
    s.setDataDir(s_->engine_->dir());
    s.setCompactRevision(store.compact_revision());
    s.setAppliedIndex(store.applied_index());
    auto stats = s_->engine_->stats();
    s.setLogSyncs(stats.log_syncs);
    s.setLogEntries(stats.log_entries);
    return kj::READY_NOW;
  }

 private:
  template <typename Results>
  static kj::Promise<void> fail(Results results, const Error& error) {
    to_rpc(error, results.initError());
    return kj::READY_NOW;
  }

  // A key-ordered page is never counted past what it scanned: counting the rest of a large
  // range would stall every connection and watch on this thread. count is exact when the
  // reply holds the whole range or with count_only; a reply cut by limit or page size counts
  // the keys it returns (README: where keel differs from etcd).
  Result<storage::RangeResponse> read_range(const storage::RangeRequest& req, bool skip_count) {
    auto& reader = *s_->reader_;
    size_t page = s_->limits_.max_response_bytes;
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
    auto paf = kj::newPromiseAndCrossThreadFulfiller<Result<CommandResult>>();
    auto fulfiller =
        std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<Result<CommandResult>>>>(
            kj::mv(paf.fulfiller));
    s_->node_->propose(std::move(command), [fulfiller](Result<CommandResult> r) {
      (*fulfiller)->fulfill(std::move(r));
    });
    return kj::mv(paf.promise);
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
    Command command(std::move(req).value());
    if (auto st = storage::validate(command, s_->limits_); !st) {
      return fail(ctx.getResults(), st.error());
    }
    if (auto st = check_leases(command); !st) return fail(ctx.getResults(), st.error());
    auto p = propose(std::move(command)).then([ctx](Result<CommandResult> r) mutable {
      auto results = ctx.getResults();
      if (!r) {
        to_rpc(r.error(), results.initError());
      } else {
        to_rpc(std::get<Response>(r.value()), results.initResponse());
      }
    });
    return track(kj::mv(p));
  }

  std::shared_ptr<KvService> s_;
  Peer peer_;
};

KvService::KvService(const Config& config, storage::Engine& engine, node::Node& node,
                     std::shared_ptr<WatchHub> hub, kj::Timer& timer)
    : config_(config),
      limits_(config.limits),
      engine_(&engine),
      node_(&node),
      reader_(engine.store().reader()),
      hub_(std::move(hub)),
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
  engine_ = nullptr;
  node_ = nullptr;
}

}  // namespace keel::agent
