#include "agent/listener.hpp"

#include <capnp/rpc-twoparty.h>
#include <errno.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "agent/buffered_stream.hpp"

namespace keel::agent {

namespace {

// A socket file left by a dead agent is replaced; a live agent makes start-up fail.
Status prepare_socket_path(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return make_error(ErrorCode::invalid_argument,
                      "socket path " + path + " is longer than " +
                          std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return ok_status();
    return make_error(ErrorCode::internal, "cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return make_error(ErrorCode::invalid_argument,
                      path + " exists and is not a socket; refusing to replace it");
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(ErrorCode::internal, std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  ::close(fd);
  if (rc == 0) {
    return make_error(ErrorCode::invalid_argument,
                      "another agent is serving on " + path + "; stop it first");
  }
  if (err != ECONNREFUSED && err != ENOENT) {
    return make_error(ErrorCode::internal, "cannot probe " + path + ": " + std::strerror(err));
  }
  spdlog::info("replacing stale socket {}", path);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return make_error(ErrorCode::internal, "cannot remove " + path + ": " + std::strerror(errno));
  }
  return ok_status();
}

}  // namespace

struct Connection::Rpc {
  Rpc(kj::AsyncIoStream& stream, capnp::Capability::Client bootstrap, capnp::ReaderOptions options)
      : network(stream, capnp::rpc::twoparty::Side::SERVER, options),
        system(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> system;
};

Connection::Connection(kj::Own<kj::AsyncIoStream> stream, capnp::Capability::Client bootstrap,
                       capnp::ReaderOptions options)
    : stream_(kj::heap<BufferedStream>(kj::mv(stream))),
      rpc_(kj::heap<Rpc>(*stream_, kj::mv(bootstrap), options)) {}

Connection::~Connection() {
  rpc_ = nullptr;  // before the stream it reads
}

kj::Promise<void> Connection::on_disconnect() {
  return rpc_->network.onDisconnect();
}

void ConnectionErrors::taskFailed(kj::Exception&& e) {
  if (e.getType() == kj::Exception::Type::DISCONNECTED) {
    spdlog::debug("connection task ended: {}", e.getDescription().cStr());
  } else {
    spdlog::warn("connection task failed: {}", e.getDescription().cStr());
  }
}

Result<std::unique_ptr<Listener>> Listener::bind(ListenerOptions options, kj::AsyncIoContext& io,
                                                 std::shared_ptr<const AgentCounts> counts,
                                                 Dispatch dispatch) {
  const std::string& path = options.path;
  if (auto st = prepare_socket_path(path); !st) return std::move(st).error();
  kj::Own<kj::ConnectionReceiver> receiver;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                 receiver = io.provider->getNetwork()
                                .parseAddress(kj::str("unix:", path.c_str()))
                                .wait(io.waitScope)
                                ->listen();
               })) {
    return make_error(ErrorCode::internal,
                      "cannot listen on " + path + ": " + e->getDescription().cStr());
  }
  if (chmod(path.c_str(), options.mode) != 0) {
    return make_error(ErrorCode::internal, "cannot chmod " + path + ": " + std::strerror(errno));
  }
  return std::unique_ptr<Listener>(new Listener(std::move(options), kj::mv(receiver),
                                                io.provider->getTimer(), std::move(counts),
                                                std::move(dispatch)));
}

Listener::Listener(ListenerOptions options, kj::Own<kj::ConnectionReceiver> receiver,
                   kj::Timer& timer, std::shared_ptr<const AgentCounts> counts, Dispatch dispatch)
    : options_(std::move(options)),
      receiver_(kj::mv(receiver)),
      timer_(timer),
      counts_(std::move(counts)),
      dispatch_(std::move(dispatch)),
      tasks_(kj::heap<kj::TaskSet>(error_handler_)) {}

Listener::~Listener() {
  close();
}

void Listener::start() {
  if (receiver_.get() == nullptr) return;
  accept_task_ = accept_loop().eagerlyEvaluate([](kj::Exception&& e) {
    spdlog::error("accepting connections failed: {}", e.getDescription().cStr());
  });
}

kj::Promise<void> Listener::accept_loop() {
  return receiver_->acceptAuthenticated().then([this](kj::AuthenticatedStream&& accepted) {
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
    if (counts_->connections.load() >= options_.max_connections) {
      refuse(kj::mv(accepted.stream), peer);
      return accept_loop();
    }
    dispatch_(kj::mv(accepted.stream), peer);
    return accept_loop();
  });
}

// Over the limit: the peer's calls fail with an OVERLOADED exception that says why, and the
// connection is closed once the peer hangs up or after a second, whichever comes first.
void Listener::refuse(kj::Own<kj::AsyncIoStream> stream, const Peer& peer) {
  ++refused_;
  std::string why = "too many connections: " + std::to_string(counts_->connections.load()) +
                    " open; limit is " + std::to_string(options_.max_connections) +
                    " (limits.max_connections)";
  spdlog::warn("connection from uid {} pid {} refused: {} ({} refused since start)", peer.uid,
               peer.pid, why, refused_);
  capnp::Capability::Client refused(
      kj::Exception(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__, kj::str(why.c_str())));
  auto conn = kj::heap<Connection>(kj::mv(stream), kj::mv(refused), options_.reader_options);
  auto done = conn->on_disconnect().exclusiveJoin(timer_.afterDelay(1 * kj::SECONDS));
  tasks_->add(done.attach(kj::mv(conn)));
}

void Listener::stop() {
  accept_task_ = nullptr;
  receiver_ = nullptr;
}

void Listener::close() {
  if (closed_) return;
  closed_ = true;
  stop();
  tasks_ = nullptr;  // drops the refused connections
  unlink(options_.path.c_str());
}

}  // namespace keel::agent
