#pragma once
// A stream that reads its wrapped stream in large chunks and serves Cap'n Proto's small reads
// (a message's segment table, then its body) from a buffer: one read(2) per arrival instead
// of two or three per message. On a Unix socket every read also wakes the writer's epoll
// (KJ registers each socket for EPOLLOUT as well as EPOLLIN), so fewer reads are fewer
// wake-ups of the process on the other end. Writes and socket options pass through.
//
// Contract: used on the event loop that owns the wrapped stream; one read at a time (as
// Cap'n Proto's message reader does).
#include <kj/async-io.h>

#include <cstddef>

namespace keel::agent {

class BufferedStream final : public kj::AsyncIoStream {
 public:
  explicit BufferedStream(kj::Own<kj::AsyncIoStream> inner, size_t buffer_bytes = 64 * 1024);

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  void shutdownWrite() override;
  void abortRead() override;
  void getsockopt(int level, int option, void* value, kj::uint* length) override;
  void setsockopt(int level, int option, const void* value, kj::uint length) override;
  void getsockname(struct sockaddr* addr, kj::uint* length) override;
  void getpeername(struct sockaddr* addr, kj::uint* length) override;
  kj::Maybe<int> getFd() const override;

 private:
  kj::Own<kj::AsyncIoStream> inner_;
  kj::Array<kj::byte> buffer_;
  size_t begin_ = 0;  // buffered bytes are [begin_, end_)
  size_t end_ = 0;
};

}  // namespace keel::agent
