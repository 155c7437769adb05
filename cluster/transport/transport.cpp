#include "cluster/transport/transport.hpp"

#include <spdlog/spdlog.h>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "cluster/raft/rand.hpp"
#include "cluster/transport/codec.hpp"
#include "cluster/transport/validate.hpp"

namespace keel::transport {

using asio::ip::tcp;
using raft::NodeId;

bool split_host_port(const std::string& host_port, std::string* host, uint16_t* port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size()) return false;
  std::string h = host_port.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string::npos) {
    return false;  // a v6 address needs brackets
  }
  const std::string p = host_port.substr(colon + 1);
  if (p.size() > 5) return false;
  uint32_t v = 0;
  for (char c : p) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return false;
  *host = std::move(h);
  *port = static_cast<uint16_t>(v);
  return true;
}

namespace {

constexpr size_t kReadChunk = 64 << 10;

// One TCP connection, either direction. Shared with its pending callbacks, which keep its
// buffers alive; `closed` makes late callbacks return.
struct Conn {
  explicit Conn(asio::io_context& io) : timer(io) {}
  std::optional<tcp::socket> socket;  // while connecting (outbound)
  std::unique_ptr<Stream> stream;
  FrameReader reader{kMaxHandshakeFrameBytes};
  std::vector<uint8_t> rbuf = std::vector<uint8_t>(kReadChunk);
  std::string wbuf;
  asio::steady_timer timer;  // dial / handshake deadline
  bool closed = false;
  bool handshaken = false;
  NodeId peer = raft::kNoNode;  // inbound: the dialling member, once the hello was accepted
  std::string remote;

  void close() {
    if (closed) return;
    closed = true;
    timer.cancel();
    if (socket) {
      std::error_code ec;
      socket->close(ec);
    }
    if (stream) stream->close();
  }
};

enum class PeerState : uint8_t { connecting, connected, backoff };

struct Peer {
  explicit Peer(asio::io_context& io) : resolver(io), backoff_timer(io) {}
  NodeId id = raft::kNoNode;
  std::string address;
  PeerState state = PeerState::connecting;
  std::shared_ptr<Conn> conn;
  tcp::resolver resolver;
  asio::steady_timer backoff_timer;
  std::vector<Item> queue;
  size_t queue_bytes = 0;
  bool writing = false;
  uint64_t inflight_msgs = 0;
  uint32_t attempt = 0;  // consecutive failures
  bool ever_connected = false;
  bool removed = false;
  Transport::PeerStats stats;
};

}  // namespace

struct Transport::Impl : std::enable_shared_from_this<Transport::Impl> {
  Impl(asio::io_context& io_, TransportOptions o, Handler& h)
      : io(io_), opt(std::move(o)), handler(h), acceptor(io_) {
    if (!opt.random) {
      auto rng = std::make_shared<raft::Rng>(opt.self * 0x9e3779b97f4a7c15ULL + 1);
      opt.random = [rng] { return rng->next(); };
    }
    if (!opt.stream_factory) {
      opt.stream_factory = [](tcp::socket s) -> std::unique_ptr<Stream> {
        return std::make_unique<TcpStream>(std::move(s));
      };
    }
  }

  asio::io_context& io;
  TransportOptions opt;
  Handler& handler;
  bool stopped = false;
  tcp::acceptor acceptor;
  uint16_t port = 0;
  std::map<NodeId, std::shared_ptr<Peer>> peers;
  std::map<NodeId, std::shared_ptr<Conn>> inbound;  // accepted, by dialling member
  std::set<std::shared_ptr<Conn>> pending;          // accepted, handshake not done
  Counters counters;
  std::set<NodeId> unreachable;            // to report (posted)
  std::vector<raft::Message> undelivered;  // props to hand back (posted; on_undelivered)
  bool reports_posted = false;
  std::set<NodeId> refusal_logged;
  std::map<std::string, std::chrono::steady_clock::time_point> rate;

