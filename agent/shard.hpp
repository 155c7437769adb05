#pragma once
// A server thread's serving stack: the watch hub, the KV and primitives services and the
// client connections the thread hosts, on one KJ event loop with its own WiredTiger read
// views and watch state. keeld runs `server.threads` of them (agent/agent.hpp): the first
// on the main thread, each other one on a ServerThread; the listener deals accepted
// connections out among them in turn. A connection stays on its thread for its life. Every
// thread's writes, reads that need the node, and primitives go to the one node; limits and
// status counts are agent-wide (agent/counts.hpp).
//
// Threads: a Shard is used only on its own event-loop thread, except publisher().
#include <capnp/message.h>
#include <kj/async-io.h>
#include <kj/io.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "agent/config.hpp"
#include "agent/counts.hpp"
#include "agent/listener.hpp"
#include "agent/peer.hpp"
#include "cluster/model/result.hpp"

namespace keel::storage {
class Engine;
}
namespace keel::node {
class Node;
}

namespace keel::agent {

class KvService;
class PrimService;
class RevisionSignal;
class WatchHub;

class Shard {
 public:
  // `index` of `count`: which server thread this is (for `status`).
  Shard(const Config& config, storage::Engine& engine, node::Node& node, kj::AsyncIoContext& io,
        std::shared_ptr<AgentCounts> counts, uint32_t index, uint32_t count);
  ~Shard();  // close()
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  void start();  // the hub follows the store; lease renewal and lock waits begin

  // Tells this shard that the store reached `revision` and the primitives' rows `epoch`.
  // For the node thread's apply hook: callable on any thread, and harmless after the shard
  // is gone (it holds the signals, not the shard).
  using Publisher = std::function<void(int64_t revision, int64_t epoch)>;
  Publisher publisher() const;

  // Serves a connection from `peer`, counted in AgentCounts::connections while it is open.
  void adopt(kj::Own<kj::AsyncIoStream> stream, const Peer& peer);
  // The same for a connected Unix socket handed over from another thread (takes the fd).
  void adopt_fd(kj::AutoCloseFd fd, const Peer& peer);

  // Shutdown, first step: every watch is canceled with `reason` and no new one opens; queued
  // lock, semaphore and campaign calls end with shutting_down; renewal stops.
  void begin_shutdown(const Error& reason);
  // Second step, once the node has stopped: `compact --physical` waiters are answered;
  // resolves when every call counted so far has replied.
  kj::Promise<void> drained();
  // Drops every connection; the services and the hub never touch the engine or the node
  // again. Idempotent.
  void close();

 private:
  kj::AsyncIoContext& io_;
  std::shared_ptr<AgentCounts> counts_;
  capnp::ReaderOptions reader_options_;
  std::shared_ptr<RevisionSignal> signal_;
  std::shared_ptr<RevisionSignal> prim_epoch_;
  std::shared_ptr<WatchHub> hub_;
  std::shared_ptr<PrimService> prim_;
  std::shared_ptr<KvService> service_;
  ConnectionErrors error_handler_;
  kj::Own<kj::TaskSet> connections_;  // one task per connection
  bool closed_ = false;
};

// A Shard on a thread of its own, with its own KJ event loop.
class ServerThread {
 public:
  // Starts the thread and builds its shard there; returns once the shard exists.
  ServerThread(const Config& config, storage::Engine& engine, node::Node& node,
               std::shared_ptr<AgentCounts> counts, uint32_t index, uint32_t count);
  // Closes the shard on its thread, ends the loop and joins the thread.
  ~ServerThread();
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;

  // The calls below run the Shard call of the same name on the thread: start, adopt_fd and
  // begin_shutdown wait for it to return; drained resolves on the calling thread.
  void start();
  Shard::Publisher publisher() const { return shard_->publisher(); }  // any thread
  void adopt_fd(kj::AutoCloseFd fd, const Peer& peer);
  void begin_shutdown(const Error& reason);
  kj::Promise<void> drained();

 private:
  std::thread thread_;
  // Set by the thread before the constructor returns; valid until the destructor.
  const kj::Executor* executor_ = nullptr;
  Shard* shard_ = nullptr;
  kj::PromiseFulfiller<void>* stop_ = nullptr;  // the thread's own; fulfilled on the thread
};

// The reader limits of a client connection: requests above limits.max_request_bytes get a
// typed error; far larger messages are refused by Cap'n Proto before they are read, and
// that connection is closed.
capnp::ReaderOptions client_reader_options(const storage::Limits& limits);

}  // namespace keel::agent
