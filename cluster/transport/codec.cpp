#include "cluster/transport/codec.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstring>
#include <exception>
#include <memory>

#include "capnp/peer.capnp.h"

namespace keel::transport {
namespace {

using raft::EntryType;
using raft::MessageType;

static_assert(static_cast<uint16_t>(peer::MessageType::TIMEOUT_NOW) ==
              static_cast<uint16_t>(MessageType::timeout_now));
static_assert(static_cast<uint16_t>(peer::EntryType::CONF_CHANGE) ==
              static_cast<uint16_t>(EntryType::conf_change));

size_t pad8(size_t n) {
  return (n + 7) & ~size_t{7};
}

kj::ArrayPtr<const kj::byte> bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

std::string to_string(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

class StringOutput final : public kj::OutputStream {
 public:
  explicit StringOutput(std::string* out) : out_(out) {}
  void write(const void* buffer, size_t size) override {
    out_->append(static_cast<const char*>(buffer), size);
  }

 private:
  std::string* out_;
};

void put_u32(std::string* out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    (*out)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// Writes the header placeholder, the message, then the header.
void write_frame(capnp::MessageBuilder& mb, std::string* out) {
  const size_t at = out->size();
  out->append(kFrameHeaderBytes, '\0');
  StringOutput os(out);
  capnp::writeMessage(os, mb);
  const size_t body = out->size() - at - kFrameHeaderBytes;
  KEEL_ASSERT(body <= UINT32_MAX, "frame body over 4 GiB");
  put_u32(out, at, static_cast<uint32_t>(body));
}

void build_message(const raft::Message& m, peer::Message::Builder b) {
  b.setType(static_cast<peer::MessageType>(m.type));
  b.setFrom(m.from);
  b.setTo(m.to);
  b.setTerm(m.term);
  b.setLogTerm(m.log_term);
  b.setIndex(m.index);
  b.setCommit(m.commit);
  b.setRejectHint(m.reject_hint);
  b.setReject(m.reject);
  b.setTransfer(m.transfer);
  if (!m.entries.empty()) {
    auto es = b.initEntries(static_cast<unsigned>(m.entries.size()));
    for (size_t i = 0; i < m.entries.size(); ++i) {
      const raft::Entry& e = m.entries[i];
      auto eb = es[static_cast<unsigned>(i)];
      eb.setIndex(e.index);
      eb.setTerm(e.term);
      eb.setType(static_cast<peer::EntryType>(e.type));
      if (!e.data.empty()) eb.setData(bytes(e.data));
    }
  }
  if (m.snapshot) {
    auto sb = b.initSnapshot();
    auto meta = sb.initMeta();
    meta.setIndex(m.snapshot->meta.index);
    meta.setTerm(m.snapshot->meta.term);
    const auto& conf = m.snapshot->meta.conf;
    auto v = meta.initVoters(static_cast<unsigned>(conf.voters.size()));
    for (size_t i = 0; i < conf.voters.size(); ++i)
      v.set(static_cast<unsigned>(i), conf.voters[i]);
    auto l = meta.initLearners(static_cast<unsigned>(conf.learners.size()));
    for (size_t i = 0; i < conf.learners.size(); ++i)
      l.set(static_cast<unsigned>(i), conf.learners[i]);
    sb.setData(bytes(m.snapshot->data));
  }
  if (!m.context.empty()) b.setContext(bytes(m.context));
}

Error bad(const std::string& why) {
  return make_error(ErrorCode::invalid_argument, "malformed peer frame: " + why);
}

Result<raft::Message> read_message(peer::Message::Reader r) {
  raft::Message m;
  const auto type = static_cast<uint16_t>(r.getType());
  if (type > static_cast<uint16_t>(MessageType::timeout_now))
    return bad("message type " + std::to_string(type) + " out of range");
  m.type = static_cast<MessageType>(type);
  m.from = r.getFrom();
  m.to = r.getTo();
  m.term = r.getTerm();
  m.log_term = r.getLogTerm();
  m.index = r.getIndex();
  m.commit = r.getCommit();
  m.reject_hint = r.getRejectHint();
  m.reject = r.getReject();
  m.transfer = r.getTransfer();
  if (r.hasEntries()) {
    auto es = r.getEntries();
    m.entries.reserve(es.size());
    for (auto e : es) {
      raft::Entry out;
      out.index = e.getIndex();
      out.term = e.getTerm();
      const auto et = static_cast<uint16_t>(e.getType());
      if (et > static_cast<uint16_t>(EntryType::conf_change))
        return bad("entry type " + std::to_string(et) + " out of range");
      out.type = static_cast<EntryType>(et);
      if (e.hasData()) out.data = to_string(e.getData());
      m.entries.push_back(std::move(out));
    }
  }
  if (r.hasSnapshot()) {
    auto sr = r.getSnapshot();
    auto snap = std::make_shared<raft::Snapshot>();
    auto meta = sr.getMeta();
    snap->meta.index = meta.getIndex();
    snap->meta.term = meta.getTerm();
    for (uint64_t v : meta.getVoters())
      snap->meta.conf.voters.push_back(v);
    for (uint64_t l : meta.getLearners())
      snap->meta.conf.learners.push_back(l);
    if (sr.hasData()) snap->data = to_string(sr.getData());
    m.snapshot = std::move(snap);
  }
  if (r.hasContext()) m.context = to_string(r.getContext());
  return m;
}

Result<Frame> read_frame(peer::Frame::Reader f) {
  switch (f.which()) {
    case peer::Frame::HELLO: {
      auto h = f.getHello();
      if (h.getMagic() != peer::MAGIC) return bad("bad magic (not a keel peer)");
      Hello out;
      out.version = h.getVersion();
      out.cluster_id = h.getClusterId();
      out.from = h.getFrom();
      out.to = h.getTo();
      return Frame{out};
    }
    case peer::Frame::HELLO_REPLY: {
      auto h = f.getHelloReply();
      HelloReply out;
      out.accepted = h.getAccepted();
      if (h.hasReason()) out.reason = std::string(h.getReason().cStr(), h.getReason().size());
      out.cluster_id = h.getClusterId();
      out.node = h.getNode();
      return Frame{std::move(out)};
    }
    case peer::Frame::BATCH: {
      Batch out;
      auto items = f.getBatch().getItems();
      out.items.reserve(items.size());
      for (auto it : items) {
        switch (it.which()) {
          case peer::Item::RAFT: {
            auto m = read_message(it.getRaft());
            if (!m) return std::move(m).error();
            out.items.emplace_back(std::move(m).value());
            break;
          }
          case peer::Item::APP: {
            auto a = it.getApp();
            out.items.emplace_back(AppPayload{a.hasPayload() ? to_string(a.getPayload()) : ""});
            break;
          }
          default:
            return bad("unknown item kind " + std::to_string(static_cast<unsigned>(it.which())));
        }
      }
      return Frame{std::move(out)};
    }
    case peer::Frame::SNAPSHOT_CHUNK: {
      auto c = f.getSnapshotChunk();
      SnapshotChunk out;
      out.transfer_id = c.getTransferId();
      out.offset = c.getOffset();
      if (c.hasData()) out.data = to_string(c.getData());
      out.last = c.getLast();
      return Frame{std::move(out)};
    }
    case peer::Frame::SNAPSHOT_CHUNK_ACK: {
      auto c = f.getSnapshotChunkAck();
      return Frame{SnapshotChunkAck{c.getTransferId(), c.getOffset(), c.getOk()}};
    }
  }
  return bad("unknown frame kind " + std::to_string(static_cast<unsigned>(f.which())));
}

}  // namespace

size_t encoded_size_bound(const Item& item) {
  size_t n = 32;  // Item struct in the list + tag share
  if (const auto* app = std::get_if<AppPayload>(&item)) return n + 16 + pad8(app->payload.size());
  const auto& m = std::get<raft::Message>(item);
  n += 96 + pad8(m.context.size());
  if (!m.entries.empty()) {
    n += 8;
    for (const raft::Entry& e : m.entries)
      n += 32 + pad8(e.data.size());
  }
  if (m.snapshot) {
    n += 64 + 8 * (m.snapshot->meta.conf.voters.size() + m.snapshot->meta.conf.learners.size()) +
         pad8(m.snapshot->data.size());
  }
  return n;
}

void encode_batch(const std::vector<Item>& items, size_t first, size_t last, std::string* out) {
  size_t bound = kBatchOverheadBytes;
  for (size_t i = first; i < last; ++i)
    bound += encoded_size_bound(items[i]);
  capnp::MallocMessageBuilder mb(static_cast<unsigned>(std::min<size_t>(bound / 8 + 8, 1u << 28)));
  auto list = mb.initRoot<peer::Frame>().initBatch().initItems(static_cast<unsigned>(last - first));
  for (size_t i = first; i < last; ++i) {
    auto ib = list[static_cast<unsigned>(i - first)];
    if (const auto* app = std::get_if<AppPayload>(&items[i])) {
      auto ab = ib.initApp();
      if (!app->payload.empty()) ab.setPayload(bytes(app->payload));
    } else {
      build_message(std::get<raft::Message>(items[i]), ib.initRaft());
    }
  }
  out->reserve(out->size() + bound + kFrameHeaderBytes);
  write_frame(mb, out);
}

void encode_frame(const Frame& frame, std::string* out) {
  if (const auto* b = std::get_if<Batch>(&frame)) {
    encode_batch(b->items, 0, b->items.size(), out);
    return;
  }
  capnp::MallocMessageBuilder mb;
  auto f = mb.initRoot<peer::Frame>();
  if (const auto* h = std::get_if<Hello>(&frame)) {
    auto hb = f.initHello();
    hb.setMagic(peer::MAGIC);
    hb.setVersion(h->version);
    hb.setClusterId(h->cluster_id);
    hb.setFrom(h->from);
    hb.setTo(h->to);
  } else if (const auto* r = std::get_if<HelloReply>(&frame)) {
    auto rb = f.initHelloReply();
    rb.setAccepted(r->accepted);
    rb.setReason(r->reason);
    rb.setClusterId(r->cluster_id);
    rb.setNode(r->node);
  } else if (const auto* c = std::get_if<SnapshotChunk>(&frame)) {
    auto cb = f.initSnapshotChunk();
    cb.setTransferId(c->transfer_id);
    cb.setOffset(c->offset);
    cb.setData(bytes(c->data));
    cb.setLast(c->last);
  } else if (const auto* a = std::get_if<SnapshotChunkAck>(&frame)) {
    auto ab = f.initSnapshotChunkAck();
    ab.setTransferId(a->transfer_id);
    ab.setOffset(a->offset);
    ab.setOk(a->ok);
  }
  write_frame(mb, out);
}

Result<Frame> decode_frame(const uint8_t* data, size_t size, size_t max_frame_bytes) {
  if (size > max_frame_bytes)
    return bad("body of " + std::to_string(size) + " bytes exceeds max_frame_bytes (" +
               std::to_string(max_frame_bytes) + ")");
  if (size == 0 || size % sizeof(capnp::word) != 0)
    return bad("body of " + std::to_string(size) + " bytes is not whole words");
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, size);
  try {
    capnp::ReaderOptions opts;
    // A frame never legitimately reads more than itself: this bounds amplification attacks
    // (many pointers to one blob) to twice the frame, itself at most max_frame_bytes.
    opts.traversalLimitInWords = 2 * words.size() + 64;
    opts.nestingLimit = 16;
    capnp::FlatArrayMessageReader reader(words.asPtr(), opts);
    if (reader.getEnd() != words.end()) return bad("trailing bytes after the message");
    return read_frame(reader.getRoot<peer::Frame>());
  } catch (const kj::Exception& e) {
    return bad(std::string(e.getDescription().cStr()));
  } catch (const std::exception& e) {
    return bad(e.what());
  }
}

void FrameReader::feed(const uint8_t* data, size_t size) {
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ > buf_.size() / 2)) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(reinterpret_cast<const char*>(data), size);
}

FrameReader::Next FrameReader::next(const uint8_t** body, size_t* size) {
  const size_t avail = buf_.size() - pos_;
  if (avail < kFrameHeaderBytes) return Next::need_more;
  const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + pos_);
  const size_t len = static_cast<size_t>(p[0]) | static_cast<size_t>(p[1]) << 8 |
                     static_cast<size_t>(p[2]) << 16 | static_cast<size_t>(p[3]) << 24;
  if (len > limit_) {
    announced_ = len;
    return Next::too_big;
  }
  if (avail - kFrameHeaderBytes < len) return Next::need_more;
  *body = p + kFrameHeaderBytes;
  *size = len;
  pos_ += kFrameHeaderBytes + len;
  return Next::frame;
}

}  // namespace keel::transport
