#include "agent/buffered_stream.hpp"

#include <algorithm>
#include <cstring>

namespace keel::agent {

BufferedStream::BufferedStream(kj::Own<kj::AsyncIoStream> inner, size_t buffer_bytes)
    : inner_(kj::mv(inner)), buffer_(kj::heapArray<kj::byte>(buffer_bytes)) {}

kj::Promise<size_t> BufferedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  auto* out = static_cast<kj::byte*>(buffer);
  const size_t n = std::min(end_ - begin_, max_bytes);
  std::memcpy(out, buffer_.begin() + begin_, n);
  begin_ += n;
  if (n >= min_bytes) return n;
  // The buffer is empty and the caller needs more.
  begin_ = end_ = 0;
  if (max_bytes - n >= buffer_.size()) {
    // A read as large as the buffer goes straight to the caller's memory.
    return inner_->tryRead(out + n, min_bytes - n, max_bytes - n).then([n](size_t r) {
      return n + r;
    });
  }
  return inner_->tryRead(buffer_.begin(), 1, buffer_.size())
      .then([this, out, n, min_bytes, max_bytes](size_t r) -> kj::Promise<size_t> {
        if (r == 0) return n;  // end of stream: what was read so far
        end_ = r;
        return tryRead(out + n, min_bytes - n, max_bytes - n).then([n](size_t m) { return n + m; });
      });
}

kj::Promise<void> BufferedStream::write(const void* buffer, size_t size) {
  return inner_->write(buffer, size);
}
kj::Promise<void> BufferedStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  return inner_->write(pieces);
}
kj::Promise<void> BufferedStream::whenWriteDisconnected() {
  return inner_->whenWriteDisconnected();
}
void BufferedStream::shutdownWrite() {
  inner_->shutdownWrite();
}
void BufferedStream::abortRead() {
  inner_->abortRead();
}
void BufferedStream::getsockopt(int level, int option, void* value, kj::uint* length) {
  inner_->getsockopt(level, option, value, length);
}
void BufferedStream::setsockopt(int level, int option, const void* value, kj::uint length) {
  inner_->setsockopt(level, option, value, length);
}
void BufferedStream::getsockname(struct sockaddr* addr, kj::uint* length) {
  inner_->getsockname(addr, length);
}
void BufferedStream::getpeername(struct sockaddr* addr, kj::uint* length) {
  inner_->getpeername(addr, length);
}
kj::Maybe<int> BufferedStream::getFd() const {
  return inner_->getFd();
}

}  // namespace keel::agent
