#pragma once
// The listener: the Unix socket, accepting connections through the authenticated path (so
// each connection knows its peer's uid and pid), one Cap'n Proto RPC system per connection
// whose bootstrap capability comes from a factory (the KV service). It knows nothing of the
// store, the node or the watch hub. KJ event-loop thread.
#include <capnp/capability.h>
#include <capnp/message.h>
#include <kj/async-io.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

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

class Listener {
 public:
  using Bootstrap = std::function<capnp::Capability::Client(const Peer&)>;

  // Replaces a stale socket file left by a dead agent, listens, sets the mode. Errors
  // (invalid_argument / internal, naming the path): another agent serves there, the path is
  // not a socket or is too long, listen or chmod failed.
  static Result<std::unique_ptr<Listener>> bind(ListenerOptions options, kj::AsyncIoContext& io,
                                                Bootstrap bootstrap);
  ~Listener();

  void start();  // accepts until stop()
  void stop();   // stops accepting; open connections stay until close()
  void close();  // drops every connection and removes the socket file
  uint64_t connections() const { return connections_; }
  const std::string& path() const { return options_.path; }

 private:
  Listener(ListenerOptions options, kj::Own<kj::ConnectionReceiver> receiver, kj::Timer& timer,
           Bootstrap bootstrap);
  kj::Promise<void> accept_loop();
  void refuse(kj::Own<kj::AsyncIoStream> stream, const Peer& peer);

  class ErrorHandler final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& e) override;
  };

  const ListenerOptions options_;
  kj::Own<kj::ConnectionReceiver> receiver_;
  kj::Timer& timer_;
  Bootstrap bootstrap_;
  kj::Promise<void> accept_task_ = nullptr;
  uint64_t connections_ = 0;
  uint64_t refused_ = 0;  // refused since start (for the log)
  bool closed_ = false;
  ErrorHandler error_handler_;
  kj::Own<kj::TaskSet> tasks_;  // one per connection
};

}  // namespace keel::agent
