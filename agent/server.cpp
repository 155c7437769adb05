#include "agent/server.hpp"

#include <capnp/keel.capnp.h>
#include <capnp/rpc-twoparty.h>
#include <spdlog/spdlog.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "agent/convert.hpp"

namespace keel::agent {

using storage::Command;
using storage::CommandResult;

void RevisionSignal::publish(int64_t revision) {
  kj::Own<kj::CrossThreadPromiseFulfiller<int64_t>> waiter;
  {
    std::lock_guard lock(mu_);
    revision_ = revision;
    waiter = kj::mv(waiter_);
  }
  if (waiter.get() != nullptr) waiter->fulfill(kj::cp(revision));
}

kj::Promise<int64_t> RevisionSignal::next(int64_t seen) {
  std::lock_guard lock(mu_);
  if (revision_ > seen) return revision_;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<int64_t>();
  waiter_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

namespace {

struct Peer {
  int64_t uid = -1;
  int64_t pid = -1;
};

class LoggingErrorHandler final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    if (e.getType() == kj::Exception::Type::DISCONNECTED) {
      spdlog::debug("connection task ended: {}", e.getDescription().cStr());
    } else {
      spdlog::warn("connection task failed: {}", e.getDescription().cStr());
    }
  }
};

struct Watch {
  int64_t id = 0;
  std::string key;
  std::string range_end;
  bool prev_kv = false;
  bool no_put = false;
  bool no_delete = false;
  bool progress_notify = false;
  rpc::Watcher::Client client;
  int64_t next_revision = 0;  // first revision not yet delivered
  bool busy = false;          // a send is in flight (flow control)
  bool progress_wanted = false;
  bool dead = false;
  explicit Watch(rpc::Watcher::Client c) : client(kj::mv(c)) {}
};

}  // namespace

struct Server::Impl {
  Impl(const Config& c, storage::Engine& e, node::Node& n, RevisionSignal& s, kj::AsyncIoContext& i)
      : config(c),
        limits(c.limits),
        store(e.store()),
        engine(e),
        node(n),
        signal(s),
        io(i),
        reader(e.store().reader()),
        tasks(error_handler) {}

  ~Impl() {
    inflight->on_zero = nullptr;
    for (auto& t : compaction_waiters)
      t.join();
  }

  const Config config;
  const storage::Limits limits;
  storage::MvccStore& store;
  storage::Engine& engine;
  node::Node& node;
  RevisionSignal& signal;
  kj::AsyncIoContext& io;
  std::unique_ptr<storage::Reader> reader;  // this thread's read view (reads and watches)

  // Watches. Declared before `tasks` so that connections (held by tasks) release their
  // watch handles while the map still exists.
  std::map<int64_t, std::shared_ptr<Watch>> watches;
  int64_t next_watch_id = 1;

  // Calls whose reply is not sent yet. Shared with the calls themselves: Cap'n Proto may
  // keep a call's promise alive until the event loop is destroyed, after this Impl.
  struct Inflight {
    uint64_t count = 0;
    std::function<void()> on_zero;  // set by shutdown(); cleared by ~Impl
  };
  std::shared_ptr<Inflight> inflight = std::make_shared<Inflight>();

  uint64_t connections = 0;
  bool stopping = false;
  kj::Own<kj::PromiseFulfiller<void>> drained;
  std::vector<std::thread> compaction_waiters;

  kj::Own<kj::ConnectionReceiver> listener;
  kj::Promise<void> accept_task = nullptr;
  kj::Promise<void> signal_task = nullptr;
  kj::Promise<void> progress_task = nullptr;
  LoggingErrorHandler error_handler;
  kj::TaskSet tasks;

  // ---- writes -------------------------------------------------------------------------
  kj::Promise<Result<CommandResult>> propose(Command command) {
    auto paf = kj::newPromiseAndCrossThreadFulfiller<Result<CommandResult>>();
    auto fulfiller =
        std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<Result<CommandResult>>>>(
            kj::mv(paf.fulfiller));
    node.propose(std::move(command),
                 [fulfiller](Result<CommandResult> r) { (*fulfiller)->fulfill(std::move(r)); });
    return kj::mv(paf.promise);
  }

  // Counts a call until its promise settles, so shutdown can wait for the replies.
  kj::Promise<void> track(kj::Promise<void> p) {
    ++inflight->count;
    return p.attach(kj::defer([counter = inflight] {
      if (--counter->count == 0 && counter->on_zero) counter->on_zero();
    }));
  }

