#include "cluster/node/relay.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace keel::node {

RelayHub::RelayHub(raft::NodeId self, RelayOptions options, RelayFeed& feed)
    : self_(self), opt_(options), feed_(feed), next_transfer_((self << 20) | 1) {}

void RelayHub::on_subscribe(raft::NodeId from, const wire::RelaySubscribe& m,
                            RelayClock::time_point now) {
  wire::RelayEntries header = feed_.relay_header();
  auto redirect = [&](const std::string& reason) {
    wire::RelayRedirect r;
    r.reason = reason;
    for (const auto& [id, c] : children_) {
      if (id != from) r.candidates.push_back(Member{id, c.name, c.peer_address, true});
    }
    feed_.relay_peer(from, m.peer_address, true);
    feed_.relay_send(from, wire::encode_relay_redirect(r));
    stats_.redirected++;
  };
  // A learner below `from` cannot feed it: that would close a loop cut off from the voters.
  if (std::find(header.path.begin(), header.path.end(), from) != header.path.end()) {
    return redirect("this member is below the asking learner");
  }
  auto it = children_.find(from);
  if (it == children_.end()) {
    if (!header.upstream_ok) return redirect("this member has no upstream of its own now");
    if (children_.size() >= opt_.fanout) {
      return redirect("this member feeds " + std::to_string(children_.size()) +
                      " learners (relay.fanout)");
    }
    it = children_.emplace(from, Child{}).first;
    stats_.accepted++;
    spdlog::info("relay: feeding learner {} ({:x}) from index {}", m.name, from, m.next_index);
  }
  Child& c = it->second;
  c.name = m.name;
  c.peer_address = m.peer_address;
  c.next = m.next_index;
  c.acked = m.next_index - 1;
  c.inflight.clear();
  c.inflight_bytes = 0;
  c.snap.reset();
  c.heard = now;
  c.sent = RelayClock::time_point{};
  feed_.relay_peer(from, m.peer_address, true);
  feed_.relay_send(from, wire::encode_relay_accept(header.path));
  feed(from, c, now);
}

void RelayHub::on_ack(raft::NodeId from, const wire::RelayAck& m, RelayClock::time_point now) {
  auto it = children_.find(from);
  if (it == children_.end()) return;
  Child& c = it->second;
  c.heard = now;
  if (m.applied > c.acked && m.applied < c.next) c.acked = m.applied;
  while (!c.inflight.empty() && c.inflight.front().last <= c.acked) {
    c.inflight_bytes -= c.inflight.front().bytes;
    c.inflight.pop_front();
  }
  if (m.has_report) c.report = m.subtree;
  feed(from, c, now);
}

bool RelayHub::on_snapshot_ack(raft::NodeId from, const wire::SnapshotAck& a,
                               RelayClock::time_point now) {
  auto it = children_.find(from);
  if (it == children_.end() || !it->second.snap) return false;
  Child& c = it->second;
  if (a.transfer != c.transfer) return true;  // an abandoned transfer's
  c.heard = now;
  if (!a.ok) {
    spdlog::warn("relay: learner {} refused the snapshot: {}", c.name, a.reason);
    drop(from, "it refused the snapshot");
    return true;
  }
  if (a.seq != c.chunks_acked || a.seq >= c.chunks_sent) return true;
  c.chunks_acked++;
  if (c.exhausted && c.chunks_acked == c.chunks_sent) {
    const uint64_t index = c.snap->info().applied_index;
    spdlog::info("relay: snapshot at index {} sent to learner {} ({} bytes)", index, c.name,
                 c.snap->bytes());
    c.snap.reset();
    c.next = index + 1;
    c.acked = index;
    stats_.snapshots++;
    c.sent = RelayClock::time_point{};  // the child installs on the next message: send it now
    feed(from, c, now);
    return true;
  }
  pump_snapshot(from, c);
  return true;
}

void RelayHub::start_snapshot(raft::NodeId id, Child& c) {
  auto src = feed_.relay_snapshot();
  if (!src) {
    spdlog::error("relay: no snapshot for learner {}: {}", c.name, src.error().message);
    return drop(id, "no snapshot could be read");
  }
  c.snap = std::move(src).value();
  c.transfer = next_transfer_++;
  c.chunks_sent = c.chunks_acked = 0;
  c.exhausted = false;
  c.inflight.clear();
  c.inflight_bytes = 0;
  spdlog::info("relay: learner {} needs index {}, no longer held here: sending a snapshot at {}",
               c.name, c.next, c.snap->info().applied_index);
  pump_snapshot(id, c);
}