  // ---- logging --------------------------------------------------------------------------
  void log(LogLevel level, const std::string& msg) {
    const std::string line = "transport " + std::to_string(opt.self) + ": " + msg;
    if (opt.log) {
      opt.log(level, line);
      return;
    }
    switch (level) {
      case LogLevel::debug:
        spdlog::debug("{}", line);
        break;
      case LogLevel::info:
        spdlog::info("{}", line);
        break;
      case LogLevel::warn:
        spdlog::warn("{}", line);
        break;
      case LogLevel::error:
        spdlog::error("{}", line);
        break;
    }
  }
  // At most one line per key per second.
  void log_limited(LogLevel level, const std::string& key, const std::string& msg) {
    const auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = rate.try_emplace(key, now);
    if (!fresh) {
      if (now - it->second < std::chrono::seconds(1)) return;
      it->second = now;
    }
    log(level, msg);
  }

  // ---- unreachable reports ----------------------------------------------------------------
  void report_unreachable(NodeId id) {
    unreachable.insert(id);
    post_reports();
  }
  // A dropped item that was never written: a prop goes back to the handler.
  void report_undelivered(Item& item) {
    auto* m = std::get_if<raft::Message>(&item);
    if (m == nullptr || m->type != raft::MessageType::prop) return;
    undelivered.push_back(std::move(*m));
    post_reports();
  }
  void post_reports() {
    if (reports_posted) return;
    reports_posted = true;
    asio::post(io, [self = shared_from_this()] {
      self->reports_posted = false;
      auto ids = std::move(self->unreachable);
      self->unreachable.clear();
      auto props = std::move(self->undelivered);
      self->undelivered.clear();
      for (NodeId id : ids) {
        if (self->stopped) return;
        self->handler.on_unreachable(id);
      }
      if (!props.empty() && !self->stopped) self->handler.on_undelivered(std::move(props));
    });
  }

  // Drops what is queued (never written); `report`: the core is told the peer is unreachable.
  void drop_queue(Peer& p, bool report = true) {
    if (p.queue.empty()) return;
    p.stats.dropped_msgs += p.queue.size();
    for (Item& item : p.queue)
      report_undelivered(item);
    p.queue.clear();
    p.queue_bytes = 0;
    if (report) report_unreachable(p.id);
  }

  // ---- outbound -----------------------------------------------------------------------------
  void dial(const std::shared_ptr<Peer>& p) {
    if (stopped || p->removed) return;
    p->state = PeerState::connecting;
    auto c = std::make_shared<Conn>(io);
    p->conn = c;
    std::string host;
    uint16_t port_num = 0;
    if (!split_host_port(p->address, &host, &port_num)) {
      fail(p, c, "malformed address \"" + p->address + "\"");
      return;
    }
    c->timer.expires_after(std::chrono::milliseconds(opt.dial_timeout_ms));
    c->timer.async_wait([self = shared_from_this(), p, c](std::error_code ec) {
      if (ec || !self->current(p, c) || c->handshaken) return;
      self->fail(p, c, "dial timed out");
    });
    std::error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (!ec) {
      connect(p, c, {tcp::endpoint(addr, port_num)});
      return;
    }
    p->resolver.async_resolve(
        host, std::to_string(port_num),
        [self = shared_from_this(), p, c](std::error_code ec, tcp::resolver::results_type res) {
          if (!self->current(p, c)) return;
          if (ec) {
            self->fail(p, c, "resolve: " + ec.message());
            return;
          }
          std::vector<tcp::endpoint> eps;
          for (const auto& r : res)
            eps.push_back(r.endpoint());
          self->connect(p, c, std::move(eps));
        });
  }

  bool current(const std::shared_ptr<Peer>& p, const std::shared_ptr<Conn>& c) const {
    return !stopped && !p->removed && p->conn == c && !c->closed;
  }

  void connect(const std::shared_ptr<Peer>& p, const std::shared_ptr<Conn>& c,
               std::vector<tcp::endpoint> eps) {
    c->socket.emplace(io);
    asio::async_connect(*c->socket, eps,
                        [self = shared_from_this(), p, c](std::error_code ec, tcp::endpoint) {
                          if (!self->current(p, c)) return;
                          if (ec) {
                            self->fail(p, c, "connect: " + ec.message());
                            return;
                          }
                          self->secure(p, c);
                        });
  }

