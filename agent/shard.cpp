#include "agent/shard.hpp"

#include <algorithm>
#include <future>

#include "agent/kv_service.hpp"
#include "agent/prim_service.hpp"
#include "agent/watch_hub.hpp"
#include "cluster/node/node.hpp"

namespace keel::agent {

capnp::ReaderOptions client_reader_options(const storage::Limits& limits) {
  capnp::ReaderOptions options;
  size_t limit_bytes = std::max<size_t>(64u << 20, 4 * limits.max_request_bytes);
  options.traversalLimitInWords = limit_bytes / 8;
  return options;
}

Shard::Shard(const Config& config, storage::Engine& engine, node::Node& node,
             kj::AsyncIoContext& io, std::shared_ptr<AgentCounts> counts, uint32_t index,
             uint32_t count)
    : io_(io),
      counts_(std::move(counts)),
      reader_options_(client_reader_options(config.limits)),
      signal_(std::make_shared<RevisionSignal>()),
      prim_epoch_(std::make_shared<RevisionSignal>()),
      connections_(kj::heap<kj::TaskSet>(error_handler_)) {
  auto& timer = io.provider->getTimer();
  WatchHubOptions wo;
  wo.max_watchers = config.limits.max_watchers;
  wo.batch_bytes = config.watch_batch_bytes;
  wo.progress_interval_ms = config.watch_progress_interval_ms;
  hub_ = std::make_shared<WatchHub>(wo, engine.store(), signal_, timer, counts_);
  service_ = std::make_shared<KvService>(config, engine, node, hub_, timer, counts_);
  prim_ = std::make_shared<PrimService>(config, engine, node, prim_epoch_, timer, counts_);
  service_->set_primitives(prim_);
  service_->set_thread({index, count});
}

Shard::~Shard() {
  close();
}

void Shard::start() {
  hub_->start();
  prim_->start();
}

Shard::Publisher Shard::publisher() const {
  return [signal = signal_, epoch_signal = prim_epoch_](int64_t revision, int64_t epoch) {
    signal->publish(revision);
    epoch_signal->publish(epoch);
  };
}

void Shard::adopt(kj::Own<kj::AsyncIoStream> stream, const Peer& peer) {
  if (closed_) return;  // dropping the stream closes it
  auto conn = kj::heap<Connection>(kj::mv(stream), service_->connect(peer), reader_options_);
  counts_->connections++;
  auto done = conn->on_disconnect();
  connections_->add(
      done.attach(kj::mv(conn), kj::defer([counts = counts_] { counts->connections--; })));
}

void Shard::adopt_fd(kj::AutoCloseFd fd, const Peer& peer) {
  // The listener's accepted sockets are non-blocking (O_NONBLOCK is shared by the duplicate)
  // and the duplicate was made close-on-exec.
  adopt(io_.lowLevelProvider->wrapUnixSocketFd(kj::mv(fd),
                                               kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                                                   kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK),
        peer);
}

void Shard::begin_shutdown(const Error& reason) {
  hub_->cancel_all(reason);
  prim_->stop();
}

kj::Promise<void> Shard::drained() {
  service_->stop_waiting_for_compaction();
  // Replies to canceled watchers and drained calls still need a few event-loop turns to be
  // written.
  return service_->drained().then([] { return kj::evalLast([] {}); });
}

void Shard::close() {
  if (closed_) return;
  closed_ = true;
  connections_ = nullptr;  // drops every connection
  service_->close();
  prim_->close();
  hub_->close();
}

// ---- ServerThread ----

ServerThread::ServerThread(const Config& config, storage::Engine& engine, node::Node& node,
                           std::shared_ptr<AgentCounts> counts, uint32_t index, uint32_t count) {
  std::promise<void> ready;
  thread_ = std::thread([this, &config, &engine, &node, counts, index, count, &ready] {
    auto io = kj::setupAsyncIo();
    Shard shard(config, engine, node, io, counts, index, count);
    auto stop = kj::newPromiseAndFulfiller<void>();
    shard_ = &shard;
    stop_ = stop.fulfiller.get();
    executor_ = &kj::getCurrentThreadExecutor();
    ready.set_value();  // config, engine and node are not touched by reference after this
    stop.promise.wait(io.waitScope);
    shard.close();
  });
  ready.get_future().wait();
}

ServerThread::~ServerThread() {
  executor_->executeSync([this] {
    shard_->close();
    stop_->fulfill();
  });
  thread_.join();
}

void ServerThread::start() {
  executor_->executeSync([this] { shard_->start(); });
}

void ServerThread::adopt_fd(kj::AutoCloseFd fd, const Peer& peer) {
  executor_->executeSync([this, &fd, &peer] { shard_->adopt_fd(kj::mv(fd), peer); });
}

void ServerThread::begin_shutdown(const Error& reason) {
  executor_->executeSync([this, &reason] { shard_->begin_shutdown(reason); });
}

kj::Promise<void> ServerThread::drained() {
  return executor_->executeAsync([this] { return shard_->drained(); });
}

}  // namespace keel::agent
