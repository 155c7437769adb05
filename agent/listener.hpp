#pragma once
// The listener: the Unix socket, accepting connections through the authenticated path (so
// each connection knows its peer's uid and pid) and handing each one, with its peer, to a
// dispatch function (which gives it to a server thread's stack, agent/shard.hpp). It
// enforces limits.max_connections against the agent-wide count of open connections. It
// knows nothing of the store, the node or the watch hub. KJ event-loop thread.
#include <capnp/capability.h>
#include <capnp/message.h>
#include <kj/async-io.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agent/counts.hpp"
#include "agent/peer.hpp"
#include "cluster/model/result.hpp"

namespace keel::agent {

struct ListenerOptions {
  std::string path;
  uint32_t mode = 0660;
  capnp::ReaderOptions reader_options;
  // Connections open at once; one more is accepted, told why (its calls fail with an
  // OVERLOADED exception naming limits.max_connections), logged, and closed.
  size_t max_connections = 1024;
};

// One client connection: its stream and the Cap'n Proto RPC system serving `bootstrap` on it.
// Lives on the event loop that owns the stream.
class Connection {
 public:
  Connection(kj::Own<kj::AsyncIoStream> stream, capnp::Capability::Client bootstrap,
             capnp::ReaderOptions options);
  ~Connection();
  kj::Promise<void> on_disconnect();

 private:
  struct Rpc;
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<Rpc> rpc_;
};

// The error handler of connection tasks: a peer hanging up is logged at debug level, any
// other failure as a warning.
class ConnectionErrors final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override;
};

class Listener {
 public:
  // Takes an accepted connection (on the listener's thread); must count it in
  // AgentCounts::connections while it is open.
  using Dispatch = std::function<void(kj::Own<kj::AsyncIoStream>, const Peer&)>;

  // Replaces a stale socket file left by a dead agent, listens, sets the mode. Errors
  // (invalid_argument / internal, naming the path): another agent serves there, the path is
  // not a socket or is too long, listen or chmod failed.
  static Result<std::unique_ptr<Listener>> bind(ListenerOptions options, kj::AsyncIoContext& io,
                                                std::shared_ptr<const AgentCounts> counts,
                                                Dispatch dispatch);
  ~Listener();

  void start();  // accepts until stop()
  void stop();   // stops accepting; open connections stay until close()
  void close();  // drops the refused connections and removes the socket file
  const std::string& path() const { return options_.path; }

 private:
  Listener(ListenerOptions options, kj::Own<kj::ConnectionReceiver> receiver, kj::Timer& timer,
           std::shared_ptr<const AgentCounts> counts, Dispatch dispatch);
  kj::Promise<void> accept_loop();
  void refuse(kj::Own<kj::AsyncIoStream> stream, const Peer& peer);

  const ListenerOptions options_;
  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Timer& timer_;
  std::shared_ptr<const AgentCounts> counts_;
  Dispatch dispatch_;
  kj::Promise<void> accept_task_ = nullptr;
  uint64_t refused_ = 0;  // refused since start (for the log)
  bool closed_ = false;
  ConnectionErrors error_handler_;
  kj::Own<kj::TaskSet> tasks_;  // one per refused connection
};

}  // namespace keel::agent