  void secure(const std::shared_ptr<Peer>& p, const std::shared_ptr<Conn>& c) {
    c->stream = opt.stream_factory(std::move(*c->socket));
    c->socket.reset();
    c->remote = c->stream->remote_address();
    c->stream->start(true, [self = shared_from_this(), p, c](std::error_code ec) {
      if (!self->current(p, c)) return;
      if (ec) {
        self->fail(p, c, "secure: " + ec.message());
        return;
      }
      Hello h;
      h.cluster_id = self->opt.cluster_id;
      h.from = self->opt.self;
      h.to = p->id;
      c->wbuf.clear();
      encode_frame(Frame{h}, &c->wbuf);
      c->stream->async_write({asio::buffer(c->wbuf)}, [self, p, c](std::error_code ec, size_t) {
        if (!self->current(p, c)) return;
        if (ec) {
          self->fail(p, c, "write hello: " + ec.message());
          return;
        }
        self->read_out(p, c);
      });
    });
  }

  void read_out(const std::shared_ptr<Peer>& p, const std::shared_ptr<Conn>& c) {
    c->stream->async_read_some(
        asio::buffer(c->rbuf), [self = shared_from_this(), p, c](std::error_code ec, size_t n) {
          if (!self->current(p, c)) return;
          if (ec) {
            self->fail(p, c, ec == asio::error::eof ? "closed by peer" : "read: " + ec.message());
            return;
          }
          c->reader.feed(c->rbuf.data(), n);
          for (;;) {
            const uint8_t* body = nullptr;
            size_t size = 0;
            const auto r = c->reader.next(&body, &size);
            if (r == FrameReader::Next::need_more) break;
            if (r == FrameReader::Next::too_big) {
              self->fail(p, c,
                         "reply frame of " + std::to_string(c->reader.announced()) +
                             " bytes exceeds the handshake limit (" +
                             std::to_string(kMaxHandshakeFrameBytes) + ")");
              return;
            }
            auto f = decode_frame(body, size, kMaxHandshakeFrameBytes);
            if (!f) {
              self->fail(p, c, f.error().message);
              return;
            }
            if (!self->on_out_frame(p, c, std::move(f).value())) return;
          }
          self->read_out(p, c);
        });
  }

  // False when the connection was failed.
  bool on_out_frame(const std::shared_ptr<Peer>& p, const std::shared_ptr<Conn>& c, Frame f) {
    if (!c->handshaken) {
      const auto* r = std::get_if<HelloReply>(&f);
      if (r == nullptr) {
        fail(p, c, "expected a hello reply");
        return false;
      }
      if (!r->accepted) {
        if (refusal_logged.insert(p->id).second)
          log(LogLevel::warn, "peer " + std::to_string(p->id) + " at " + p->address +
                                  " refused the connection: " + r->reason);
        fail(p, c, "refused: " + r->reason, /*quiet=*/true);
        return false;
      }
      if (r->cluster_id != opt.cluster_id || r->node != p->id) {
        const std::string why = r->cluster_id != opt.cluster_id
                                    ? "cluster id " + std::to_string(r->cluster_id) + " (ours " +
                                          std::to_string(opt.cluster_id) + ")"
                                    : "member " + std::to_string(r->node) + " answered";
        if (refusal_logged.insert(p->id).second)
          log(LogLevel::warn,
              "refusing peer " + std::to_string(p->id) + " at " + p->address + ": " + why);
        fail(p, c, "refused: " + why, /*quiet=*/true);
        return false;
      }
      c->handshaken = true;
      c->timer.cancel();
      refusal_logged.erase(p->id);
      p->state = PeerState::connected;
      p->stats.connected = true;
      if (p->ever_connected) ++p->stats.reconnects;
      p->ever_connected = true;
      p->attempt = 0;
      log(LogLevel::info, "connected to peer " + std::to_string(p->id) + " at " + c->remote);
      flush(p);
      return true;
    }
    if (std::holds_alternative<SnapshotChunkAck>(f)) return true;  // reserved: streamed snaps
    fail(p, c, "unexpected frame from the accepting side");
    return false;
  }

