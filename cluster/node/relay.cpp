#include "cluster/node/relay.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace keel::node {

RelayHub::RelayHub(raft::NodeId self, RelayOptions options, RelayFeed& feed)
    : self_(self), opt_(options), feed_(feed), next_transfer_((self << 20) | 1) {}

size_t RelayHub::fanout(const wire::RelayEntries& header) const {
  return header.leader == self_ ? std::min(opt_.leader_fanout, opt_.fanout) : opt_.fanout;
}

std::string RelayHub::fanout_reason(const wire::RelayEntries& header) const {
  return header.leader == self_ ? "relay.leader_fanout: this member leads" : "relay.fanout";
}

wire::RelayRedirect RelayHub::redirect_to_children(raft::NodeId from,
                                                   const std::string& reason) const {
  wire::RelayRedirect r;
  r.reason = reason;
  for (const auto& [id, c] : children_) {
    if (id != from) r.candidates.push_back(Member{id, c.name, c.peer_address, true});
  }
  return r;
}

void RelayHub::on_subscribe(raft::NodeId from, const wire::RelaySubscribe& m,
                            RelayClock::time_point now) {
  wire::RelayEntries header = feed_.relay_header();
  auto redirect = [&](const std::string& reason) {
    wire::RelayRedirect r = redirect_to_children(from, reason);
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
    // A learner that has applied nothing yet (its own snapshot still to come) has nothing to
    // stream: a child would refuse the state it could send.
    if (feed_.relay_last() == 0) return redirect("this member has applied nothing yet");
    if (children_.size() >= fanout(header)) {
      return redirect("this member feeds " + std::to_string(children_.size()) + " learners (" +
                      fanout_reason(header) + ")");
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
  // A learner with nothing applied starts from a snapshot, even where the log from index 1
  // is still held: the bootstrap configuration is in no log entry, only in snapshots, and a
  // learner that never learned the voters would stream snapshots its own children refuse.
  if (c.next <= 1) return start_snapshot(from, c);
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
  spdlog::info(
      "relay: learner {} needs index {} (not held here, or it is new): sending a snapshot at {}",
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
  // Over the fan-out (this member became leader): the children with the fewest learners
  // below them are let go, each told to attach under one of the children kept.
  const wire::RelayEntries header = feed_.relay_header();
  const size_t limit = fanout(header);
  if (children_.size() > limit) {
    std::vector<std::pair<size_t, raft::NodeId>> by_size;
    for (const auto& [id, c] : children_)
      by_size.emplace_back(c.report.size(), id);
    std::sort(by_size.begin(), by_size.end());
    const size_t shed = by_size.size() - limit;
    const std::string why = "this member feeds more than " + std::to_string(limit) + " learners (" +
                            fanout_reason(header) + ")";
    wire::RelayRedirect kept;
    kept.reason = why;
    for (size_t k = shed; k < by_size.size(); ++k) {
      const Child& c = children_.at(by_size[k].second);
      kept.candidates.push_back(Member{by_size[k].second, c.name, c.peer_address, true});
    }
    const std::string message = wire::encode_relay_redirect(kept);
    for (size_t k = 0; k < shed; ++k) {
      feed_.relay_send(by_size[k].second, message);
      stats_.redirected++;
      drop(by_size[k].second, why);
    }
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

// ---- RelayChild ------------------------------------------------------------------------

RelayChild::RelayChild(raft::NodeId self, std::string name, std::string peer_address,
                       RelayOptions options, RelayUplink& uplink)
    : self_(self),
      name_(std::move(name)),
      peer_address_(std::move(peer_address)),
      opt_(options),
      up_(uplink) {}

void RelayChild::tick(RelayClock::time_point now) {
  const auto timeout = std::chrono::milliseconds(opt_.timeout_ms);
  if (parent_ != 0) {
    if (now - heard_ > timeout) {
      detach("nothing from it for " + std::to_string(opt_.timeout_ms) + " ms (relay.timeout_ms)");
    } else if (!header_.upstream_ok && now - not_ok_since_ > timeout) {
      detach("it has had no upstream for " + std::to_string(opt_.timeout_ms) + " ms");
    } else if (up_.uplink_receiving()) {
      progress_ = now;  // a snapshot is streaming: the applied index moves when it is in
    } else if (now - progress_ > timeout) {
      detach("it lags: the applied index stayed at " + std::to_string(up_.uplink_applied()) +
             " for " + std::to_string(opt_.timeout_ms) + " ms while it knows of commit index " +
             std::to_string(header_.commit));
    }
  }
  if (parent_ == 0) attach_step(now);
}

void RelayChild::on_unreachable(raft::NodeId peer) {
  if (peer == parent_ && parent_ != 0) detach("the connection to it was lost");
}

void RelayChild::detach(const std::string& why) {
  spdlog::warn("relay: leaving parent {:x}: {}", parent_, why);
  parent_ = 0;
  path_.clear();
  trying_ = 0;
  candidates_.clear();
  tried_.clear();
  header_.upstream_ok = false;
  reattachments_++;
}

void RelayChild::subscribe(raft::NodeId to) {
  up_.uplink_send(to,
                  wire::encode_relay_subscribe({name_, peer_address_, up_.uplink_applied() + 1}));
}

void RelayChild::attach_step(RelayClock::time_point now) {
  if (trying_ != 0 && now < try_deadline_) return;
  trying_ = 0;
  if (candidates_.empty()) {
    if (now < next_round_) return;
    tried_.clear();
    // Voters first, each learner starting at a different one (spreads the first level).
    std::vector<Member> voters = up_.uplink_voters();
    if (voters.empty()) return;
    std::rotate(voters.begin(), voters.begin() + static_cast<long>(self_ % voters.size()),
                voters.end());
    candidates_.assign(voters.begin(), voters.end());
    next_round_ = now + std::chrono::milliseconds(opt_.heartbeat_ms);
  }
  while (!candidates_.empty()) {
    Member c = std::move(candidates_.front());
    candidates_.pop_front();
    if (c.id == self_ || tried_.count(c.id)) continue;
    tried_.insert(c.id);
    up_.uplink_dial(c.id, c.peer_address);
    subscribe(c.id);
    trying_ = c.id;
    try_deadline_ = now + std::chrono::milliseconds(std::min<uint32_t>(1000, opt_.timeout_ms));
    return;
  }
}

void RelayChild::on_accept(raft::NodeId from, std::vector<raft::NodeId> path,
                           RelayClock::time_point now) {
  if (from != trying_) return;
  trying_ = 0;
  if (std::find(path.begin(), path.end(), self_) != path.end()) return attach_step(now);
  parent_ = from;
  path_ = std::move(path);
  heard_ = not_ok_since_ = progress_ = now;
  header_.upstream_ok = true;
  candidates_.clear();
  next_report_ = now;
  spdlog::info("relay: fed by {:x} (path to a voter: {} hops) from index {}", from, path_.size(),
               up_.uplink_applied() + 1);
}

void RelayChild::on_redirect(raft::NodeId from, const wire::RelayRedirect& r,
                             RelayClock::time_point now) {
  if (from != 0 && from == parent_) {
    // The parent lets this learner go (it became leader and feeds fewer): attach under one
    // of the candidates it names, or start over from the voters.
    detach("it redirects: " + r.reason);
    tried_.insert(from);
    for (const auto& c : r.candidates) {
      if (c.id != self_ && !tried_.count(c.id)) candidates_.push_back(c);
    }
    return attach_step(now);
  }
  if (from != trying_) return;
  for (const auto& c : r.candidates) {
    if (c.id != self_ && !tried_.count(c.id)) candidates_.push_back(c);
  }
  trying_ = 0;
  attach_step(now);
}

void RelayChild::on_entries(raft::NodeId from, wire::RelayEntries m, RelayClock::time_point now) {
  if (from != parent_) return;  // a former parent: it lets go after its timeout
  heard_ = now;
  if (m.upstream_ok || header_.upstream_ok) not_ok_since_ = now;
  if (std::find(m.path.begin(), m.path.end(), self_) != m.path.end()) {
    return detach("its path to a voter runs through this learner");
  }
  path_ = m.path;
  std::vector<raft::Entry> entries = std::move(m.entries);
  header_ = std::move(m);
  if (auto staged = up_.uplink_staged(); staged && *staged == header_.prev_index) {
    up_.uplink_install(header_.prev_term);
  }
  const uint64_t applied = up_.uplink_applied();
  if (header_.prev_index > applied) {
    // A gap (a message was lost with a connection): ask to be fed from the applied index.
    if (!up_.uplink_receiving() &&
        now - resubscribed_ > std::chrono::milliseconds(opt_.heartbeat_ms)) {
      resubscribed_ = now;
      subscribe(from);
    }
    return;
  }
  std::erase_if(entries, [&](const raft::Entry& e) { return e.index <= applied; });
  if (!entries.empty()) up_.uplink_apply(entries);
  if (up_.uplink_applied() > applied || header_.commit <= up_.uplink_applied()) progress_ = now;
  wire::RelayAck ack;
  ack.applied = up_.uplink_applied();
  if (now >= next_report_) {
    next_report_ = now + std::chrono::milliseconds(1000);
    ack.has_report = true;
    ack.subtree.push_back(Learner{self_, name_, peer_address_, parent_, ack.applied});
    auto below = up_.uplink_subtree();
    ack.subtree.insert(ack.subtree.end(), below.begin(), below.end());
  }
  up_.uplink_send(from, wire::encode_relay_ack(ack));
}

}  // namespace keel::node
