#pragma once
// The Unix-socket Cap'n Proto server. Runs on the KJ event loop thread (keeld's main thread).
//
// Reads are served on this thread from its own WiredTiger read view; writes are handed to the
// node thread (Node::propose) and come back through a cross-thread promise fulfiller, so the
// two threads share no mutable state beyond the node's queue and RevisionSignal.
#include <kj/async-io.h>

#include <atomic>
#include <memory>
#include <mutex>

#include "agent/config.hpp"
#include "cluster/node/node.hpp"

namespace keel::agent {

// Carries "the store reached revision R" from the node thread to the KJ thread. publish() is
// called on the node thread; next() on the KJ thread. A publish with no waiter is kept (the
// latest revision), so no wake-up is lost.
class RevisionSignal {
 public:
  void publish(int64_t revision);
  // Resolves with the latest published revision once it is greater than `seen`.
  kj::Promise<int64_t> next(int64_t seen);

 private:
  std::mutex mu_;
  int64_t revision_ = 0;
  kj::Own<kj::CrossThreadPromiseFulfiller<int64_t>> waiter_;
};

class Server {
 public:
  Server(const Config& config, storage::Engine& engine, node::Node& node, RevisionSignal& signal,
         kj::AsyncIoContext& io);
  ~Server();

  // Accepts connections on `listener` until shutdown().
  void serve(kj::Own<kj::ConnectionReceiver> listener);

  // Stops accepting, cancels watches with shutting_down, stops the node (it finishes the
  // writes already queued) and resolves once every in-flight call has replied, or after
  // `deadline_ms`.
  kj::Promise<void> shutdown(uint64_t deadline_ms);

  struct Impl;

 private:
  kj::Own<Impl> impl_;
};

}  // namespace keel::agent