  void fail(const std::shared_ptr<Peer>& p, const std::shared_ptr<Conn>& c, const std::string& why,
            bool quiet = false) {
    if (!current(p, c)) return;
    c->close();
    const bool was_connected = p->state == PeerState::connected;
    p->state = PeerState::backoff;
    p->stats.connected = false;
    if (p->writing) {
      p->stats.dropped_msgs += p->inflight_msgs;
      p->inflight_msgs = 0;
      p->writing = false;
      report_unreachable(p->id);
    }
    drop_queue(*p);
    if (!quiet) {
      log_limited(was_connected ? LogLevel::warn : LogLevel::debug,
                  "peer-fail-" + std::to_string(p->id),
                  "connection to peer " + std::to_string(p->id) + " at " + p->address + ": " + why);
    }
    const uint32_t lo = std::max<uint32_t>(1, opt.backoff_min_ms);
    const uint32_t hi = std::max(lo, opt.backoff_max_ms);
    uint64_t d = lo;
    for (uint32_t i = 0; i < p->attempt && d < hi; ++i)
      d *= 2;
    d = std::min<uint64_t>(d, hi);
    const uint64_t wait = d / 2 + opt.random() % (d / 2 + 1);
    if (p->attempt < 32) ++p->attempt;
    p->backoff_timer.expires_after(std::chrono::milliseconds(wait));
    p->backoff_timer.async_wait([self = shared_from_this(), p, c](std::error_code ec) {
      if (ec || self->stopped || p->removed || p->conn != c) return;
      self->dial(p);
    });
  }

  // Queues one item; false if dropped.
  bool enqueue(const std::shared_ptr<Peer>& p, Item item) {
    const size_t bytes = encoded_size_bound(item);
    const char* why = nullptr;
    size_t limit = 0;
    if (p->state == PeerState::backoff) {
      // Known down: drop quietly; the core is told and retransmits later.
    } else if (bytes + kBatchOverheadBytes > opt.max_frame_bytes) {
      why = "max_frame_bytes";
      limit = opt.max_frame_bytes;
    } else if (p->queue_bytes + bytes > opt.max_queue_bytes_per_peer) {
      why = "max_queue_bytes_per_peer";
      limit = opt.max_queue_bytes_per_peer;
    } else {
      p->queue.push_back(std::move(item));
      p->queue_bytes += bytes;
      return true;
    }
    ++p->stats.dropped_msgs;
    report_undelivered(item);
    if (why != nullptr) {
      log_limited(LogLevel::warn, std::string("drop-") + why + std::to_string(p->id),
                  "dropping a message of ~" + std::to_string(bytes) + " bytes to peer " +
                      std::to_string(p->id) + ": over " + why + " (" + std::to_string(limit) + ")");
    }
    return false;
  }

  void flush(const std::shared_ptr<Peer>& p) {
    if (stopped || p->state != PeerState::connected || p->writing || p->queue.empty()) return;
    auto c = p->conn;
    std::vector<Item> items = std::move(p->queue);
    p->queue.clear();
    p->queue_bytes = 0;
    c->wbuf.clear();
    // Pack into as few frames as fit max_frame_bytes (by the encoded-size bound); all frames
    // go out in one write.
    size_t first = 0;
    while (first < items.size()) {
      size_t bytes = kBatchOverheadBytes;
      size_t last = first;
      while (last < items.size()) {
        const size_t b = encoded_size_bound(items[last]);
        if (last > first && bytes + b > opt.max_frame_bytes) break;
        bytes += b;
        ++last;
      }
      encode_batch(items, first, last, &c->wbuf);
      first = last;
    }
    p->writing = true;
    p->inflight_msgs = items.size();
    items.clear();
    c->stream->async_write({asio::buffer(c->wbuf)},
                           [self = shared_from_this(), p, c](std::error_code ec, size_t n) {
                             if (!self->current(p, c)) return;
                             if (ec) {
                               self->fail(p, c, "write: " + ec.message());
                               return;
                             }
                             p->writing = false;
                             p->stats.sent_msgs += p->inflight_msgs;
                             p->stats.sent_bytes += n;
                             p->inflight_msgs = 0;
                             self->flush(p);
                           });
  }

