#include "cluster/transport/stream.hpp"

#include <asio/post.hpp>
#include <asio/write.hpp>

namespace keel::transport {

TcpStream::TcpStream(asio::ip::tcp::socket socket) : socket_(std::move(socket)) {
  std::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  const auto ep = socket_.remote_endpoint(ec);
  if (!ec) {
    remote_ =
        ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string();
    remote_ += ":" + std::to_string(ep.port());
  } else {
    remote_ = "?";
  }
}

void TcpStream::start(bool /*client*/, Done done) {
  asio::post(socket_.get_executor(), [done = std::move(done)] { done(std::error_code()); });
}

void TcpStream::async_read_some(asio::mutable_buffer buf, IoDone done) {
  socket_.async_read_some(buf, std::move(done));
}

void TcpStream::async_write(const std::vector<asio::const_buffer>& bufs, IoDone done) {
  asio::async_write(socket_, bufs, std::move(done));
}

void TcpStream::close() {
  std::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.close(ec);
}

std::string TcpStream::remote_address() const {
  return remote_;
}

}  // namespace keel::transport
