#pragma once
// Peer-to-peer messaging for the Raft driver (etcd-style streams): one outbound TCP connection
// per peer, dialled by the sender; inbound connections carry messages from the member that
// dialled them. Frames are capnp/peer.capnp messages (codec.hpp); every received Raft message
// passes validate() (validate.hpp) before it reaches the Handler.
//
// Threading: every public method is called on the thread running `io` (the node thread), and
// every Handler callback runs there, never from inside a public method (on_unreachable is
// posted). No global state. After stop() returns no callback runs.
//
// Connection life (outbound, per peer): resolve -> connect -> Stream::start (TLS later) ->
// Hello{magic, version, cluster_id, from, to} -> HelloReply{accepted} -> connected. Messages
// sent while connecting are queued; in backoff they are dropped at once. A failure or close at
// any step drops what is queued for the peer (Raft retransmits; the core is told through
// on_unreachable) and redials after an exponential backoff with jitter (backoff_min_ms
// doubling up to backoff_max_ms, then uniformly in [d/2, d]).
//
// Proposals: Raft retransmits appends, votes and heartbeats but not a forwarded proposal
// (type prop), so every prop the transport certainly did not write to a connection goes back
// to the Handler (on_undelivered): refused by send() (unknown peer, peer in backoff, over a
// bound), still queued when the connection failed (before it was up or later), or queued
// when the peer was removed. A prop that was part of a write in progress when the connection
// failed may have reached the peer: it is never handed back (resending it could apply it
// twice).
//
// Snapshots: the node streams the state as app messages (chunks, each acknowledged by an
// app message back; cluster/node/node.cpp, "Snapshots"), so the queues' bounds and batching
// apply to them too; the snap Raft message itself carries only metadata.
#include <asio/io_context.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/model/result.hpp"
#include "cluster/raft/types.hpp"
#include "cluster/transport/stream.hpp"

namespace keel::transport {

enum class LogLevel : uint8_t { debug, info, warn, error };

struct TransportOptions {
  uint64_t cluster_id = 0;  // every connection's handshake carries it; a mismatch is refused
  raft::NodeId self = 0;
  size_t max_frame_bytes = 64 << 20;                    // bigger frames: connection closed, logged
  size_t max_queue_bytes_per_peer = 64 << 20;           // over it: dropped + on_unreachable
  uint32_t backoff_min_ms = 20, backoff_max_ms = 1000;  // reconnect backoff (plus jitter)
  uint32_t dial_timeout_ms = 5000;   // resolve + connect + handshake, either side
  std::function<uint64_t()> random;  // jitter source; empty = keel::raft::Rng(self)
  std::function<void(LogLevel, std::string_view)> log;  // empty = spdlog's default logger
  StreamFactory stream_factory;                         // empty = plain TCP (TcpStream)
};

class Handler {  // implemented by the node
 public:
  virtual ~Handler() = default;
  virtual void on_message(raft::Message m) = 0;                     // already validated
  virtual void on_unreachable(raft::NodeId peer) = 0;               // a send to peer failed/dropped
  virtual void on_app(raft::NodeId from, std::string payload) = 0;  // opaque app message
  // Prop messages that certainly reached no peer (see "Proposals" above), in the order they
  // were dropped. Posted, like on_unreachable.
  virtual void on_undelivered(std::vector<raft::Message> props) = 0;
};

class Transport {
 public:
  Transport(asio::io_context& io, TransportOptions options, Handler& handler);
  ~Transport();  // stop()s
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // "127.0.0.1:2380", "[::1]:2380", "localhost:2380"; port 0 = pick one (see listen_port()).
  Status listen(const std::string& host_port);
  uint16_t listen_port() const;

  void set_peer(raft::NodeId id, const std::string& host_port);  // add or change address
  void remove_peer(raft::NodeId id);

  // Takes the messages (the vector is left empty) and queues them per peer; everything queued
  // for a peer goes out batched in one write as soon as its connection is free.
  void send(std::vector<raft::Message>& messages);
  // False (dropped) if `to` is unknown, not connectable now, or over the queue bound.
  bool send_app(raft::NodeId to, std::string payload);

  void stop();  // closes everything; no callback after it returns

  struct PeerStats {
    bool connected = false;
    uint64_t sent_msgs = 0, sent_bytes = 0, dropped_msgs = 0, reconnects = 0;
  };
  std::map<raft::NodeId, PeerStats> stats() const;
  bool connected(raft::NodeId peer) const;  // the outbound connection to peer is up now

  // Inbound side, all peers together.
  struct Counters {
    uint64_t accepted_connections = 0;  // handshakes accepted
    uint64_t refused_handshakes = 0;    // wrong cluster, wrong member, bad version, ...
    uint64_t received_msgs = 0;         // Raft messages delivered to on_message
    uint64_t received_apps = 0;         // app messages delivered to on_app
    uint64_t invalid_msgs = 0;          // rejected by validate() (connection closed)
    uint64_t decode_errors = 0;         // malformed frames (connection closed)
    uint64_t oversized_frames = 0;      // over max_frame_bytes (connection closed)
    uint64_t dropped_unknown_peer = 0;  // sends to a peer without set_peer
  };
  Counters counters() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// "host:port" / "[v6]:port" -> (host, port); false if malformed.
bool split_host_port(const std::string& host_port, std::string* host, uint16_t* port);

}  // namespace keel::transport
