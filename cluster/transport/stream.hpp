#pragma once
// The byte stream under a peer connection. The transport only speaks to this interface, so
// mutual TLS slots in as another implementation (asio::ssl::stream<tcp::socket> whose
// start() runs async_handshake and checks the peer certificate against the claimed member id)
// without touching the framing, queues or handshake logic. All calls and callbacks happen on
// the transport's io_context thread.
#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>

#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace keel::transport {

class Stream {
 public:
  using Done = std::function<void(std::error_code)>;
  using IoDone = std::function<void(std::error_code, size_t)>;
  virtual ~Stream() = default;
  // Secures the stream (TLS handshake) once TCP is connected; plain TCP completes at once.
  // `client` tells which side this is.
  virtual void start(bool client, Done done) = 0;
  virtual void async_read_some(asio::mutable_buffer buf, IoDone done) = 0;
  // Writes all of `bufs` (they must stay valid until `done`).
  virtual void async_write(const std::vector<asio::const_buffer>& bufs, IoDone done) = 0;
  virtual void close() = 0;
  virtual std::string remote_address() const = 0;
};

// Plain TCP with TCP_NODELAY.
class TcpStream final : public Stream {
 public:
  explicit TcpStream(asio::ip::tcp::socket socket);
  void start(bool client, Done done) override;
  void async_read_some(asio::mutable_buffer buf, IoDone done) override;
  void async_write(const std::vector<asio::const_buffer>& bufs, IoDone done) override;
  void close() override;
  std::string remote_address() const override;

 private:
  asio::ip::tcp::socket socket_;
  std::string remote_;
};

// Wraps a freshly connected or accepted socket into the stream the transport uses (later: a
// TLS stream built from the node's certificates).
using StreamFactory = std::function<std::unique_ptr<Stream>(asio::ip::tcp::socket)>;

}  // namespace keel::transport