  // ---- inbound ------------------------------------------------------------------------------
  void accept() {
    acceptor.async_accept([self = shared_from_this()](std::error_code ec, tcp::socket s) {
      if (self->stopped) return;
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        self->log_limited(LogLevel::warn, "accept", "accept: " + ec.message());
      } else {
        self->start_inbound(std::move(s));
      }
      self->accept();
    });
  }

  void start_inbound(tcp::socket s) {
    auto c = std::make_shared<Conn>(io);
    c->stream = opt.stream_factory(std::move(s));
    c->remote = c->stream->remote_address();
    pending.insert(c);
    c->timer.expires_after(std::chrono::milliseconds(opt.dial_timeout_ms));
    c->timer.async_wait([self = shared_from_this(), c](std::error_code ec) {
      if (ec || self->stopped || c->closed || c->handshaken) return;
      self->log_limited(LogLevel::debug, "hs-timeout",
                        "no handshake from " + c->remote + " in time: closed");
      self->close_inbound(c);
    });
    c->stream->start(false, [self = shared_from_this(), c](std::error_code ec) {
      if (self->stopped || c->closed) return;
      if (ec) {
        self->log_limited(LogLevel::warn, "secure-in", "secure " + c->remote + ": " + ec.message());
        self->close_inbound(c);
        return;
      }
      self->read_in(c);
    });
  }

  void close_inbound(const std::shared_ptr<Conn>& c) {
    c->close();
    pending.erase(c);
    auto it = inbound.find(c->peer);
    if (it != inbound.end() && it->second == c) inbound.erase(it);
  }

  void read_in(const std::shared_ptr<Conn>& c) {
    c->stream->async_read_some(
        asio::buffer(c->rbuf), [self = shared_from_this(), c](std::error_code ec, size_t n) {
          if (self->stopped || c->closed) return;
          if (ec) {
            if (ec != asio::error::eof)
              self->log_limited(LogLevel::debug, "read-in-" + std::to_string(c->peer),
                                "read from " + c->remote + ": " + ec.message());
            self->close_inbound(c);
            return;
          }
          c->reader.feed(c->rbuf.data(), n);
          for (;;) {
            const uint8_t* body = nullptr;
            size_t size = 0;
            const auto r = c->reader.next(&body, &size);
            if (r == FrameReader::Next::need_more) break;
            if (r == FrameReader::Next::too_big) {
              const bool hs = !c->handshaken;
              const size_t limit = c->reader.limit();
              if (!hs)
                ++self->counters.oversized_frames;
              else
                ++self->counters.decode_errors;
              self->log_limited(
                  LogLevel::warn, "big-" + std::to_string(c->peer),
                  "frame of " + std::to_string(c->reader.announced()) + " bytes from " +
                      self->who(c) + " exceeds " +
                      (hs ? "the handshake frame limit" : std::string("max_frame_bytes")) + " (" +
                      std::to_string(limit) + "): connection closed");
              self->close_inbound(c);
              return;
            }
            auto f = decode_frame(body, size, c->reader.limit());
            if (!f) {
              ++self->counters.decode_errors;
              self->log_limited(
                  LogLevel::warn, "decode-" + std::to_string(c->peer),
                  "from " + self->who(c) + ": " + f.error().message + ": connection closed");
              self->close_inbound(c);
              return;
            }
            if (!self->on_in_frame(c, std::move(f).value())) return;
            if (self->stopped || c->closed) return;
          }
          self->read_in(c);
        });
  }

  std::string who(const std::shared_ptr<Conn>& c) const {
    return c->handshaken ? "peer " + std::to_string(c->peer) + " (" + c->remote + ")" : c->remote;
  }

  bool on_in_frame(const std::shared_ptr<Conn>& c, Frame f) {
    if (!c->handshaken) {
      const auto* h = std::get_if<Hello>(&f);
      if (h == nullptr) {
        ++counters.decode_errors;
        log_limited(LogLevel::warn, "nohello",
                    "first frame from " + c->remote + " is not a hello: connection closed");
        close_inbound(c);
        return false;
      }
      std::string why;
      if (h->version != kProtocolVersion) {
        why = "protocol version " + std::to_string(h->version) + " (ours " +
              std::to_string(kProtocolVersion) + ")";
      } else if (h->cluster_id != opt.cluster_id) {
        why = "cluster id mismatch: " + std::to_string(h->cluster_id) + " (ours " +
              std::to_string(opt.cluster_id) + ")";
      } else if (h->to != opt.self) {
        why = "addressed to member " + std::to_string(h->to) + ", this is " +
              std::to_string(opt.self);
      } else if (h->from == raft::kNoNode || h->from == opt.self) {
        why = "bad sender id " + std::to_string(h->from);
      }
      HelloReply reply;
      reply.cluster_id = opt.cluster_id;
      reply.node = opt.self;
      if (!why.empty()) {
        ++counters.refused_handshakes;
        if (refusal_logged.insert(h->from).second)
          log(LogLevel::warn, "refused connection from " + c->remote + " (member " +
                                  std::to_string(h->from) + "): " + why);
        reply.accepted = false;
        reply.reason = why;
        c->wbuf.clear();
        encode_frame(Frame{reply}, &c->wbuf);
        c->handshaken = true;  // stops the timer's close; the write's completion closes
        c->timer.cancel();
        pending.erase(c);
        c->stream->async_write(
            {asio::buffer(c->wbuf)},
            [self = shared_from_this(), c](std::error_code, size_t) { c->close(); });
        return false;
      }
      c->handshaken = true;
      c->timer.cancel();
      c->peer = h->from;
      c->reader.set_limit(opt.max_frame_bytes);
      pending.erase(c);
      auto& slot = inbound[c->peer];
      if (slot) slot->close();  // the peer redialled: the new stream replaces the old one
      slot = c;
      ++counters.accepted_connections;
      refusal_logged.erase(c->peer);
      reply.accepted = true;
      c->wbuf.clear();
      encode_frame(Frame{reply}, &c->wbuf);
      c->stream->async_write({asio::buffer(c->wbuf)},
                             [self = shared_from_this(), c](std::error_code ec, size_t) {
                               if (ec && !self->stopped && !c->closed) self->close_inbound(c);
                             });
      return true;
    }
    auto* batch = std::get_if<Batch>(&f);
    if (batch == nullptr) {
      ++counters.decode_errors;
      log_limited(LogLevel::warn, "kind-" + std::to_string(c->peer),
                  "unexpected frame kind from " + who(c) + ": connection closed");
      close_inbound(c);
      return false;
    }
    // Validate the whole batch first: a bad batch delivers nothing.
    for (const Item& item : batch->items) {
      const auto* m = std::get_if<raft::Message>(&item);
      if (m == nullptr) continue;
      Status st =
          m->from != c->peer
              ? Status(make_error(ErrorCode::invalid_argument,
                                  "message from " + std::to_string(m->from) +
                                      " on the stream of member " + std::to_string(c->peer)))
              : validate(*m, opt.self);
      if (!st) {
        ++counters.invalid_msgs;
        log_limited(
            LogLevel::warn, "invalid-" + std::to_string(c->peer),
            "dropping batch from " + who(c) + ": " + st.error().message + ": connection closed");
        close_inbound(c);
        return false;
      }
    }
    const NodeId from = c->peer;
    for (Item& item : batch->items) {
      if (stopped) return false;
      if (auto* m = std::get_if<raft::Message>(&item)) {
        ++counters.received_msgs;
        handler.on_message(std::move(*m));
      } else {
        ++counters.received_apps;
        handler.on_app(from, std::move(std::get<AppPayload>(item).payload));
      }
    }
    return true;
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    std::error_code ec;
    acceptor.close(ec);
    for (auto& [id, p] : peers) {
      p->removed = true;
      p->resolver.cancel();
      p->backoff_timer.cancel();
      if (p->conn) p->conn->close();
    }
    peers.clear();
    for (auto& [id, c] : inbound)
      c->close();
    inbound.clear();
    for (const auto& c : pending)
      c->close();
    pending.clear();
    unreachable.clear();
    undelivered.clear();
  }
};