void RelayHub::pump_snapshot(raft::NodeId id, Child& c) {
  std::string chunk;
  while (!c.exhausted &&
         c.chunks_sent - c.chunks_acked < std::max<size_t>(1, opt_.snapshot_window_chunks)) {
    auto more = c.snap->next(opt_.snapshot_chunk_bytes, &chunk);
    if (!more) return drop(id, "reading the snapshot failed: " + more.error().message);
    const bool last = !*more;
    if (!feed_.relay_send(id, wire::encode_snapshot_chunk(c.transfer, c.chunks_sent, last, chunk)))
      return drop(id, "its send queue refused a snapshot chunk");
    c.chunks_sent++;
    c.exhausted = last;
  }
}

void RelayHub::feed(raft::NodeId id, Child& c, RelayClock::time_point now) {
  if (c.snap) return;
  const uint64_t last = feed_.relay_last();
  bool sent_any = false;
  while (c.next <= last && c.inflight_bytes < opt_.window_bytes) {
    wire::RelayEntries m = feed_.relay_header();
    if (!feed_.relay_entries(c.next, last, opt_.batch_bytes, &m.entries)) {
      return start_snapshot(id, c);
    }
    if (m.entries.empty()) break;
    m.prev_index = c.next - 1;
    m.prev_term = feed_.relay_term(m.prev_index);
    size_t bytes = 0;
    for (const auto& e : m.entries)
      bytes += e.data.size() + 24;
    const uint64_t end = m.entries.back().index;
    if (!feed_.relay_send(id, wire::encode_relay_entries(m)))
      return;  // unreachable: it resubscribes
    c.inflight.push_back(Sent{end, bytes});
    c.inflight_bytes += bytes;
    c.next = end + 1;
    c.sent = now;
    sent_any = true;
    stats_.entry_msgs++;
    stats_.entry_bytes += bytes;
  }
  if (!sent_any && now - c.sent >= std::chrono::milliseconds(opt_.heartbeat_ms)) {
    wire::RelayEntries m = feed_.relay_header();
    m.prev_index = c.next - 1;
    m.prev_term = feed_.relay_term(m.prev_index);
    if (feed_.relay_send(id, wire::encode_relay_entries(m))) c.sent = now;
  }
}

void RelayHub::pump(RelayClock::time_point now) {
  // feed() may drop the child it feeds (a refused send): walk ids, not the map.
  std::vector<raft::NodeId> ids;
  ids.reserve(children_.size());
  for (const auto& [id, c] : children_)
    ids.push_back(id);
  for (raft::NodeId id : ids) {
    auto it = children_.find(id);
    if (it != children_.end()) feed(id, it->second, now);
  }
}

void RelayHub::tick(RelayClock::time_point now) {
  const auto timeout = std::chrono::milliseconds(opt_.timeout_ms);
  for (auto it = children_.begin(); it != children_.end();) {
    auto next = std::next(it);
    if (now - it->second.heard > timeout) {
      drop(it->first, "silent for " + std::to_string(opt_.timeout_ms) + " ms (relay.timeout_ms)");
    }
    it = next;
  }
  pump(now);
}

void RelayHub::drop(raft::NodeId id, const std::string& why) {
  auto it = children_.find(id);
  if (it == children_.end()) return;
  spdlog::info("relay: no longer feeding learner {} ({:x}): {}", it->second.name, id, why);
  children_.erase(it);
  stats_.dropped++;
  feed_.relay_peer(id, std::string(), false);
}

void RelayHub::drop_all() {
  while (!children_.empty())
    drop(children_.begin()->first, "this agent is stopping");
}

std::vector<Learner> RelayHub::subtree() const {
  std::vector<Learner> out;
  for (const auto& [id, c] : children_) {
    if (c.report.empty()) {
      out.push_back(Learner{id, c.name, c.peer_address, self_, c.acked});
      continue;
    }
    for (Learner l : c.report) {
      if (l.id == id) {  // the child's own row: its parent is this member, as seen from here
        l.parent = self_;
        l.applied = std::max(l.applied, c.acked);
      }
      out.push_back(std::move(l));
    }
  }
  return out;
}

}  // namespace keel::node
