#pragma once
// The one place that wires keeld's parts and orders their start-up and shutdown:
//
//   open:     WiredTiger engine -> node (recovers) -> watch hub -> KV service -> listener
//             (binds the socket)
//   start():  watch hub -> node thread and peer listener (its apply hook feeds the hub) ->
//             accepting
//   shutdown: stop accepting -> cancel watches with shutting_down -> stop the node (it
//             finishes the writes already queued) -> wait for in-flight replies, bounded
//   ~Agent:   drop connections, remove the socket -> close the service and the hub (they
//             never touch the engine again) -> join the node -> close the engine cleanly
//
// Everything runs on the calling thread's KJ event loop (`io`), which must outlive the Agent.
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