Transport::Transport(asio::io_context& io, TransportOptions options, Handler& handler)
    : impl_(std::make_shared<Impl>(io, std::move(options), handler)) {}

Transport::~Transport() {
  stop();
}

Status Transport::listen(const std::string& host_port) {
  Impl& s = *impl_;
  auto err = [&](const std::string& why) {
    return Status(make_error(ErrorCode::invalid_argument, "listen on " + host_port + ": " + why));
  };
  if (s.stopped) return err("transport stopped");
  if (s.acceptor.is_open()) return err("already listening");
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(host_port, &host, &port)) return err("expected host:port");
  std::error_code ec;
  tcp::endpoint ep;
  const auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, port);
  } else {
    tcp::resolver resolver(s.io);
    auto res = resolver.resolve(host, std::to_string(port), ec);
    if (ec || res.empty()) return err("resolve " + host + ": " + ec.message());
    ep = res.begin()->endpoint();
  }
  s.acceptor.open(ep.protocol(), ec);
  if (ec) return err(ec.message());
  s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::error_code ignored;
    s.acceptor.close(ignored);
    return err(ec.message());
  }
  s.port = s.acceptor.local_endpoint(ec).port();
  s.log(LogLevel::info, "listening on " + host + ":" + std::to_string(s.port));
  s.accept();
  return ok_status();
}

