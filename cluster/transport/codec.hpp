#pragma once
// The peer wire format (capnp/peer.capnp): a frame is a little-endian u32 body length followed
// by one unpacked Cap'n Proto message whose root is peer::Frame. These functions are pure
// (no I/O), never throw, and are what the fuzz replay test drives.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "cluster/model/result.hpp"
#include "cluster/raft/types.hpp"

namespace keel::transport {

inline constexpr size_t kFrameHeaderBytes = 4;
// Frames before the handshake completed are at most this long (a stranger cannot make us
// allocate max_frame_bytes).
inline constexpr size_t kMaxHandshakeFrameBytes = 4096;
inline constexpr uint32_t kProtocolVersion = 1;

struct Hello {
  uint32_t version = kProtocolVersion;
  uint64_t cluster_id = 0;
  raft::NodeId from = raft::kNoNode;
  raft::NodeId to = raft::kNoNode;
};

struct HelloReply {
  bool accepted = false;
  std::string reason;
  uint64_t cluster_id = 0;
  raft::NodeId node = raft::kNoNode;
};

struct AppPayload {
  std::string payload;
};

// One queued item: a Raft message or an opaque application message, in send order.
using Item = std::variant<raft::Message, AppPayload>;

struct Batch {
  std::vector<Item> items;
};

// Reserved frame kinds for streamed snapshots (capnp/peer.capnp); decoded, not used yet.
struct SnapshotChunk {
  uint64_t transfer_id = 0;
  uint64_t offset = 0;
  std::string data;
  bool last = false;
};
struct SnapshotChunkAck {
  uint64_t transfer_id = 0;
  uint64_t offset = 0;
  bool ok = false;
};

using Frame = std::variant<Hello, HelloReply, Batch, SnapshotChunk, SnapshotChunkAck>;

// Appends a whole frame (header + body) to *out.
void encode_frame(const Frame& frame, std::string* out);
// Encodes the items [first, last) of `items` as one batch frame, appended to *out.
void encode_batch(const std::vector<Item>& items, size_t first, size_t last, std::string* out);

// Decodes a frame body (without the length header). Structural errors (not Cap'n Proto, wrong
// root, enum out of range, traversal limit) are errors naming the cause; the contents are not
// validated (see validate.hpp). `max_frame_bytes` bounds the body and the traversal limit.
Result<Frame> decode_frame(const uint8_t* data, size_t size, size_t max_frame_bytes);

// An upper bound of the bytes `item` adds to a batch frame: queue accounting and batching.
size_t encoded_size_bound(const Item& item);
inline constexpr size_t kBatchOverheadBytes = 64;

// Splits a byte stream into frame bodies. feed() appends received bytes; next() yields each
// complete body in order. A header announcing more than `limit` bytes is an error (naming
// the limit) and the stream must be closed.
class FrameReader {
 public:
  explicit FrameReader(size_t limit) : limit_(limit) {}
  void set_limit(size_t limit) { limit_ = limit; }
  size_t limit() const { return limit_; }
  void feed(const uint8_t* data, size_t size);
  enum class Next { frame, need_more, too_big };
  // On `frame`, *body/*size point into the reader's buffer until the next feed()/next().
  Next next(const uint8_t** body, size_t* size);
  size_t announced() const { return announced_; }  // the offending length after too_big
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
  size_t limit_;
  size_t announced_ = 0;
};

}  // namespace keel::transport
