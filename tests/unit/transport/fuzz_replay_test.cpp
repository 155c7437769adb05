// Deterministic replay of the peer-frame fuzz body (fuzz_peer_frame_body.cpp): well-formed
// frames with random fields, mutations of them (bit flips, truncation, splices, overwritten
// words and lengths) and random bytes. Fixed seed: a failure replays exactly.
#include <catch2/catch.hpp>

#include "cluster/raft/rand.hpp"
#include "cluster/transport/codec.hpp"
#include "tests/unit/transport/fuzz_peer_frame.hpp"
#include "tests/unit/transport/helpers.hpp"

using namespace keel::transport;
using namespace keel::transport::test;
using keel::raft::Rng;

namespace {

uint64_t field(Rng& rng) {
  switch (rng.below(4)) {
    case 0:
      return 0;
    case 1:
      return rng.below(4);
    case 2:
      return UINT64_MAX - rng.below(2);
    default:
      return rng.next();
  }
}

std::string blob(Rng& rng) {
  std::string s(rng.chance(100000) ? 0 : rng.below(40), '\0');
  for (char& c : s)
    c = static_cast<char>(rng.next());
  return s;
}

Message random_message(Rng& rng) {
  if (rng.chance(500000)) {
    return make_message(static_cast<MessageType>(rng.below(14)), 1, 2, rng.below(5));
  }
  Message m;
  m.type = static_cast<MessageType>(rng.below(14));
  m.from = field(rng);
  m.to = field(rng);
  m.term = field(rng);
  m.log_term = field(rng);
  m.index = field(rng);
  m.commit = field(rng);
  m.reject_hint = field(rng);
  m.reject = rng.chance(500000);
  m.transfer = rng.chance(500000);
  for (uint64_t i = 0, n = rng.below(4); i < n; ++i) {
    keel::raft::Entry e;
    e.index = field(rng);
    e.term = field(rng);
    e.type = static_cast<keel::raft::EntryType>(rng.below(2));
    e.data = blob(rng);
    m.entries.push_back(e);
  }
  if (rng.chance(300000)) {
    auto s = std::make_shared<keel::raft::Snapshot>();
    s->meta.index = field(rng);
    s->meta.term = field(rng);
    for (uint64_t i = 0, n = rng.below(4); i < n; ++i)
      s->meta.conf.voters.push_back(field(rng));
    for (uint64_t i = 0, n = rng.below(3); i < n; ++i)
      s->meta.conf.learners.push_back(field(rng));
    s->data = blob(rng);
    m.snapshot = s;
  }
  m.context = rng.chance(500000) ? blob(rng) : "";
  return m;
}

std::string random_frame(Rng& rng) {
  std::string out;
  switch (rng.below(5)) {
    case 0: {
      Hello h;
      h.version = static_cast<uint32_t>(field(rng));
      h.cluster_id = field(rng);
      h.from = field(rng);
      h.to = field(rng);
      encode_frame(Frame{h}, &out);
      break;
    }
    case 1: {
      HelloReply r;
      r.accepted = rng.chance(500000);
      r.reason = blob(rng);
      r.cluster_id = field(rng);
      r.node = field(rng);
      encode_frame(Frame{r}, &out);
      break;
    }
    case 2: {
      SnapshotChunk c{field(rng), field(rng), blob(rng), rng.chance(500000)};
      encode_frame(Frame{c}, &out);
      break;
    }
    default: {
      Batch b;
      for (uint64_t i = 0, n = rng.below(6); i < n; ++i) {
        if (rng.chance(200000)) {
          b.items.emplace_back(AppPayload{blob(rng)});
        } else {
          b.items.emplace_back(random_message(rng));
        }
      }
      encode_frame(Frame{b}, &out);
    }
  }
  return out;
}

void mutate(Rng& rng, std::string* s) {
  const uint64_t n = 1 + rng.below(6);
  for (uint64_t k = 0; k < n && !s->empty(); ++k) {
    const size_t at = rng.below(s->size());
    switch (rng.below(6)) {
      case 0:
        (*s)[at] = static_cast<char>((*s)[at] ^ (1 << rng.below(8)));
        break;
      case 1:
        s->resize(at);
        break;
      case 2:
        s->insert(at, blob(rng));
        break;
      case 3: {  // overwrite a word with an extreme value (pointers, sizes, counts)
        const uint64_t v = field(rng);
        for (size_t i = 0; i < 8 && at + i < s->size(); ++i)
          (*s)[at + i] = static_cast<char>(v >> (8 * i));
        break;
      }
      case 4:
        s->erase(at, rng.below(16));
        break;
      default:  // duplicate a slice
        s->insert(at, s->substr(rng.below(s->size()), rng.below(64)));
        break;
    }
  }
}

FuzzOutcome run(const std::string& s) {
  return fuzz_peer_frame_one(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

TEST_CASE("fuzz: peer frame decoder replay (20000 generated and mutated inputs)",
          "[transport][fuzz]") {
  Rng rng(20261202);
  size_t decoded = 0, valid = 0, mutated_decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string frame = random_frame(rng);
    switch (i % 4) {
      case 0: {  // the body as is: must decode
        auto out = run(frame.substr(kFrameHeaderBytes));
        REQUIRE(out.decoded);
        ++decoded;
        valid += out.valid_msgs;
        break;
      }
      case 1: {  // several frames as one stream, mutated
        std::string stream = frame + random_frame(rng) + random_frame(rng);
        mutate(rng, &stream);
        run(stream);
        break;
      }
      case 2: {  // a mutated body
        std::string body = frame.substr(kFrameHeaderBytes);
        mutate(rng, &body);
        mutated_decoded += run(body).decoded ? 1 : 0;
        break;
      }
      default: {  // random bytes, sometimes word-sized with a plausible segment table
        std::string bytes = blob(rng) + blob(rng);
        if (rng.chance(500000)) {
          bytes.resize((bytes.size() + 7) & ~size_t{7});
          if (bytes.size() >= 8) {
            bytes[0] = bytes[1] = bytes[2] = bytes[3] = 0;  // one segment
            const uint32_t words = static_cast<uint32_t>(bytes.size() / 8 - 1);
            for (int k = 0; k < 4; ++k)
              bytes[4 + k] = static_cast<char>(words >> (8 * k));
          }
        }
        run(bytes);
        break;
      }
    }
  }
  REQUIRE(decoded == 5000);
  REQUIRE(valid > 100);          // the generator reaches validate()'s accepting paths
  REQUIRE(mutated_decoded > 0);  // and mutations that still decode
}

TEST_CASE("codec: frames round trip and the reader splits a stream", "[transport][codec]") {
  std::string stream;
  Batch b;
  for (auto type : all_types())
    b.items.emplace_back(make_message(type, 1, 2, 3));
  b.items.emplace_back(AppPayload{std::string("app\0payload", 11)});
  encode_frame(Frame{b}, &stream);
  Hello h{kProtocolVersion, 0xC1, 1, 2};
  encode_frame(Frame{h}, &stream);
  FrameReader reader(1 << 20);
  std::vector<Frame> got;
  for (char c : stream) {  // one byte at a time
    reader.feed(reinterpret_cast<const uint8_t*>(&c), 1);
    const uint8_t* body = nullptr;
    size_t size = 0;
    while (reader.next(&body, &size) == FrameReader::Next::frame) {
      auto f = decode_frame(body, size, 1 << 20);
      REQUIRE(f.ok());
      got.push_back(std::move(f).value());
    }
  }
  REQUIRE(got.size() == 2);
  const auto& gb = std::get<Batch>(got[0]);
  REQUIRE(gb.items.size() == b.items.size());
  for (size_t i = 0; i + 1 < b.items.size(); ++i)
    REQUIRE(same_message(std::get<Message>(gb.items[i]), std::get<Message>(b.items[i])));
  REQUIRE(std::get<AppPayload>(gb.items.back()).payload == std::string("app\0payload", 11));
  const auto& gh = std::get<Hello>(got[1]);
  REQUIRE((gh.cluster_id == 0xC1 && gh.from == 1 && gh.to == 2));

  // Size bound: every item's encoding fits its bound.
  for (const Item& item : b.items) {
    std::string one;
    encode_batch({item}, 0, 1, &one);
    REQUIRE(one.size() - kFrameHeaderBytes <= encoded_size_bound(item) + kBatchOverheadBytes);
  }

  // Limits and garbage are errors naming the cause.
  FrameReader small(16);
  const std::string big("\x11\x00\x00\x00", 4);
  small.feed(reinterpret_cast<const uint8_t*>(big.data()), big.size());
  const uint8_t* body = nullptr;
  size_t size = 0;
  REQUIRE(small.next(&body, &size) == FrameReader::Next::too_big);
  REQUIRE(small.announced() == 17);
  auto over = decode_frame(reinterpret_cast<const uint8_t*>(stream.data()) + 4, 64, 56);
  REQUIRE_FALSE(over.ok());
  REQUIRE(over.error().message.find("max_frame_bytes (56)") != std::string::npos);
  const std::string odd = "abc";
  auto bad = decode_frame(reinterpret_cast<const uint8_t*>(odd.data()), odd.size(), 1024);
  REQUIRE_FALSE(bad.ok());
  REQUIRE(bad.error().message.find("not whole words") != std::string::npos);
}