uint16_t Transport::listen_port() const {
  return impl_->port;
}

void Transport::set_peer(NodeId id, const std::string& host_port) {
  Impl& s = *impl_;
  if (s.stopped || id == raft::kNoNode || id == s.opt.self) return;
  auto it = s.peers.find(id);
  if (it != s.peers.end()) {
    Peer& p = *it->second;
    if (p.address == host_port) return;
    p.address = host_port;
    if (p.conn) p.conn->close();
    p.backoff_timer.cancel();
    p.resolver.cancel();
    if (p.writing) {
      p.stats.dropped_msgs += p.inflight_msgs;
      p.inflight_msgs = 0;
      p.writing = false;
      s.report_unreachable(id);
    }
    p.stats.connected = false;
    p.attempt = 0;
    s.dial(it->second);  // what is queued waits for the new connection
    return;
  }
  auto p = std::make_shared<Peer>(s.io);
  p->id = id;
  p->address = host_port;
  s.peers.emplace(id, p);
  s.dial(p);
}

void Transport::remove_peer(NodeId id) {
  Impl& s = *impl_;
  auto it = s.peers.find(id);
  if (it == s.peers.end()) return;
  Peer& p = *it->second;
  p.removed = true;
  p.resolver.cancel();
  p.backoff_timer.cancel();
  if (p.conn) p.conn->close();
  s.drop_queue(p, /*report=*/false);  // a removed member is not "unreachable"
  s.peers.erase(it);
}

void Transport::send(std::vector<raft::Message>& messages) {
  Impl& s = *impl_;
  if (s.stopped) {
    messages.clear();
    return;
  }
  std::vector<std::shared_ptr<Peer>> touched;
  for (raft::Message& m : messages) {
    auto it = s.peers.find(m.to);
    if (it == s.peers.end()) {
      ++s.counters.dropped_unknown_peer;
      s.report_unreachable(m.to);
      Item item{std::move(m)};
      s.report_undelivered(item);
      continue;
    }
    const NodeId to = m.to;
    if (!s.enqueue(it->second, Item{std::move(m)})) {
      s.report_unreachable(to);
      continue;
    }
    if (touched.empty() || touched.back() != it->second) touched.push_back(it->second);
  }
  messages.clear();
  for (const auto& p : touched)
    s.flush(p);
}

bool Transport::send_app(NodeId to, std::string payload) {
  Impl& s = *impl_;
  if (s.stopped) return false;
  auto it = s.peers.find(to);
  if (it == s.peers.end()) {
    ++s.counters.dropped_unknown_peer;
    return false;
  }
  if (!s.enqueue(it->second, Item{AppPayload{std::move(payload)}})) return false;
  s.flush(it->second);
  return true;
}

void Transport::stop() {
  impl_->stop();
}

std::map<NodeId, Transport::PeerStats> Transport::stats() const {
  std::map<NodeId, PeerStats> out;
  for (const auto& [id, p] : impl_->peers)
    out[id] = p->stats;
  return out;
}

bool Transport::connected(NodeId peer) const {
  auto it = impl_->peers.find(peer);
  return it != impl_->peers.end() && it->second->state == PeerState::connected;
}

Transport::Counters Transport::counters() const {
  return impl_->counters;
}

}  // namespace keel::transport
