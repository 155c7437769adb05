#pragma once
// Shared pieces of the transport tests: message builders, equality, a recording Handler and a
// loop runner that waits for a condition with a deadline (no sleeps).
#include <asio/io_context.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/raft/types.hpp"
#include "cluster/transport/transport.hpp"

namespace keel::transport::test {

using raft::Message;
using raft::MessageType;
using raft::NodeId;

inline bool same_snapshot(const std::shared_ptr<const raft::Snapshot>& a,
                          const std::shared_ptr<const raft::Snapshot>& b) {
  if (!a || !b) return !a && !b;
  return a->meta.index == b->meta.index && a->meta.term == b->meta.term &&
         a->meta.conf == b->meta.conf && a->data == b->data;
}

inline bool same_message(const Message& a, const Message& b) {
  if (a.type != b.type || a.from != b.from || a.to != b.to || a.term != b.term ||
      a.log_term != b.log_term || a.index != b.index || a.commit != b.commit ||
      a.reject_hint != b.reject_hint || a.reject != b.reject || a.transfer != b.transfer ||
      a.context != b.context || a.entries.size() != b.entries.size())
    return false;
  for (size_t i = 0; i < a.entries.size(); ++i) {
    const auto& x = a.entries[i];
    const auto& y = b.entries[i];
    if (x.index != y.index || x.term != y.term || x.type != y.type || x.data != y.data)
      return false;
  }
  return same_snapshot(a.snapshot, b.snapshot);
}

// A valid message of `type` from `from` to `to`, with payloads that exercise every field.
inline Message make_message(MessageType type, NodeId from, NodeId to, uint64_t seq = 0) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  const bool termless = type == MessageType::prop || type == MessageType::read_index;
  m.term = termless ? 0 : 7;
  switch (type) {
    case MessageType::app: {
      m.index = 10 + seq;
      m.log_term = 6;
      m.commit = 9;
      for (uint64_t i = 0; i < 3; ++i) {
        raft::Entry e;
        e.index = m.index + 1 + i;
        e.term = i == 0 ? 6 : 7;
        e.data = "entry-" + std::to_string(seq) + "-" + std::to_string(i) + std::string(1, '\0');
        m.entries.push_back(e);
      }
      raft::ConfState next{{1, 2, 3}, {9}};
      raft::Entry cc;
      cc.index = m.index + 4;
      cc.term = 7;
      cc.type = raft::EntryType::conf_change;
      cc.data = raft::encode_conf_change({raft::ConfChangeType::add_learner, 9}, &next);
      m.entries.push_back(cc);
      break;
    }
    case MessageType::app_resp:
      m.index = 42 + seq;
      m.reject = true;
      m.reject_hint = 40;
      m.log_term = 5;
      break;
    case MessageType::vote:
    case MessageType::pre_vote:
      m.index = 100 + seq;
      m.log_term = 6;
      m.transfer = true;
      break;
    case MessageType::vote_resp:
    case MessageType::pre_vote_resp:
      m.reject = (seq % 2) == 1;
      break;
    case MessageType::heartbeat:
      m.commit = 33 + seq;
      m.context = "ctx-" + std::to_string(seq);
      break;
    case MessageType::heartbeat_resp:
      m.context = "ctx-" + std::to_string(seq);
      break;
    case MessageType::snap: {
      auto s = std::make_shared<raft::Snapshot>();
      s->meta.index = 500 + seq;
      s->meta.term = 6;
      s->meta.conf = raft::ConfState{{1, 2, 3}, {4, 5}};
      s->data = std::string(100000, 'S') + std::to_string(seq) + std::string(3, '\0');
      m.snapshot = s;
      break;
    }
    case MessageType::prop: {
      raft::Entry e;
      e.data = "proposal-" + std::to_string(seq);
      m.entries.push_back(e);
      raft::Entry c;
      c.type = raft::EntryType::conf_change;
      c.data = raft::encode_conf_change({raft::ConfChangeType::add_voter, 4}, nullptr);
      m.entries.push_back(c);
      break;
    }
    case MessageType::read_index:
      m.context = "read-" + std::to_string(seq);
      break;
    case MessageType::read_index_resp:
      m.index = 77 + seq;
      m.context = "read-" + std::to_string(seq);
      break;
    case MessageType::transfer_leader:
      m.index = 3;
      break;
    case MessageType::timeout_now:
      break;
  }
  return m;
}

inline std::vector<MessageType> all_types() {
  std::vector<MessageType> out;
  for (uint8_t t = 0; t <= static_cast<uint8_t>(MessageType::timeout_now); ++t)
    out.push_back(static_cast<MessageType>(t));
  return out;
}

struct Recorder : Handler {
  std::vector<Message> msgs;
  std::vector<std::pair<NodeId, std::string>> apps;
  std::vector<NodeId> unreachable;
  std::vector<Message> undelivered;  // props handed back by on_undelivered
  std::vector<std::string> order;    // "m<from>" / "a<from>" per delivery
  std::function<void()> on_any;
  void on_message(Message m) override {
    msgs.push_back(std::move(m));
    order.push_back("m" + std::to_string(msgs.back().from));
    if (on_any) on_any();
  }
  void on_unreachable(NodeId peer) override { unreachable.push_back(peer); }
  void on_undelivered(std::vector<Message> props) override {
    for (auto& m : props)
      undelivered.push_back(std::move(m));
  }
  void on_app(NodeId from, std::string payload) override {
    apps.emplace_back(from, std::move(payload));
    order.push_back("a" + std::to_string(from));
    if (on_any) on_any();
  }
};

// Runs `io` until `pred` holds or the deadline passes; true if it holds.
inline bool run_until(asio::io_context& io, const std::function<bool()>& pred,
                      std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    io.restart();
    io.run_one_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Runs every ready handler (and those they post) without waiting for timers.
inline void run_ready(asio::io_context& io) {
  io.restart();
  io.poll();
}

struct LogCapture {
  std::vector<std::string> lines;
  std::function<void(LogLevel, std::string_view)> sink() {
    return [this](LogLevel, std::string_view s) { lines.emplace_back(s); };
  }
  size_t count(const std::string& needle) const {
    size_t n = 0;
    for (const auto& l : lines)
      n += l.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }
};

inline TransportOptions options(NodeId self, uint64_t cluster = 0xC1, LogCapture* logs = nullptr) {
  TransportOptions o;
  o.cluster_id = cluster;
  o.self = self;
  o.backoff_min_ms = 5;
  o.backoff_max_ms = 40;
  o.dial_timeout_ms = 2000;
  uint64_t state = self * 1000 + 7;
  o.random = [state]() mutable {
    return state = state * 6364136223846793005ULL + 1442695040888963407ULL;
  };
  if (logs) o.log = logs->sink();
  return o;
}

inline std::string addr(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

}  // namespace keel::transport::test