  // Lease ids are validated here, before the command is replicated. Until the lease
  // primitive exists no lease is ever granted, so any non-zero id is unknown.
  Status check_leases(const Command& cmd) {
    auto check = [](int64_t lease) -> Status {
      if (lease == 0) return ok_status();
      return make_error(ErrorCode::lease_not_found,
                        "lease " + std::to_string(lease) + " not found");
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

  Status admit(const Command& cmd) {
    if (auto st = storage::validate(cmd, limits); !st) return st;
    return check_leases(cmd);
  }

  // ---- watches ------------------------------------------------------------------------
  Result<std::shared_ptr<Watch>> add_watch(rpc::WatchRequest::Reader r,
                                           rpc::Watcher::Client client) {
    if (stopping) return make_error(ErrorCode::shutting_down, "the agent is shutting down");
    if (watches.size() >= limits.max_watchers) {
      return make_error(ErrorCode::too_many_watchers,
                        "the agent has " + std::to_string(watches.size()) + " watchers; limit is " +
                            std::to_string(limits.max_watchers) + " (limits.max_watchers)");
    }
    int64_t start = r.getStartRevision();
    if (start < 0) {
      return make_error(ErrorCode::invalid_argument, "startRevision must not be negative");
    }
    int64_t compact = store.compact_revision();
    if (start != 0 && start <= compact) {
      Error e = make_error(ErrorCode::compacted, "required revision " + std::to_string(start) +
                                                     " has been compacted; oldest available is " +
                                                     std::to_string(compact + 1));
      e.compact_revision = compact;
      return e;
    }
    auto w = std::make_shared<Watch>(kj::mv(client));
    w->id = next_watch_id++;
    w->key = to_string(r.getKey());
    w->range_end = to_string(r.getRangeEnd());
    w->prev_kv = r.getPrevKv();
    w->no_put = r.getNoPut();
    w->no_delete = r.getNoDelete();
    w->progress_notify = r.getProgressNotify();
    w->next_revision = start != 0 ? start : store.current_revision() + 1;
    watches.emplace(w->id, w);
    tasks.add(kj::evalLater([this, w] { pump(w); }));
    return w;
  }

  void remove_watch(int64_t id) {
    auto it = watches.find(id);
    if (it == watches.end()) return;
    it->second->dead = true;
    watches.erase(it);
  }

  void send_progress(const std::shared_ptr<Watch>& w) {
    w->progress_wanted = false;
    auto req = w->client.progressRequest();
    req.initHeader().setRevision(w->next_revision - 1);
    w->busy = true;
    tasks.add(req.send().then(
        [this, w]() {
          w->busy = false;
          pump(w);
        },
        [this, w](kj::Exception&& e) { drop(w, e); }));
  }

  void drop(const std::shared_ptr<Watch>& w, const kj::Exception& e) {
    spdlog::debug("watch {} dropped: {}", w->id, e.getDescription().cStr());
    remove_watch(w->id);
  }

  void cancel_watch(const std::shared_ptr<Watch>& w, const Error& error) {
    auto req = w->client.canceledRequest();
    to_rpc(error, req.initError());
    tasks.add(req.send().ignoreResult().catch_([](kj::Exception&&) {}));
    remove_watch(w->id);
  }

  // Delivers what `w` has not seen, one batch at a time: the next batch is read from the
  // store only after the previous send was accepted by the stream's flow control, so a slow
  // watcher costs one batch of memory, never a backlog.
  void pump(const std::shared_ptr<Watch>& w) {
    while (!w->dead && !w->busy) {
      int64_t current = store.current_revision();
      if (w->next_revision > current) {
        if (w->progress_wanted) send_progress(w);
        return;
      }
      std::vector<storage::Event> events;
      auto upto =
          reader->events(w->next_revision, current, w->key, w->range_end, w->prev_kv,
                         config.watch_batch_bytes, [&](const storage::Event& e) {
                           if (e.type == storage::EventType::put ? !w->no_put : !w->no_delete) {
                             events.push_back(e);
                           }
                           return true;
                         });
      if (!upto) {
        cancel_watch(w, upto.error());
        return;
      }
      KEEL_ASSERT(*upto >= w->next_revision - 1, "events() went backwards");
      if (*upto < w->next_revision) return;  // nothing visible yet
      w->next_revision = *upto + 1;
      if (events.empty()) continue;
      std::vector<const storage::Event*> refs;
      refs.reserve(events.size());
      for (const auto& e : events)
        refs.push_back(&e);
      send_events(w, *upto, refs);
    }
  }

  static bool in_range(const Watch& w, const std::string& key) {
    if (w.range_end.empty()) return key == w.key;
    if (key < w.key) return false;
    return w.range_end == std::string(1, '\0') || key < w.range_end;
  }

  void send_events(const std::shared_ptr<Watch>& w, int64_t upto,
                   const std::vector<const storage::Event*>& events) {
    auto req = w->client.eventsRequest();
    req.initHeader().setRevision(upto);
    auto list = req.initEvents(events.size());
    for (size_t i = 0; i < events.size(); ++i) {
      const storage::Event& e = *events[i];
      list[i].setType(e.type == storage::EventType::del ? rpc::EventType::DELETE
                                                        : rpc::EventType::PUT);
      to_rpc(e.kv, list[i].initKv());
      // A shared read fetches prev_kv when any watcher of the group wants it.
      if (w->prev_kv && e.prev_kv) to_rpc(*e.prev_kv, list[i].initPrevKv());
    }
    w->busy = true;
    tasks.add(req.send().then(
        [this, w]() {
          w->busy = false;
          pump(w);
        },
        [this, w](kj::Exception&& e) { drop(w, e); }));
  }

  // Watchers idle at the same next revision (the usual case: all caught up) share one read
  // of the new history, filtered per watcher here, instead of one store scan each.
  void pump_all() {
    int64_t current = store.current_revision();
    std::map<int64_t, std::vector<std::shared_ptr<Watch>>> idle_at;
    std::vector<std::shared_ptr<Watch>> caught_up;  // may owe a progress notification
    for (auto& [id, w] : watches) {
      if (w->busy || w->dead) continue;
      if (w->next_revision <= current) {
        idle_at[w->next_revision].push_back(w);
      } else if (w->progress_wanted) {
        caught_up.push_back(w);
      }
    }
    for (auto& w : caught_up)
      pump(w);
    for (auto& [from, group] : idle_at) {
      if (group.size() == 1) {
        pump(group[0]);
        continue;
      }
      bool want_prev = false;
      for (auto& w : group)
        want_prev = want_prev || w->prev_kv;
      std::vector<storage::Event> events;
      const std::string all(1, '\0');
      auto upto = reader->events(from, current, all, all, want_prev, config.watch_batch_bytes,
                                 [&](const storage::Event& e) {
                                   events.push_back(e);
                                   return true;
                                 });
      if (!upto) {
        for (auto& w : group)
          cancel_watch(w, upto.error());
        continue;
      }
      for (auto& w : group) {
        if (w->dead || w->busy || w->next_revision != from) continue;
        std::vector<const storage::Event*> mine;
        for (const auto& e : events) {
          bool wanted = e.type == storage::EventType::put ? !w->no_put : !w->no_delete;
          if (wanted && in_range(*w, e.kv.key)) mine.push_back(&e);
        }
        w->next_revision = *upto + 1;
        if (!mine.empty()) {
          send_events(w, *upto, mine);
        } else {
          pump(w);  // the shared read stopped at batch_bytes, or a progress is wanted
        }
      }
    }
  }

  kj::Promise<void> signal_loop(int64_t seen) {
    return signal.next(seen).then([this](int64_t revision) {
      pump_all();
      return signal_loop(revision);
    });
  }

  kj::Promise<void> progress_loop() {
    return io.provider->getTimer()
        .afterDelay(config.watch_progress_interval_ms * kj::MILLISECONDS)
        .then([this] {
          for (auto& [id, w] : watches) {
            if (w->progress_notify) w->progress_wanted = true;
          }
          pump_all();
          return progress_loop();
        });
  }

  // ---- connections --------------------------------------------------------------------
  capnp::ReaderOptions reader_options() const {
    capnp::ReaderOptions options;
    // Requests above max_request_bytes get a typed error; far larger messages are refused
    // by Cap'n Proto before they are read, and that connection is closed.
    size_t limit_bytes = std::max<size_t>(64u << 20, 4 * limits.max_request_bytes);
    options.traversalLimitInWords = limit_bytes / 8;
    return options;
  }

  kj::Promise<void> accept_loop();
};

using ServerImpl = Server::Impl;

namespace {

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
  WatchHandleImpl(ServerImpl& impl, std::weak_ptr<Watch> watch)
      : impl_(impl), watch_(std::move(watch)) {}
  ~WatchHandleImpl() {
    if (auto w = watch_.lock()) impl_.remove_watch(w->id);
  }

 protected:
  kj::Promise<void> cancel(CancelContext) override {
    if (auto w = watch_.lock()) impl_.remove_watch(w->id);
    return kj::READY_NOW;
  }
  kj::Promise<void> requestProgress(RequestProgressContext) override {
    if (auto w = watch_.lock()) {
      w->progress_wanted = true;
      impl_.pump(w);
    }
    return kj::READY_NOW;
  }

 private:
  ServerImpl& impl_;
  std::weak_ptr<Watch> watch_;
};

class KeelImpl final : public rpc::Keel::Server {
 public:
  KeelImpl(ServerImpl& impl, Peer peer) : impl_(impl), peer_(peer) {}

 protected:
  kj::Promise<void> range(RangeContext ctx) override {
    auto params = ctx.getParams();
    auto results = ctx.getResults();
    if (auto e = oversized(params, impl_.limits.max_request_bytes)) {
      return fail(results, *e);
    }
    auto req = from_rpc(params.getRequest());
    if (!req) return fail(results, req.error());
    if (auto st = storage::validate(*req, impl_.limits); !st) return fail(results, st.error());
    auto resp = impl_.reader->range(*req, impl_.limits.max_response_bytes,
                                    params.getRequest().getSkipCount());
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
    storage::CompactRequest req{params.getRequest().getRevision()};
    bool physical = params.getRequest().getPhysical();
    auto p = impl_.propose(Command(req))
                 .then([this, ctx, physical](Result<CommandResult> r) mutable -> kj::Promise<void> {
                   auto results = ctx.getResults();
                   if (!r) {
                     to_rpc(r.error(), results.initError());
                     return kj::READY_NOW;
                   }
                   results.initResponse().initHeader().setRevision(
                       std::get<storage::CompactResponse>(r.value()).revision);
                   if (!physical) return kj::READY_NOW;
                   // Physical deletion runs on the store's compaction thread; wait for it off the
                   // event loop.
                   auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
                   auto f = std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(
                       kj::mv(paf.fulfiller));
                   impl_.compaction_waiters.emplace_back([this, f] {
                     impl_.store.wait_compaction_idle();
                     (*f)->fulfill();
                   });
                   return kj::mv(paf.promise);
                 });
    return impl_.track(kj::mv(p));
  }

  kj::Promise<void> watch(WatchContext ctx) override {
    auto params = ctx.getParams();
    auto results = ctx.getResults();
    if (auto e = oversized(params, impl_.limits.max_request_bytes)) {
      return fail(results, *e);
    }
    auto r = params.getRequest();
    storage::RangeRequest range;
    range.key = to_string(r.getKey());
    range.range_end = to_string(r.getRangeEnd());
    if (auto st = storage::validate(range, impl_.limits); !st) return fail(results, st.error());
    auto w = impl_.add_watch(r, params.getWatcher());
    if (!w) return fail(results, w.error());
    results.setWatchId((*w)->id);
    results.setHandle(kj::heap<WatchHandleImpl>(impl_, *w));
    spdlog::debug("watch {} created for uid {} pid {} from revision {}", (*w)->id, peer_.uid,
                  peer_.pid, (*w)->next_revision);
    return kj::READY_NOW;
  }

  kj::Promise<void> status(StatusContext ctx) override {
    auto s = ctx.getResults().initStatus();
    s.initHeader().setRevision(impl_.store.current_revision());
    s.setVersion(KEEL_VERSION);
    s.setDataDir(impl_.engine.dir());
    s.setCompactRevision(impl_.store.compact_revision());
    s.setAppliedIndex(impl_.store.applied_index());
    auto stats = impl_.engine.stats();
    s.setLogSyncs(stats.log_syncs);
    s.setLogEntries(stats.log_entries);
    s.setWatchers(impl_.watches.size());
    s.setConnections(impl_.connections);
    s.setPeerUid(peer_.uid);
    s.setPeerPid(peer_.pid);
    return kj::READY_NOW;
  }

 private:
  template <typename Results>
  static kj::Promise<void> fail(Results results, const Error& error) {
    to_rpc(error, results.initError());
    return kj::READY_NOW;
  }

  // Put, DeleteRange and Txn: size check, conversion, validation, then the node.
  template <typename Response, typename Context>
  kj::Promise<void> write_call(Context ctx) {
    auto params = ctx.getParams();
    if (auto e = oversized(params, impl_.limits.max_request_bytes)) {
      return fail(ctx.getResults(), *e);
    }
    auto req = from_rpc(params.getRequest());
    if (!req) return fail(ctx.getResults(), req.error());
    return write<Response>(ctx, Command(std::move(req).value()));
  }

  template <typename Response, typename Context>
  kj::Promise<void> write(Context ctx, Command command) {
    if (auto st = impl_.admit(command); !st) return fail(ctx.getResults(), st.error());
    auto p = impl_.propose(std::move(command)).then([ctx](Result<CommandResult> r) mutable {
      auto results = ctx.getResults();
      if (!r) {
        to_rpc(r.error(), results.initError());
      } else {
        to_rpc(std::get<Response>(r.value()), results.initResponse());
      }
    });
    return impl_.track(kj::mv(p));
  }

  ServerImpl& impl_;
  Peer peer_;
};

class Connection {
 public:
  Connection(kj::Own<kj::AsyncIoStream> stream, capnp::Capability::Client bootstrap,
             capnp::ReaderOptions options)
      : stream_(kj::mv(stream)),
        network_(*stream_, capnp::rpc::twoparty::Side::SERVER, options),
        rpc_(capnp::makeRpcServer(network_, kj::mv(bootstrap))) {}
  kj::Promise<void> on_disconnect() { return network_.onDisconnect(); }

 private:
  kj::Own<kj::AsyncIoStream> stream_;
  capnp::TwoPartyVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc_;
};

}  // namespace

kj::Promise<void> Server::Impl::accept_loop() {
  return listener->acceptAuthenticated().then([this](kj::AuthenticatedStream&& accepted) {
    Peer peer;
    KJ_IF_MAYBE (local,
                 kj::dynamicDowncastIfAvailable<kj::LocalPeerIdentity>(*accepted.peerIdentity)) {
      auto creds = local->getCredentials();
      KJ_IF_MAYBE (pid, creds.pid) {
        peer.pid = *pid;
      }
      KJ_IF_MAYBE (uid, creds.uid) {
        peer.uid = *uid;
      }
    }
    spdlog::debug("connection from uid {} pid {}", peer.uid, peer.pid);
    auto conn = kj::heap<Connection>(kj::mv(accepted.stream), kj::heap<KeelImpl>(*this, peer),
                                     reader_options());
    ++connections;
    auto done = conn->on_disconnect();
    tasks.add(done.attach(kj::mv(conn), kj::defer([this] { --connections; })));
    return accept_loop();
  });
}

Server::Server(const Config& config, storage::Engine& engine, node::Node& node,
               RevisionSignal& signal, kj::AsyncIoContext& io)
    : impl_(kj::heap<Impl>(config, engine, node, signal, io)) {}

Server::~Server() = default;

void Server::serve(kj::Own<kj::ConnectionReceiver> listener) {
  impl_->listener = kj::mv(listener);
  impl_->accept_task = impl_->accept_loop().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("accepting connections failed: {}", e.getDescription().cStr());
  });
  impl_->signal_task = impl_->signal_loop(impl_->store.current_revision()).eagerlyEvaluate(nullptr);
  if (impl_->config.watch_progress_interval_ms > 0) {
    impl_->progress_task = impl_->progress_loop().eagerlyEvaluate(nullptr);
  }
}

kj::Promise<void> Server::shutdown(uint64_t deadline_ms) {
  auto& s = *impl_;
  s.stopping = true;
  s.accept_task = nullptr;
  s.listener = nullptr;
  s.progress_task = nullptr;
  Error bye = make_error(ErrorCode::shutting_down, "the agent is shutting down");
  std::vector<std::shared_ptr<Watch>> all;
  for (auto& [id, w] : s.watches)
    all.push_back(w);
  for (auto& w : all)
    s.cancel_watch(w, bye);
  s.node.stop();  // finishes queued writes; their replies resolve below
  s.signal_task = nullptr;
  kj::Promise<void> drained = kj::READY_NOW;
  if (s.inflight->count > 0) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    s.drained = kj::mv(paf.fulfiller);
    drained = kj::mv(paf.promise);
    s.inflight->on_zero = [&s] { s.drained->fulfill(); };
  }
  // Replies to canceled watchers and drained calls still need a few event-loop turns to be
  // written; the deadline bounds a peer that does not read.
  return drained.then([] { return kj::evalLast([] {}); })
      .exclusiveJoin(s.io.provider->getTimer().afterDelay(deadline_ms * kj::MILLISECONDS));
}

}  // namespace keel::agent
