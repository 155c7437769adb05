#pragma once
// The one place that wires keeld's parts and orders their start-up and shutdown:
//
//   open:     WiredTiger engine -> node (recovers) -> the server threads' stacks (shards:
//             watch hub, KV and primitives services; the first on this thread, the rest
//             on threads of their own, agent/shard.hpp) -> listener (binds the socket)
//   start():  every shard -> node thread and peer listener (its apply hook feeds every
//             shard's hub) -> accepting (connections dealt out to the shards in turn)
//   shutdown: stop accepting -> every shard cancels its watches with shutting_down -> stop
//             the node (it finishes the writes already queued) -> wait for every shard's
//             in-flight replies, bounded
//   ~Agent:   remove the socket -> close every shard (drops its connections; its services
//             never touch the engine again) and join its thread -> join the node -> close
//             the engine cleanly
//
// The listener and the first shard run on the calling thread's KJ event loop (`io`), which
// must outlive the Agent.
#include <kj/async-io.h>

#include <cstdint>
#include <memory>

#include "agent/config.hpp"
#include "cluster/model/result.hpp"

namespace keel::agent {

class Agent {
 public:
  // Errors (with a message naming the cause): the data directory cannot be opened or is
  // locked, recovery failed, the socket is served by another agent or cannot be bound.
  static Result<std::unique_ptr<Agent>> open(const Config& config, kj::AsyncIoContext& io);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Starts the node thread (and its peer listener), the watch hub and accepting
  // connections. Errors: the peer address cannot be bound.
  Status start();

  // The ordered shutdown above; resolves when every in-flight call has replied, or after
  // `deadline_ms`. Destroy the Agent afterwards to close the engine.
  kj::Promise<void> shutdown(uint64_t deadline_ms);

  const std::string& socket_path() const;

  struct Parts;

 private:
  explicit Agent(std::unique_ptr<Parts> parts);
  std::unique_ptr<Parts> p_;
};

}  // namespace keel::agent
