// Transports on 127.0.0.1 exchanging real frames. Every wait is a condition with a deadline
// (run_until), never a sleep.
#include <array>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <catch2/catch.hpp>

#include <array>

#include "cluster/raft/rand.hpp"
#include "cluster/transport/codec.hpp"
#include "tests/unit/transport/helpers.hpp"

using namespace keel::transport;
using namespace keel::transport::test;

namespace {

struct Member {
  Member(asio::io_context& io, NodeId id, uint64_t cluster = 0xC1, uint16_t port = 0,
         std::function<void(TransportOptions&)> tweak = {})
      : id(id) {
    auto o = options(id, cluster, &logs);
    if (tweak) tweak(o);
    t = std::make_unique<Transport>(io, o, rec);
    auto st = t->listen(addr(port));
    REQUIRE(st.ok());
  }
  NodeId id;
  LogCapture logs;
  Recorder rec;
  std::unique_ptr<Transport> t;
  uint16_t port() const { return t->listen_port(); }
};

// A raw TCP client driven by the same io_context (the transport under test must keep running
// while the client waits).
struct RawClient {
  explicit RawClient(asio::io_context& io) : io(io), socket(io) {}
  bool connect(uint16_t port) {
    bool done = false;
    std::error_code result;
    socket.async_connect({asio::ip::make_address("127.0.0.1"), port}, [&](std::error_code ec) {
      result = ec;
      done = true;
    });
    return run_until(io, [&] { return done; }) && !result;
  }
  bool write(const std::string& bytes) {
    bool done = false;
    std::error_code result;
    asio::async_write(socket, asio::buffer(bytes), [&](std::error_code ec, size_t) {
      result = ec;
      done = true;
    });
    return run_until(io, [&] { return done; }) && !result;
  }
  // Reads until the peer closes (true) or the deadline passes (false); keeps what arrived.
  bool wait_closed() {
    bool closed = false;
    std::function<void()> loop = [&] {
      socket.async_read_some(asio::buffer(buf), [&](std::error_code ec, size_t n) {
        if (ec) {
          closed = true;
          return;
        }
        received.append(buf.data(), n);
        loop();
      });
    };
    loop();
    const bool ok = run_until(io, [&] { return closed; });
    if (!ok) {
      std::error_code ignored;
      socket.close(ignored);
      run_until(io, [&] { return closed; });
    }
    return ok;
  }
  asio::io_context& io;
  asio::ip::tcp::socket socket;
  std::array<char, 4096> buf{};
  std::string received;
};

std::string hello_frame(uint64_t cluster, NodeId from, NodeId to) {
  Hello h;
  h.cluster_id = cluster;
  h.from = from;
  h.to = to;
  std::string out;
  encode_frame(Frame{h}, &out);
  return out;
}

std::string header(uint32_t len) {
  std::string h(4, '\0');
  for (int i = 0; i < 4; ++i)
    h[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return h;
}

// Sends one heartbeat from a to b until b has it (a connection may still be coming up).
void expect_delivery(asio::io_context& io, Member& a, Member& b) {
  const size_t before = b.rec.msgs.size();
  REQUIRE(run_until(io, [&] {
    if (b.rec.msgs.size() > before) return true;
    std::vector<Message> out{make_message(MessageType::heartbeat, a.id, b.id)};
    a.t->send(out);
    io.restart();
    io.run_one_for(std::chrono::milliseconds(20));
    return b.rec.msgs.size() > before;
  }));
}

}  // namespace

TEST_CASE("transport: two members exchange every message type intact", "[transport]") {
  asio::io_context io;
  Member a(io, 1), b(io, 2);
  a.t->set_peer(2, addr(b.port()));
  b.t->set_peer(1, addr(a.port()));
  std::vector<Message> sent_ab, sent_ba;
  for (auto type : all_types()) {
    sent_ab.push_back(make_message(type, 1, 2, 1));
    sent_ba.push_back(make_message(type, 2, 1, 2));
  }
  auto out_ab = sent_ab, out_ba = sent_ba;
  a.t->send(out_ab);
  b.t->send(out_ba);
  REQUIRE(out_ab.empty());
  REQUIRE(run_until(io, [&] {
    return b.rec.msgs.size() == sent_ab.size() && a.rec.msgs.size() == sent_ba.size();
  }));
  for (size_t i = 0; i < sent_ab.size(); ++i) {
    INFO("type " << keel::raft::to_string(sent_ab[i].type));
    REQUIRE(same_message(b.rec.msgs[i], sent_ab[i]));
    REQUIRE(same_message(a.rec.msgs[i], sent_ba[i]));
  }
  auto st = a.t->stats();
  REQUIRE(st.at(2).connected);
  REQUIRE(st.at(2).sent_msgs == sent_ab.size());
  REQUIRE(st.at(2).sent_bytes > 100000);
  REQUIRE(st.at(2).dropped_msgs == 0);
  REQUIRE(b.t->counters().received_msgs == sent_ab.size());
  REQUIRE(a.rec.unreachable.empty());
}

TEST_CASE("transport: three members, raft and app messages interleaved in order", "[transport]") {
  asio::io_context io;
  Member m1(io, 1), m2(io, 2), m3(io, 3);
  Member* ms[] = {&m1, &m2, &m3};
  for (auto* x : ms)
    for (auto* y : ms)
      if (x != y) x->t->set_peer(y->id, addr(y->port()));
  for (auto* x : ms) {
    for (auto* y : ms) {
      if (x == y) continue;
      for (int i = 0; i < 5; ++i) {
        std::vector<Message> out{make_message(MessageType::app, x->id, y->id, i)};
        x->t->send(out);
        REQUIRE(x->t->send_app(y->id, "app-" + std::to_string(x->id) + "-" + std::to_string(i)));
      }
    }
  }
  REQUIRE(run_until(io, [&] {
    for (auto* y : ms)
      if (y->rec.msgs.size() != 10 || y->rec.apps.size() != 10) return false;
    return true;
  }));
  for (auto* y : ms) {
    for (auto* x : ms) {
      if (x == y) continue;
      std::vector<Message> got;
      std::vector<std::string> apps;
      for (auto& m : y->rec.msgs)
        if (m.from == x->id) got.push_back(m);
      for (auto& [from, p] : y->rec.apps)
        if (from == x->id) apps.push_back(p);
      REQUIRE(got.size() == 5);
      REQUIRE(apps.size() == 5);
      for (int i = 0; i < 5; ++i) {
        REQUIRE(same_message(got[i], make_message(MessageType::app, x->id, y->id, i)));
        REQUIRE(apps[i] == "app-" + std::to_string(x->id) + "-" + std::to_string(i));
      }
    }
  }
  // Per sender the deliveries alternate m, a, m, a, ...: one stream keeps send order.
  std::vector<std::string> from1;
  for (const auto& o : m2.rec.order)
    if (o.substr(1) == "1") from1.push_back(o);
  REQUIRE(from1.size() == 10);
  for (size_t i = 0; i < from1.size(); ++i)
    REQUIRE(from1[i] == (i % 2 == 0 ? "m1" : "a1"));
}

TEST_CASE("transport: many queued messages go out batched and arrive in order", "[transport]") {
  asio::io_context io;
  Member a(io, 1), b(io, 2);
  a.t->set_peer(2, addr(b.port()));
  // Queued before the connection exists: all of it is written once the handshake completes.
  std::vector<Message> out;
  for (uint64_t i = 0; i < 2000; ++i) {
    Message m = make_message(MessageType::heartbeat, 1, 2, i);
    out.push_back(m);
  }
  a.t->send(out);
  REQUIRE(run_until(io, [&] { return b.rec.msgs.size() == 2000; }));
  for (uint64_t i = 0; i < 2000; ++i)
    REQUIRE(b.rec.msgs[i].commit == 33 + i);
  REQUIRE(a.t->stats().at(2).sent_msgs == 2000);
}

TEST_CASE("transport: batches larger than max_frame_bytes are split into several frames",
          "[transport]") {
  asio::io_context io;
  auto small = [](TransportOptions& o) { o.max_frame_bytes = 64 << 10; };
  Member a(io, 1, 0xC1, 0, small), b(io, 2, 0xC1, 0, small);
  a.t->set_peer(2, addr(b.port()));
  std::vector<Message> out;
  for (uint64_t i = 0; i < 100; ++i) {
    Message m = make_message(MessageType::app, 1, 2, i);
    m.entries[0].data = std::string(5000, 'x');
    out.push_back(m);
  }
  a.t->send(out);
  REQUIRE(run_until(io, [&] { return b.rec.msgs.size() == 100; }));
  for (uint64_t i = 0; i < 100; ++i)
    REQUIRE(b.rec.msgs[i].index == 10 + i);
  REQUIRE(b.t->counters().oversized_frames == 0);
}

TEST_CASE("transport: reconnects after the peer is destroyed and recreated on the same port",
          "[transport]") {
  asio::io_context io;
  Member a(io, 1);
  auto b = std::make_unique<Member>(io, 2);
  const uint16_t port = b->port();
  a.t->set_peer(2, addr(port));
  expect_delivery(io, a, *b);
  b.reset();
  // a notices the close, drops what it sends meanwhile and tells the core.
  REQUIRE(run_until(io, [&] {
    std::vector<Message> out{make_message(MessageType::heartbeat, 1, 2)};
    a.t->send(out);
    io.restart();
    io.run_one_for(std::chrono::milliseconds(5));
    return !a.t->stats().at(2).connected && !a.rec.unreachable.empty();
  }));
  REQUIRE(a.t->stats().at(2).dropped_msgs > 0);
  b = std::make_unique<Member>(io, 2, 0xC1, port);
  expect_delivery(io, a, *b);
  auto st = a.t->stats().at(2);
  REQUIRE(st.connected);
  REQUIRE(st.reconnects >= 1);
}

TEST_CASE("transport: a cluster id mismatch is refused and logged once", "[transport]") {
  asio::io_context io;
  Member a(io, 1, 0xAAAA), b(io, 2, 0xBBBB);
  a.t->set_peer(2, addr(b.port()));
  // Let a retry several times (backoff 5..40 ms).
  REQUIRE(run_until(io, [&] { return b.t->counters().refused_handshakes >= 3; }));
  std::vector<Message> out{make_message(MessageType::heartbeat, 1, 2)};
  a.t->send(out);
  run_ready(io);
  REQUIRE(b.rec.msgs.empty());
  REQUIRE(b.t->counters().accepted_connections == 0);
  REQUIRE_FALSE(a.t->stats().at(2).connected);
  REQUIRE(b.logs.count("cluster id mismatch") == 1);
  REQUIRE(a.logs.count("refused the connection") == 1);
}

TEST_CASE("transport: a hello addressed to another member is refused", "[transport]") {
  asio::io_context io;
  Member b(io, 2);
  RawClient c(io);
  REQUIRE(c.connect(b.port()));
  REQUIRE(c.write(hello_frame(0xC1, 1, 3)));
  REQUIRE(c.wait_closed());
  REQUIRE(b.t->counters().refused_handshakes == 1);
  // The refusal reply names the cause.
  REQUIRE(c.received.size() > 4);
  auto f = decode_frame(reinterpret_cast<const uint8_t*>(c.received.data()) + 4,
                        c.received.size() - 4, 4096);
  REQUIRE(f.ok());
  const auto& r = std::get<HelloReply>(f.value());
  REQUIRE_FALSE(r.accepted);
  REQUIRE(r.reason.find("addressed to member 3") != std::string::npos);
}

TEST_CASE("transport: an oversized frame closes the connection, the member keeps serving",
          "[transport]") {
  asio::io_context io;
  auto small = [](TransportOptions& o) { o.max_frame_bytes = 1 << 20; };
  Member a(io, 1), b(io, 2, 0xC1, 0, small);
  RawClient c(io);
  REQUIRE(c.connect(b.port()));
  REQUIRE(c.write(hello_frame(0xC1, 1, 2)));
  REQUIRE(c.write(header((1 << 20) + 1)));
  REQUIRE(c.wait_closed());
  REQUIRE(b.t->counters().oversized_frames == 1);
  REQUIRE(b.logs.count("max_frame_bytes (1048576)") == 1);
  // A member whose own message would exceed the limit drops it and tells the core.
  a.t->set_peer(2, addr(b.port()));
  expect_delivery(io, a, b);
  std::vector<Message> out{make_message(MessageType::app, 1, 2)};
  out[0].entries[0].data = std::string(70 << 20, 'x');
  a.t->send(out);
  REQUIRE(run_until(io, [&] { return !a.rec.unreachable.empty(); }));
  REQUIRE(a.logs.count("max_frame_bytes") >= 1);
}

TEST_CASE("transport: garbage on the port never crashes the member", "[transport]") {
  asio::io_context io;
  Member a(io, 1), b(io, 2);
  keel::raft::Rng rng(99);
  for (int round = 0; round < 40; ++round) {
    RawClient c(io);
    REQUIRE(c.connect(b.port()));
    std::string bytes;
    if (round % 4 == 1) bytes = hello_frame(0xC1, 1, 2);  // garbage after a good hello
    const size_t n = 1 + rng.below(3000);
    // A complete frame of garbage (round 0: the length itself is garbage, far too big).
    if (round % 4 != 0) bytes += header(static_cast<uint32_t>(rng.below(n)));
    for (size_t i = 0; i < n; ++i)
      bytes.push_back(static_cast<char>(rng.next()));
    if (round % 4 == 3) {
      // A well-formed batch frame whose message breaks validate() (to another member).
      std::string hb;
      Batch batch;
      batch.items.emplace_back(make_message(MessageType::heartbeat, 1, 5));
      encode_frame(Frame{batch}, &hb);
      bytes = hello_frame(0xC1, 1, 2) + hb;
    }
    REQUIRE(c.write(bytes));
    // Either closed for the garbage or waiting for more bytes: close it ourselves then.
    c.wait_closed();
  }
  REQUIRE(b.rec.msgs.empty());
  REQUIRE(b.t->counters().invalid_msgs >= 1);
  REQUIRE(b.logs.count("is not this member") >= 1);
  a.t->set_peer(2, addr(b.port()));
  expect_delivery(io, a, b);
}

TEST_CASE("transport: over the queue bound messages are dropped and the core is told",
          "[transport]") {
  asio::io_context io;
  auto bound = [](TransportOptions& o) { o.max_queue_bytes_per_peer = 4096; };
  Member a(io, 1, 0xC1, 0, bound), b(io, 2);
  a.t->set_peer(2, addr(b.port()));
  // Nothing has run yet: the connection is still being made, so everything queues.
  std::vector<Message> out;
  for (uint64_t i = 0; i < 100; ++i)
    out.push_back(make_message(MessageType::heartbeat, 1, 2, i));
  a.t->send(out);
  REQUIRE(a.rec.unreachable.empty());  // posted, never called from inside send()
  const auto dropped = a.t->stats().at(2).dropped_msgs;
  REQUIRE(dropped > 0);
  REQUIRE(dropped < 100);
  REQUIRE(run_until(
      io, [&] { return !a.rec.unreachable.empty() && b.rec.msgs.size() == 100 - dropped; }));
  REQUIRE(a.rec.unreachable == std::vector<NodeId>{2});
  for (size_t i = 0; i < b.rec.msgs.size(); ++i)
    REQUIRE(b.rec.msgs[i].commit == 33 + i);  // the head of the burst was kept, in order
  REQUIRE(a.logs.count("max_queue_bytes_per_peer") == 1);
}

TEST_CASE("transport: unknown peers, send_app bounds, stop inside a callback", "[transport]") {
  asio::io_context io;
  Member a(io, 1), b(io, 2);
  std::vector<Message> out{make_message(MessageType::heartbeat, 1, 9)};
  a.t->send(out);
  REQUIRE_FALSE(a.t->send_app(9, "x"));
  REQUIRE(run_until(io, [&] { return !a.rec.unreachable.empty(); }));
  REQUIRE(a.rec.unreachable[0] == 9);
  REQUIRE(a.t->counters().dropped_unknown_peer == 2);

  a.t->set_peer(2, addr(b.port()));
  int calls = 0;
  b.rec.on_any = [&] {
    ++calls;
    b.t->stop();
  };
  std::vector<Message> many;
  for (int i = 0; i < 10; ++i)
    many.push_back(make_message(MessageType::heartbeat, 1, 2, i));
  a.t->send(many);
  REQUIRE(run_until(io, [&] { return calls > 0; }));
  // Drain what is left; the stopped member gets no further callback.
  run_until(
      io, [] { return false; }, std::chrono::milliseconds(100));
  REQUIRE(calls == 1);
}

// Raft does not retransmit a forwarded proposal: every prop the transport never wrote goes
// back to the handler (posted), and one it wrote does not.
TEST_CASE("transport: props never written are handed back, delivered ones are not",
          "[transport][forward]") {
  asio::io_context io;
  Member a(io, 1);
  auto props_back = [&](size_t n) {
    return run_until(io, [&] { return a.rec.undelivered.size() >= n; });
  };

  // Unknown peer.
  std::vector<Message> out{make_message(MessageType::prop, 1, 9, 1)};
  a.t->send(out);
  REQUIRE(a.rec.undelivered.empty());  // posted, never called from inside send()
  REQUIRE(props_back(1));
  REQUIRE(same_message(a.rec.undelivered[0], make_message(MessageType::prop, 1, 9, 1)));

  // Queued while connecting to a port nobody listens on (any more): the dial fails and the
  // queue goes back; the heartbeat queued with it is Raft's to retransmit, not handed back.
  uint16_t dead = 0;
  {
    Member gone(io, 2);
    dead = gone.port();
  }
  a.t->set_peer(2, addr(dead));
  out = {make_message(MessageType::heartbeat, 1, 2), make_message(MessageType::prop, 1, 2, 2)};
  a.t->send(out);
  REQUIRE(props_back(2));
  REQUIRE(same_message(a.rec.undelivered[1], make_message(MessageType::prop, 1, 2, 2)));

  // In reconnect backoff: dropped at once, handed back.
  REQUIRE_FALSE(a.t->connected(2));
  REQUIRE(run_until(io, [&] { return a.t->stats().at(2).dropped_msgs >= 2; }));
  out = {make_message(MessageType::prop, 1, 2, 3)};
  a.t->send(out);
  REQUIRE(props_back(3));
  REQUIRE(same_message(a.rec.undelivered[2], make_message(MessageType::prop, 1, 2, 3)));

  // Queued for a peer that is then removed.
  a.t->set_peer(3, addr(dead));
  out = {make_message(MessageType::prop, 1, 3, 4)};
  a.t->send(out);
  a.t->remove_peer(3);
  REQUIRE(props_back(4));
  REQUIRE(same_message(a.rec.undelivered[3], make_message(MessageType::prop, 1, 3, 4)));

  // Delivered: the peer has it, nothing comes back.
  Member b(io, 4);
  a.t->set_peer(4, addr(b.port()));
  expect_delivery(io, a, b);
  REQUIRE(a.t->connected(4));
  out = {make_message(MessageType::prop, 1, 4, 5)};
  a.t->send(out);
  REQUIRE(run_until(
      io, [&] { return !b.rec.msgs.empty() && b.rec.msgs.back().type == MessageType::prop; }));
  run_ready(io);
  REQUIRE(a.rec.undelivered.size() == 4);
}

TEST_CASE("transport: listen errors name the address and the cause", "[transport]") {
  asio::io_context io;
  Member a(io, 1);
  Recorder r;
  Transport t(io, options(2), r);
  auto st = t.listen(addr(a.port()));
  REQUIRE_FALSE(st.ok());
  REQUIRE(st.error().message.find(addr(a.port())) != std::string::npos);
  REQUIRE(st.error().message.find("in use") != std::string::npos);
  auto bad = t.listen("nonsense");
  REQUIRE_FALSE(bad.ok());
  REQUIRE(bad.error().message.find("nonsense") != std::string::npos);
}

TEST_CASE("transport: split_host_port", "[transport]") {
  std::string h;
  uint16_t p = 0;
  REQUIRE(split_host_port("127.0.0.1:2380", &h, &p));
  REQUIRE((h == "127.0.0.1" && p == 2380));
  REQUIRE(split_host_port("[::1]:0", &h, &p));
  REQUIRE((h == "::1" && p == 0));
  REQUIRE(split_host_port("localhost:65535", &h, &p));
  REQUIRE_FALSE(split_host_port("::1:80", &h, &p));
  REQUIRE_FALSE(split_host_port("host:65536", &h, &p));
  REQUIRE_FALSE(split_host_port("host:", &h, &p));
  REQUIRE_FALSE(split_host_port(":80", &h, &p));
  REQUIRE_FALSE(split_host_port("host:8a", &h, &p));
}
