#include "agent/agent.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/kv_service.hpp"
#include "agent/listener.hpp"
#include "agent/prim_service.hpp"
#include "agent/watch_hub.hpp"
#include "cluster/node/node.hpp"
#include "primitives/state.hpp"

namespace keel::agent {

// Declared in construction order; ~Agent tears down explicitly in the reverse order.
struct Agent::Parts {
  Config config;
  kj::AsyncIoContext& io;
  primitives::State prim_state;  // the store's StateExtension: outlives the engine
  std::unique_ptr<storage::Engine> engine;
  std::unique_ptr<node::Node> node;
  std::shared_ptr<RevisionSignal> signal = std::make_shared<RevisionSignal>();
  std::shared_ptr<WatchHub> hub;
  std::shared_ptr<RevisionSignal> prim_epoch = std::make_shared<RevisionSignal>();
  std::shared_ptr<PrimService> prim;
  std::shared_ptr<KvService> service;
  std::unique_ptr<Listener> listener;
  std::string socket_path;
  Parts(const Config& c, kj::AsyncIoContext& i) : config(c), io(i) {}
};

namespace {

capnp::ReaderOptions reader_options(const storage::Limits& limits) {
  capnp::ReaderOptions options;
  // Requests above max_request_bytes get a typed error; far larger messages are refused by
  // Cap'n Proto before they are read, and that connection is closed.
  size_t limit_bytes = std::max<size_t>(64u << 20, 4 * limits.max_request_bytes);
  options.traversalLimitInWords = limit_bytes / 8;
  return options;
}

}  // namespace

Result<std::unique_ptr<Agent>> Agent::open(const Config& config, kj::AsyncIoContext& io) {
  auto p = std::make_unique<Parts>(config, io);

  storage::EngineOptions eo;
  eo.dir = config.data_dir;
  eo.cache_size_mb = config.cache_size_mb;
  eo.log_file_max_mb = config.log_file_max_mb;
  eo.checkpoint_interval_ms = config.checkpoint_interval_ms;
  eo.checkpoint_log_mb = config.checkpoint_log_mb;
  eo.compaction_batch_rows = config.compaction_batch_rows;
  // Ranges inside a txn are paged like top-level ones. Part of apply, so every replica must
  // use the same value.
  eo.txn_range_max_bytes = config.limits.max_response_bytes;
  eo.extension = &p->prim_state;
  auto engine = storage::open_engine(eo);
  if (!engine) return std::move(engine).error();
  p->engine = std::move(engine).value();

  auto no = node_options(config);
  if (!no) return std::move(no).error();
  auto node = node::Node::open(*p->engine, std::move(no).value());
  if (!node) return std::move(node).error();
  p->node = std::move(node).value();
  auto& store = p->engine->store();
  spdlog::info("data dir {}: revision {}, compact revision {}, applied index {}", config.data_dir,
               store.current_revision(), store.compact_revision(), store.applied_index());

  WatchHubOptions wo;
  wo.max_watchers = config.limits.max_watchers;
  wo.batch_bytes = config.watch_batch_bytes;
  wo.progress_interval_ms = config.watch_progress_interval_ms;
  p->hub = std::make_shared<WatchHub>(wo, store, p->signal, io.provider->getTimer());

  p->service =
      std::make_shared<KvService>(config, *p->engine, *p->node, p->hub, io.provider->getTimer());
  p->prim = std::make_shared<PrimService>(config, *p->engine, *p->node, p->prim_epoch,
                                          io.provider->getTimer());
  p->service->set_primitives(p->prim);

  ListenerOptions lo;
  lo.path = config.effective_socket_path();
  lo.mode = config.socket_mode;
  lo.reader_options = reader_options(config.limits);
  lo.max_connections = config.max_connections;
  std::weak_ptr<KvService> weak = p->service;
  auto listener = Listener::bind(lo, io, [weak](const Peer& peer) -> capnp::Capability::Client {
    if (auto s = weak.lock()) return s->connect(peer);
    return KJ_EXCEPTION(DISCONNECTED, "the agent is shutting down");
  });
  if (!listener) return std::move(listener).error();
  p->listener = std::move(listener).value();
  p->socket_path = lo.path;
  Listener* l = p->listener.get();
  p->service->set_connection_count([l] { return l->connections(); });
  return std::unique_ptr<Agent>(new Agent(std::move(p)));
}

Agent::Agent(std::unique_ptr<Parts> parts) : p_(std::move(parts)) {}

Agent::~Agent() {
  // The connection-count hook names the listener: drop it before the listener goes.
  if (p_->service) p_->service->set_connection_count(nullptr);
  if (p_->listener) p_->listener->close();
  p_->listener.reset();
  if (p_->service) p_->service->close();
  if (p_->prim) p_->prim->close();
  if (p_->hub) p_->hub->close();
  if (p_->node) p_->node->stop();
  p_->node.reset();    // joins the node thread
  p_->engine.reset();  // closes WiredTiger cleanly (checkpoint)
}

Status Agent::start() {
  p_->hub->start();
  p_->prim->start();
  std::shared_ptr<RevisionSignal> signal = p_->signal;
  std::shared_ptr<RevisionSignal> epoch = p_->prim_epoch;
  const primitives::State* state = &p_->prim_state;
  auto on_applied = [signal, epoch, state](int64_t revision) {
    signal->publish(revision);
    epoch->publish(state->epoch());
  };
  if (auto st = p_->node->start(on_applied); !st) return st;
  p_->listener->start();
  return ok_status();
}

kj::Promise<void> Agent::shutdown(uint64_t deadline_ms) {
  p_->listener->stop();
  p_->hub->cancel_all(make_error(ErrorCode::shutting_down, "the agent is shutting down"));
  p_->prim->stop();  // queued lock calls answer shutting_down instead of holding shutdown up
  p_->node->stop();  // finishes queued writes; their replies resolve below
  p_->service->stop_waiting_for_compaction();
  // Replies to canceled watchers and drained calls still need a few event-loop turns to be
  // written; the deadline bounds a peer that does not read.
  return p_->service->drained()
      .then([] { return kj::evalLast([] {}); })
      .exclusiveJoin(p_->io.provider->getTimer().afterDelay(deadline_ms * kj::MILLISECONDS));
}

const std::string& Agent::socket_path() const {
  return p_->socket_path;
}

}  // namespace keel::agent
