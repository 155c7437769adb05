#include <cstdio>
#include <cstdlib>

#include "cluster/transport/codec.hpp"
#include "cluster/transport/validate.hpp"
#include "tests/unit/transport/fuzz_peer_frame.hpp"
#include "tests/unit/transport/helpers.hpp"

namespace keel::transport::test {
namespace {

constexpr size_t kLimit = 1 << 20;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_peer_frame: %s\n", what);
  std::abort();
}

bool same_item(const Item& a, const Item& b) {
  if (a.index() != b.index()) return false;
  if (const auto* m = std::get_if<raft::Message>(&a))
    return same_message(*m, std::get<raft::Message>(b));
  return std::get<AppPayload>(a).payload == std::get<AppPayload>(b).payload;
}

void check_round_trip(const Frame& f) {
  std::string again;
  encode_frame(f, &again);
  if (again.size() < kFrameHeaderBytes) fail("short re-encoding");
  auto g = decode_frame(reinterpret_cast<const uint8_t*>(again.data()) + kFrameHeaderBytes,
                        again.size() - kFrameHeaderBytes, SIZE_MAX);
  if (!g.ok()) fail("re-encoded frame does not decode");
  if (g.value().index() != f.index()) fail("re-encoded frame changed kind");
  if (const auto* b = std::get_if<Batch>(&f)) {
    const auto& c = std::get<Batch>(g.value());
    if (b->items.size() != c.items.size()) fail("re-encoded batch changed size");
    for (size_t i = 0; i < b->items.size(); ++i)
      if (!same_item(b->items[i], c.items[i])) fail("re-encoded item differs");
  }
}

}  // namespace

FuzzOutcome fuzz_peer_frame_one(const uint8_t* data, size_t size) {
  FuzzOutcome out;
  auto f = decode_frame(data, size, kLimit);
  if (f.ok()) {
    out.decoded = true;
    if (const auto* b = std::get_if<Batch>(&f.value())) {
      for (const Item& item : b->items) {
        if (const auto* m = std::get_if<raft::Message>(&item)) {
          if (validate(*m, 2).ok()) ++out.valid_msgs;
        }
      }
    }
    check_round_trip(f.value());
  } else if (f.error().message.empty()) {
    fail("error without a message");
  }
  // The same bytes as a stream, fed in uneven pieces.
  FrameReader reader(kLimit);
  size_t pos = 0, step = 1;
  while (pos < size) {
    const size_t n = std::min(step, size - pos);
    reader.feed(data + pos, n);
    pos += n;
    step = step * 3 + 1;
    for (;;) {
      const uint8_t* body = nullptr;
      size_t len = 0;
      const auto r = reader.next(&body, &len);
      if (r == FrameReader::Next::need_more) break;
      if (r == FrameReader::Next::too_big) {
        if (reader.announced() <= kLimit) fail("too_big below the limit");
        return out;
      }
      if (len > kLimit) fail("frame over the limit");
      auto g = decode_frame(body, len, kLimit);
      if (g.ok()) check_round_trip(g.value());
    }
  }
  return out;
}

}  // namespace keel::transport::test
