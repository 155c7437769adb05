#include "agent/agent.hpp"

#include <spdlog/spdlog.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "agent/listener.hpp"
#include "agent/shard.hpp"
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
  std::shared_ptr<AgentCounts> counts = std::make_shared<AgentCounts>();
  std::unique_ptr<Shard> main_shard;                   // on the main thread (io)
  std::vector<std::unique_ptr<ServerThread>> threads;  // the other server threads
  std::unique_ptr<Listener> listener;
  size_t next_shard = 0;  // the listener deals connections out in turn
  std::string socket_path;
  Parts(const Config& c, kj::AsyncIoContext& i) : config(c), io(i) {}

  // A connection accepted on the main thread goes to the next shard; to another thread as
  // a duplicate of its socket (the stream, with its registration on this thread's epoll, is
  // dropped here).
  void dispatch(kj::Own<kj::AsyncIoStream> stream, const Peer& peer) {
    const size_t shard = next_shard++ % (threads.size() + 1);
    if (shard == 0) return main_shard->adopt(kj::mv(stream), peer);
    int fd = -1;
    std::string why = "the stream has no file descriptor";
    KJ_IF_MAYBE (f, stream->getFd()) {
      fd = fcntl(*f, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) why = std::string("dup: ") + std::strerror(errno);
    }
    if (fd < 0) {
      spdlog::warn("cannot hand a connection to server thread {} ({}); serving it on the first",
                   shard, why);
      return main_shard->adopt(kj::mv(stream), peer);
    }
    stream = nullptr;
    threads[shard - 1]->adopt_fd(kj::AutoCloseFd(fd), peer);
  }
};

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

  const auto threads = static_cast<uint32_t>(config.effective_server_threads());
  p->main_shard = std::make_unique<Shard>(config, *p->engine, *p->node, io, p->counts, 0, threads);
  for (uint32_t i = 1; i < threads; ++i) {
    p->threads.push_back(
        std::make_unique<ServerThread>(config, *p->engine, *p->node, p->counts, i, threads));
  }

  ListenerOptions lo;
  lo.path = config.effective_socket_path();
  lo.mode = config.socket_mode;
  lo.reader_options = client_reader_options(config.limits);
  lo.max_connections = config.max_connections;
  Parts* parts = p.get();
  auto listener = Listener::bind(lo, io, p->counts,
                                 [parts](kj::Own<kj::AsyncIoStream> stream, const Peer& peer) {
                                   parts->dispatch(kj::mv(stream), peer);
                                 });
  if (!listener) return std::move(listener).error();
  p->listener = std::move(listener).value();
  p->socket_path = lo.path;
  spdlog::info("serving {} on {} thread(s)", lo.path, threads);
  return std::unique_ptr<Agent>(new Agent(std::move(p)));
}

Agent::Agent(std::unique_ptr<Parts> parts) : p_(std::move(parts)) {}

Agent::~Agent() {
  if (p_->listener) p_->listener->close();
  p_->listener.reset();
  p_->threads.clear();  // each closes its shard on its own thread and joins
  if (p_->main_shard) p_->main_shard->close();
  if (p_->node) p_->node->stop();
  p_->node.reset();  // joins the node thread
  p_->main_shard.reset();
  p_->engine.reset();  // closes WiredTiger cleanly (checkpoint)
}

Status Agent::start() {
  p_->main_shard->start();
  for (auto& t : p_->threads)
    t->start();
  std::vector<Shard::Publisher> shards{p_->main_shard->publisher()};
  for (auto& t : p_->threads)
    shards.push_back(t->publisher());
  const primitives::State* state = &p_->prim_state;  // outlives the node
  auto on_applied = [shards, state](int64_t revision) {
    const int64_t epoch = state->epoch();
    for (const auto& publish : shards)
      publish(revision, epoch);
  };
  if (auto st = p_->node->start(on_applied); !st) return st;
  p_->listener->start();
  return ok_status();
}

kj::Promise<void> Agent::shutdown(uint64_t deadline_ms) {
  p_->listener->stop();
  const Error reason = make_error(ErrorCode::shutting_down, "the agent is shutting down");
  p_->main_shard->begin_shutdown(reason);
  for (auto& t : p_->threads)
    t->begin_shutdown(reason);
  p_->node->stop();  // finishes queued writes; their replies resolve below
  kj::Vector<kj::Promise<void>> drained;
  drained.add(p_->main_shard->drained());
  for (auto& t : p_->threads)
    drained.add(t->drained());
  // The deadline bounds a peer that does not read.
  return kj::joinPromises(drained.releaseAsArray())
      .exclusiveJoin(p_->io.provider->getTimer().afterDelay(deadline_ms * kj::MILLISECONDS));
}

const std::string& Agent::socket_path() const {
  return p_->socket_path;
}

}  // namespace keel::agent
