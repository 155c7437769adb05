#include "cluster/raft/raft.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <limits>
#include <utility>

#include "cluster/raft/assert.hpp"

#ifdef KEEL_RAFT_INVARIANTS
#define KEEL_RAFT_CHECK() check_invariants()
#else
#define KEEL_RAFT_CHECK() ((void)0)
#endif

namespace keel::raft {

const char* to_string(ProposeStatus s) {
  switch (s) {
    case ProposeStatus::ok:
      return "ok";
    case ProposeStatus::forwarded:
      return "forwarded";
    case ProposeStatus::not_leader:
      return "not_leader";
    case ProposeStatus::dropped:
      return "dropped";
    case ProposeStatus::conf_change_pending:
      return "conf_change_pending";
    case ProposeStatus::invalid:
      return "invalid";
  }
  return "?";
}

namespace {

ConfState decode_conf_result(const Entry& e) {
  ConfChange cc;
  ConfState result;
  bool has_result = false;
  const bool ok = decode_conf_change(e.data, &cc, &result, &has_result);
  KEEL_RAFT_ASSERT(ok && has_result, "malformed configuration entry in the log");
  return result;
}

bool type_known(MessageType t) {
  return static_cast<uint8_t>(t) <= static_cast<uint8_t>(MessageType::timeout_now);
}
bool entry_type_known(EntryType t) {
  return static_cast<uint8_t>(t) <= static_cast<uint8_t>(EntryType::conf_change);
}

// An append as a correct leader builds it (DroppedCounts::append_malformed): a slice of a log
// whose terms never decrease, none above the leader's term, following (index, log_term).
bool append_well_formed(const Message& m) {
  if (m.log_term > m.term) return false;
  if (m.index > std::numeric_limits<uint64_t>::max() - m.entries.size()) return false;
  uint64_t prev_term = m.log_term;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const Entry& e = m.entries[i];
    if (e.index != m.index + 1 + i || e.term == 0 || e.term > m.term || e.term < prev_term)
      return false;
    if (!entry_type_known(e.type)) return false;
    if (e.type == EntryType::conf_change) {
      ConfChange cc;
      ConfState result;
      bool has_result = false;
      if (!decode_conf_change(e.data, &cc, &result, &has_result) || !has_result ||
          !conf_well_formed(result))
        return false;
    }
    prev_term = e.term;
  }
  return true;
}

// A snapshot as a leader's storage makes it (DroppedCounts::snapshot_malformed).
bool snapshot_well_formed(const Message& m) {
  if (!m.snapshot) return false;
  const SnapshotMeta& meta = m.snapshot->meta;
  return meta.index > 0 && meta.term > 0 && meta.term <= m.term && conf_well_formed(meta.conf);
}

}  // namespace

// ---- construction -----------------------------------------------------------------------------

RawNode::RawNode(const Config& cfg)
    : cfg_(cfg), log_(cfg.storage), rng_(cfg.seed ^ (cfg.id * 0x9e3779b97f4a7c15ULL)) {
  KEEL_RAFT_ASSERT(cfg.id != kNoNode, "Config::id must be set");
  KEEL_RAFT_ASSERT(cfg.heartbeat_tick > 0 && cfg.election_tick > cfg.heartbeat_tick);
  KEEL_RAFT_ASSERT(cfg.max_inflight_msgs > 0);
  const LogStorage& st = *cfg.storage;
  const auto snap = st.snapshot();
  const HardState hs = st.hard_state();
  KEEL_RAFT_ASSERT(snap != nullptr && snap->meta.index >= st.first_index() - 1 &&
                   snap->meta.index <= st.last_index());
  KEEL_RAFT_ASSERT(hs.commit <= st.last_index(), "hard state commit beyond the stored log");
  removed_.insert(cfg.removed.begin(), cfg.removed.end());

  // The configuration: the snapshot's, then every configuration entry after it (thesis §4.1:
  // a server uses the latest configuration in its log, committed or not).
  conf_history_.push_back({snap->meta.index, snap->meta.conf});
  for (uint64_t lo = snap->meta.index + 1; lo <= st.last_index();) {
    std::vector<Entry> chunk;
    st.entries(lo, st.last_index() + 1, 4 << 20, &chunk);
    for (const Entry& e : chunk) {
      if (e.type == EntryType::conf_change)
        conf_history_.push_back({e.index, decode_conf_result(e)});
    }
    lo += chunk.size();
  }
  conf_ = conf_history_.back().conf;

  term_ = hs.term;
  vote_ = hs.vote;
  log_.commit_to(hs.commit);
  const uint64_t applied = std::max(cfg.applied, snap->meta.index);
  KEEL_RAFT_ASSERT(applied <= log_.committed(), "Config::applied beyond the commit index");
  log_.set_applied_for_restart(applied);
  become_follower(term_, kNoNode);
  prev_hard_ = HardState{term_, vote_, log_.committed()};
  prev_soft_ = SoftState{kNoNode, Role::follower};
  KEEL_RAFT_CHECK();
}

// ---- role transitions -------------------------------------------------------------------------

void RawNode::reset(uint64_t term) {
  if (term_ != term) {
    term_ = term;
    vote_ = kNoNode;
  }
  lead_ = kNoNode;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  randomized_election_timeout_ =
      cfg_.election_tick + static_cast<int>(rng_.below(static_cast<uint64_t>(cfg_.election_tick)));
  lead_transferee_ = kNoNode;
  votes_.clear();
  prs_.clear();
  read_queue_.clear();
  reads_waiting_.clear();
  uncommitted_bytes_ = 0;
  uncommitted_.clear();
  bcast_pending_ = false;
  noop_index_ = 0;
}

void RawNode::become_follower(uint64_t term, NodeId lead) {
  reset(term);
  role_ = Role::follower;
  lead_ = lead;
}

void RawNode::become_pre_candidate() {
  KEEL_RAFT_ASSERT(role_ != Role::leader, "leader cannot become pre-candidate");
  // Pre-vote (thesis §9.6) changes neither term nor vote: a partitioned member that keeps
  // failing pre-votes cannot inflate its term and disrupt the cluster when it comes back.
  role_ = Role::pre_candidate;
  lead_ = kNoNode;
  votes_.clear();
  randomized_election_timeout_ =
      cfg_.election_tick + static_cast<int>(rng_.below(static_cast<uint64_t>(cfg_.election_tick)));
}

void RawNode::become_candidate() {
  KEEL_RAFT_ASSERT(role_ != Role::leader, "leader cannot become candidate");
  reset(term_ + 1);
  vote_ = cfg_.id;
  role_ = Role::candidate;
}

void RawNode::become_leader() {
  KEEL_RAFT_ASSERT(role_ == Role::candidate, "only a candidate can become leader");
  reset(term_);
  role_ = Role::leader;
  lead_ = cfg_.id;
  sync_progress();
  auto self = prs_.find(cfg_.id);
  if (self != prs_.end()) {
    self->second.match = log_.stable_last();
    self->second.recent_active = true;
  }
  // A no-op entry of the new term: entries of earlier terms commit only once an entry of the
  // current term does (§5.4.2), and ReadIndex needs a commit in this term (§6.4).
  Entry noop;
  noop.index = log_.last_index() + 1;
  noop.term = term_;
  noop_index_ = noop.index;
  log_.append_one(std::move(noop));
  bcast_pending_ = true;
}

bool RawNode::promotable() const {
  return conf_.is_voter(cfg_.id) && !log_.unstable_snapshot();
}

bool RawNode::in_lease() const {
  return cfg_.check_quorum && lead_ != kNoNode && election_elapsed_ < cfg_.election_tick;
}

void RawNode::hup(bool transfer) {
  if (role_ == Role::leader || !promotable()) return;
  start_election(cfg_.pre_vote && !transfer, transfer);
}

void RawNode::campaign() {
  hup(false);
  KEEL_RAFT_CHECK();
}

void RawNode::start_election(bool pre, bool transfer) {
  uint64_t vote_term;
  if (pre) {
    become_pre_candidate();
    vote_term = term_ + 1;
  } else {
    become_candidate();
    vote_term = term_;
  }
  votes_[cfg_.id] = true;
  if (quorum() <= 1) {  // the only voter
    if (pre) {
      start_election(false, transfer);
    } else {
      become_leader();
    }
    return;
  }
  for (NodeId v : conf_.voters) {
    if (v == cfg_.id) continue;
    Message m;
    m.type = pre ? MessageType::pre_vote : MessageType::vote;
    m.to = v;
    m.term = vote_term;
    m.index = log_.last_index();
    m.log_term = log_.last_term();
    m.transfer = transfer;
    send(std::move(m));
  }
}

// ---- ticks ------------------------------------------------------------------------------------

void RawNode::tick() {
  if (role_ == Role::leader) {
    tick_heartbeat();
  } else {
    tick_election();
  }
  KEEL_RAFT_CHECK();
}

void RawNode::tick_election() {
  if (election_elapsed_ < INT_MAX) ++election_elapsed_;
  if (promotable() && election_elapsed_ >= randomized_election_timeout_) {
    election_elapsed_ = 0;
    hup(false);
  }
}

void RawNode::tick_heartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= cfg_.election_tick) {
    election_elapsed_ = 0;
    if (cfg_.check_quorum) {
      // Check-quorum (thesis §6.2): step down unless a quorum of voters was heard from during
      // the last election timeout, so a partitioned leader stops serving.
      int active = 0;
      for (auto& [id, pr] : prs_) {
        if (id == cfg_.id) pr.recent_active = true;
        if (pr.recent_active && conf_.is_voter(id)) ++active;
        if (id != cfg_.id) pr.recent_active = false;
      }
      if (active < quorum()) {
        become_follower(term_, kNoNode);
        return;
      }
    }
    lead_transferee_ = kNoNode;  // a transfer that did not finish in one timeout is abandoned
  }
  if (heartbeat_elapsed_ >= cfg_.heartbeat_tick) {
    heartbeat_elapsed_ = 0;
    bcast_heartbeat(std::string());
  }
}

// ---- messages ---------------------------------------------------------------------------------

void RawNode::send(Message m) {
  if (m.from == kNoNode) m.from = cfg_.id;
  switch (m.type) {
    case MessageType::vote:
    case MessageType::vote_resp:
    case MessageType::pre_vote:
    case MessageType::pre_vote_resp:
      KEEL_RAFT_ASSERT(m.term != 0, "vote messages carry an explicit term");
      break;
    case MessageType::prop:
    case MessageType::read_index:
      m.term = 0;  // forwarded requests are treated as local at the leader
      break;
    default:
      m.term = term_;
  }
  msgs_.push_back(std::move(m));
}

uint64_t DroppedCounts::*RawNode::refusal(const Message& m) const {
  using T = MessageType;
  // Every member speaks for itself (a forwarded request travels under the forwarder's id), so
  // nothing comes from ourselves.
  if (!type_known(m.type) || m.from == kNoNode || m.from == cfg_.id)
    return &DroppedCounts::malformed;
  // Term 0 marks a forwarded request (treated as local at the leader, etcd's convention); any
  // other message without a term would skip the term checks below.
  const bool termless = m.type == T::prop || m.type == T::read_index;
  if (termless != (m.term == 0)) return &DroppedCounts::malformed;
  switch (m.type) {
    case T::read_index:
      if (m.context.empty()) return &DroppedCounts::malformed;
      break;
    case T::prop:
      for (const Entry& e : m.entries) {
        if (!entry_type_known(e.type)) return &DroppedCounts::malformed;
      }
      break;
    case T::app:
      if (!append_well_formed(m)) return &DroppedCounts::append_malformed;
      break;
    case T::snap:
      if (!snapshot_well_formed(m)) return &DroppedCounts::snapshot_malformed;
      break;
    default:
      break;
  }
  if (role_ == Role::leader && m.term == term_) {
    // §5.2: at most one leader per term, and it is us.
    if (m.type == T::app || m.type == T::heartbeat || m.type == T::snap)
      return &DroppedCounts::same_term_leader;
    // We never sent an append (nor a snapshot) ending beyond our log, and our log only grows
    // while we lead: counting it would move match (and commit) past what we hold.
    if (m.type == T::app_resp && m.index > log_.last_index()) return &DroppedCounts::ack_beyond_log;
  }
  // A correct leader's heartbeat carries min(match, commit), and match is never beyond our log
  // (etcd's commitTo panics here). Committing a clamped index could commit entries the leader
  // does not hold, so nothing is taken from the message.
  if (m.type == T::heartbeat && m.commit > log_.last_index())
    return &DroppedCounts::commit_beyond_log;
  return nullptr;
}

void RawNode::step(Message m) {
  KEEL_RAFT_ASSERT(m.to == cfg_.id, "message addressed to another member");
  if (auto reason = refusal(m)) {
    ++(dropped_.*reason);
    return;
  }
  if (m.term == 0) {
    // prop / read_index forwarded by a follower: no term.
  } else if (m.term > term_) {
    if (m.type == MessageType::vote || m.type == MessageType::pre_vote) {
      // Leader lease (thesis §4.2.3): while we hear from a leader, ignore campaigns, so a
      // removed or partitioned member cannot disrupt the cluster. timeout_now campaigns pass.
      if (!m.transfer && in_lease()) return;
    }
    if (m.type == MessageType::pre_vote) {
      // Never change term on a pre-vote.
    } else if (m.type == MessageType::pre_vote_resp && !m.reject) {
      // A granted pre-vote carries the future term; the election itself will move there.
    } else if (m.type == MessageType::app || m.type == MessageType::heartbeat ||
               m.type == MessageType::snap) {
      become_follower(m.term, m.from);
    } else {
      become_follower(m.term, kNoNode);
    }
  } else if (m.term < term_) {
    if ((cfg_.check_quorum || cfg_.pre_vote) &&
        (m.type == MessageType::heartbeat || m.type == MessageType::app)) {
      // A stale leader: tell it our term so it steps down. Without this a member whose term
      // rose during a partition could never rejoin (leases make others ignore its votes).
      Message r;
      r.type = MessageType::app_resp;
      r.to = m.from;
      send(std::move(r));
    } else if (m.type == MessageType::pre_vote || m.type == MessageType::vote) {
      // Figure 2: a stale candidate learns the current term from the rejection. Without it,
      // a candidate whose configuration lists no member that contacts it could stay in an old
      // term forever while the only member that could elect it ignores its requests.
      Message r;
      r.type = m.type == MessageType::vote ? MessageType::vote_resp : MessageType::pre_vote_resp;
      r.to = m.from;
      r.term = term_;
      r.reject = true;
      send(std::move(r));
    }
    return;
  }

  if (m.type == MessageType::vote || m.type == MessageType::pre_vote) {
    handle_vote_request(m);
  } else {
    switch (role_) {
      case Role::leader:
        step_leader(m);
        break;
      case Role::candidate:
      case Role::pre_candidate:
        step_candidate(m);
        break;
      case Role::follower:
        step_follower(m);
        break;
    }
  }
  KEEL_RAFT_CHECK();
}

void RawNode::handle_vote_request(const Message& m) {
  const bool pre = m.type == MessageType::pre_vote;
  // §5.2: one vote per term; §5.4.1: only for a log at least as up-to-date as ours.
  const bool can_vote =
      vote_ == m.from || (vote_ == kNoNode && lead_ == kNoNode) || (pre && m.term > term_);
  Message r;
  r.type = pre ? MessageType::pre_vote_resp : MessageType::vote_resp;
  r.to = m.from;
  if (can_vote && log_.is_up_to_date(m.index, m.log_term)) {
    r.term = m.term;
    if (!pre) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    r.term = term_;
    r.reject = true;
  }
  send(std::move(r));
}

void RawNode::step_leader(Message& m) {
  switch (m.type) {
    case MessageType::prop:
      for (Entry& e : m.entries)
        (void)append_proposal(std::move(e));
      break;
    case MessageType::read_index:
      handle_read_index(m.from, std::move(m.context));
      break;
    case MessageType::app_resp:
      handle_app_resp(m);
      break;
    case MessageType::heartbeat_resp:
      handle_heartbeat_resp(m);
      break;
    case MessageType::transfer_leader:
      (void)handle_transfer(m.index);
      break;
    case MessageType::app:
    case MessageType::heartbeat:
    case MessageType::snap:
      KEEL_RAFT_ASSERT(false, "two leaders in one term (refusal() drops these)");
      break;
    default:
      break;  // stale vote responses etc.
  }
}

void RawNode::step_candidate(Message& m) {
  switch (m.type) {
    case MessageType::app:
      become_follower(m.term, m.from);
      handle_append(m);
      break;
    case MessageType::heartbeat:
      become_follower(m.term, m.from);
      handle_heartbeat(m);
      break;
    case MessageType::snap:
      become_follower(m.term, m.from);
      handle_snapshot(m);
      break;
    case MessageType::vote_resp:
      if (role_ == Role::candidate) tally(m);
      break;
    case MessageType::pre_vote_resp:
      if (role_ == Role::pre_candidate) tally(m);
      break;
    default:
      break;  // proposals and reads are dropped: no leader
  }
}

void RawNode::step_follower(Message& m) {
  switch (m.type) {
    // A request forwarded to us by a member that took us for the leader. The transport accepts
    // a message only from the member at the other end of its stream, so we pass it on as ours
    // (the leader ignores the origin of a proposal or a transfer). A read is answered to its
    // origin, which the leader could not reach through us: it is dropped, and its origin's
    // driver retries on its deadline.
    case MessageType::prop:
      if (lead_ != kNoNode && cfg_.forward_proposals) {
        m.to = lead_;
        m.from = cfg_.id;
        send(std::move(m));
      }
      break;
    case MessageType::transfer_leader:
      if (lead_ != kNoNode) {
        m.to = lead_;
        m.from = cfg_.id;
        send(std::move(m));
      }
      break;
    case MessageType::read_index:
      break;
    case MessageType::app:
      election_elapsed_ = 0;
      lead_ = m.from;
      handle_append(m);
      break;
    case MessageType::heartbeat:
      election_elapsed_ = 0;
      lead_ = m.from;
      handle_heartbeat(m);
      break;
    case MessageType::snap:
      election_elapsed_ = 0;
      lead_ = m.from;
      handle_snapshot(m);
      break;
    case MessageType::timeout_now:
      hup(true);
      break;
    case MessageType::read_index_resp:
      read_states_.push_back(ReadState{m.index, std::move(m.context)});
      break;
    default:
      break;
  }
}

void RawNode::tally(const Message& m) {
  if (!conf_.is_voter(m.from)) {  // learners and strangers never count (§6 / learners)
    ++dropped_.from_non_member;
    return;
  }
  votes_.emplace(m.from, !m.reject);
  int granted = 0;
  int rejected = 0;
  for (NodeId v : conf_.voters) {
    auto it = votes_.find(v);
    if (it == votes_.end()) continue;
    if (it->second) {
      ++granted;
    } else {
      ++rejected;
    }
  }
  const int q = quorum();
  if (granted >= q) {
    if (role_ == Role::pre_candidate) {
      start_election(false, false);
    } else {
      become_leader();
    }
  } else if (rejected > static_cast<int>(conf_.voters.size()) - q) {
    become_follower(term_, kNoNode);
  }
}

void RawNode::handle_append(Message& m) {
  // §5.3 AppendEntries receiver.
  if (m.index < log_.committed()) {
    Message r;
    r.type = MessageType::app_resp;
    r.to = m.from;
    r.index = log_.committed();
    send(std::move(r));
    return;
  }
  for (size_t i = 0; i < m.entries.size(); ++i) {
    KEEL_RAFT_ASSERT(m.entries[i].index == m.index + 1 + i && m.entries[i].term <= m.term,
                     "malformed append (refusal() drops these)");
  }
  Message r;
  r.type = MessageType::app_resp;
  r.to = m.from;
  if (log_.match_term(m.index, m.log_term)) {
    const uint64_t last_new = m.index + m.entries.size();
    const uint64_t conflict = log_.find_conflict(m.entries);
    if (conflict != 0) {
      KEEL_RAFT_ASSERT(conflict > log_.committed(), "conflict with a committed entry");
      const size_t from = conflict - (m.index + 1);
      log_.append(m.entries, from);
      log_appended(m.entries, from);
    }
    log_.commit_to(std::min(m.commit, last_new));
    r.index = last_new;
  } else {
    // Fast backtracking: tell the leader the last index that may match, and its term, so it
    // skips a whole term of mismatched entries per round trip.
    auto [hint_index, hint_term] =
        log_.find_conflict_by_term(std::min(m.index, log_.last_index()), m.log_term);
    r.reject = true;
    r.index = m.index;
    r.reject_hint = hint_index;
    r.log_term = hint_term;
  }
  send(std::move(r));
}

void RawNode::handle_heartbeat(const Message& m) {
  log_.commit_to(m.commit);
  Message r;
  r.type = MessageType::heartbeat_resp;
  r.to = m.from;
  r.context = m.context;
  send(std::move(r));
}

void RawNode::handle_snapshot(const Message& m) {
  KEEL_RAFT_ASSERT(m.snapshot != nullptr, "refusal() drops a snap without snapshot");
  const SnapshotMeta& meta = m.snapshot->meta;
  Message r;
  r.type = MessageType::app_resp;
  r.to = m.from;
  if (meta.index <= log_.committed()) {
    r.index = log_.committed();
  } else if (log_.match_term(meta.index, meta.term)) {
    // We already have the covered entries: just learn that they are committed.
    log_.commit_to(meta.index);
    r.index = log_.committed();
  } else {
    // The configurations we drop are committed up to our commit index, and so is the
    // snapshot's: whoever left in between was removed.
    const ConfState* committed_conf = &conf_history_.front().conf;
    for (size_t i = 1; i < conf_history_.size() && conf_history_[i].index <= log_.committed();
         ++i) {
      note_removals(conf_history_[i - 1].conf, conf_history_[i].conf);
      committed_conf = &conf_history_[i].conf;
    }
    note_removals(*committed_conf, meta.conf);
    log_.restore(m.snapshot);
    conf_history_.clear();
    conf_history_.push_back({meta.index, meta.conf});
    set_conf(meta.conf);
    r.index = log_.last_index();
  }
  send(std::move(r));
}

void RawNode::handle_app_resp(const Message& m) {
  auto it = prs_.find(m.from);
  if (it == prs_.end()) {
    ++dropped_.from_non_member;
    return;
  }
  Progress* pr = &it->second;
  pr->recent_active = true;
  if (m.reject) {
    uint64_t next_probe = m.reject_hint;
    if (m.log_term > 0) next_probe = log_.find_conflict_by_term(m.reject_hint, m.log_term).first;
    if (pr->maybe_decr_to(m.index, next_probe)) {
      if (pr->state == ProgressState::replicate) pr->become_probe();
      send_append(m.from, true);
    }
    return;
  }
  const bool updated = pr->maybe_update(m.index);
  if (!updated && !(pr->state == ProgressState::probe && pr->match == m.index)) return;
  switch (pr->state) {
    case ProgressState::probe:
      pr->become_replicate();
      break;
    case ProgressState::snapshot:
      if (pr->match + 1 >= log_.first_index()) {
        pr->become_probe();
        pr->become_replicate();
      }
      break;
    case ProgressState::replicate:
      pr->inflights.free_le(m.index);
      break;
  }
  if (maybe_commit()) {
    if (role_ != Role::leader) return;  // stepped down (removed itself)
    bcast_pending_ = true;
  }
  it = prs_.find(m.from);
  if (it == prs_.end()) return;
  pr = &it->second;
  while (send_append(m.from, false)) {
  }
  if (m.from == lead_transferee_ && pr->match == log_.last_index()) send_timeout_now(m.from);
}

void RawNode::handle_heartbeat_resp(const Message& m) {
  auto it = prs_.find(m.from);
  if (it == prs_.end()) {
    ++dropped_.from_non_member;
    return;
  }
  Progress& pr = it->second;
  pr.recent_active = true;
  pr.probe_sent = false;
  if (pr.state == ProgressState::snapshot &&
      ++pr.snapshot_wait >= 2 * cfg_.election_tick / cfg_.heartbeat_tick) {
    pr.become_probe();  // the snapshot was probably lost: start over
  }
  if (pr.state == ProgressState::replicate && pr.inflights.full()) pr.inflights.free_first_one();
  if (pr.match < log_.last_index() || pr.sent_commit < log_.committed()) send_append(m.from, true);

  if (m.context.empty() || !conf_.is_voter(m.from)) return;
  // ReadIndex acknowledgement (thesis §6.4): a quorum answered a heartbeat sent after the read
  // arrived, so we were still the leader then. Acks for a context also confirm earlier reads.
  for (size_t i = read_queue_.size(); i-- > 0;) {
    PendingRead& r = read_queue_[i];
    if (r.context != m.context) continue;
    if (std::find(r.acks.begin(), r.acks.end(), m.from) == r.acks.end()) r.acks.push_back(m.from);
    int acks = 0;
    for (NodeId a : r.acks)
      acks += conf_.is_voter(a) ? 1 : 0;
    if (acks < quorum()) return;
    std::deque<PendingRead> done;
    for (size_t k = 0; k <= i; ++k) {
      done.push_back(std::move(read_queue_.front()));
      read_queue_.pop_front();
    }
    for (PendingRead& d : done)
      release_read(d.from, d.context, d.index);
    return;
  }
}

void RawNode::handle_read_index(NodeId from, std::string context) {
  if (!committed_in_term()) {
    // The commit index of a new leader may lag until its no-op commits (§6.4 step 1).
    reads_waiting_.emplace_back(from, std::move(context));
    return;
  }
  if (quorum() <= 1 && conf_.is_voter(cfg_.id)) {
    release_read(from, context, log_.committed());
    return;
  }
  PendingRead r{std::move(context), from, log_.committed(), {}};
  if (conf_.is_voter(cfg_.id)) r.acks.push_back(cfg_.id);
  read_queue_.push_back(std::move(r));
  bcast_heartbeat(read_queue_.back().context);
}

void RawNode::release_read(NodeId from, const std::string& context, uint64_t index) {
  if (from == cfg_.id || from == kNoNode) {
    read_states_.push_back(ReadState{index, context});
    return;
  }
  Message r;
  r.type = MessageType::read_index_resp;
  r.to = from;
  r.index = index;
  r.context = context;
  send(std::move(r));
}

bool RawNode::committed_in_term() const {
  return log_.term(log_.committed()) == term_;
}

TransferResult RawNode::handle_transfer(NodeId to) {
  if (to == cfg_.id || !conf_.is_voter(to)) return TransferResult::invalid;
  auto it = prs_.find(to);
  if (it == prs_.end()) return TransferResult::invalid;
  if (lead_transferee_ == to) return TransferResult::ok;
  lead_transferee_ = to;
  election_elapsed_ = 0;  // the transfer must finish within one election timeout
  if (it->second.match == log_.last_index()) {
    send_timeout_now(to);
  } else {
    send_append(to, true);
  }
  return TransferResult::ok;
}

void RawNode::send_timeout_now(NodeId to) {
  Message m;
  m.type = MessageType::timeout_now;
  m.to = to;
  send(std::move(m));
}

// ---- replication ------------------------------------------------------------------------------

bool RawNode::send_append(NodeId to, bool send_if_empty) {
  auto it = prs_.find(to);
  if (it == prs_.end() || to == cfg_.id) return false;
  Progress& pr = it->second;
  if (pr.is_paused()) return false;
  Message m;
  m.type = MessageType::app;
  m.to = to;
  const uint64_t prev = pr.next - 1;
  const auto prev_term = log_.term(prev);
  bool ok = prev_term.has_value();
  if (ok && pr.next <= log_.last_index()) {
    ok = log_.slice(pr.next, log_.last_index() + 1, cfg_.max_size_per_msg, &m.entries);
  }
  if (!ok) {
    send_snapshot(to, pr);
    return false;
  }
  if (m.entries.empty() && !send_if_empty) return false;
  m.index = prev;
  m.log_term = *prev_term;
  m.commit = log_.committed();
  if (!m.entries.empty()) {
    const uint64_t last = m.entries.back().index;
    if (pr.state == ProgressState::replicate) {
      uint64_t bytes = 0;
      for (const Entry& e : m.entries)
        bytes += entry_bytes(e);
      pr.next = last + 1;
      pr.inflights.add(last, bytes);
    } else {
      pr.probe_sent = true;
    }
  } else if (pr.state == ProgressState::probe) {
    pr.probe_sent = true;
  }
  pr.sent_commit = log_.committed();
  send(std::move(m));
  return true;
}

void RawNode::send_snapshot(NodeId to, Progress& pr) {
  if (!pr.recent_active) return;  // do not ship a snapshot to a member that may be down
  auto snap = cfg_.storage->snapshot();
  KEEL_RAFT_ASSERT(snap != nullptr && snap->meta.index >= pr.next - 1,
                   "storage compacted past its snapshot");
  pr.become_snapshot(snap->meta.index);
  Message m;
  m.type = MessageType::snap;
  m.to = to;
  m.snapshot = std::move(snap);
  send(std::move(m));
}

void RawNode::bcast_append() {
  for (auto& [id, pr] : prs_) {
    if (id == cfg_.id) continue;
    bool first = true;
    while (send_append(id, first && pr.sent_commit < log_.committed()))
      first = false;
  }
}

void RawNode::bcast_heartbeat(const std::string& context) {
  for (auto& [id, pr] : prs_) {
    if (id == cfg_.id) continue;
    if (!context.empty() && pr.learner) continue;  // reads need voters only
    Message m;
    m.type = MessageType::heartbeat;
    m.to = id;
    m.commit = std::min(pr.match, log_.committed());
    m.context = context;
    send(std::move(m));
  }
}

bool RawNode::maybe_commit() {
  scratch_.clear();
  for (NodeId v : conf_.voters) {
    auto it = prs_.find(v);
    scratch_.push_back(it == prs_.end() ? 0 : it->second.match);
  }
  if (scratch_.empty()) return false;
  const size_t k = static_cast<size_t>(quorum() - 1);
  std::nth_element(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(k),
                   scratch_.end(), std::greater<uint64_t>());
  const uint64_t mci = scratch_[k];
  // §5.4.2: only an entry of the current term commits by counting replicas (Figure 8).
  if (mci <= log_.committed() || log_.term(mci) != term_) return false;
  log_.commit_to(mci);
  on_leader_commit();
  return true;
}

void RawNode::on_leader_commit() {
  const uint64_t committed = log_.committed();
  while (!uncommitted_.empty() && uncommitted_.front().first <= committed) {
    uncommitted_bytes_ -= uncommitted_.front().second;
    uncommitted_.pop_front();
  }
  if (!reads_waiting_.empty() && committed_in_term()) {
    auto waiting = std::move(reads_waiting_);
    reads_waiting_.clear();
    for (auto& [from, ctx] : waiting)
      handle_read_index(from, std::move(ctx));
  }
  if (!conf_.is_voter(cfg_.id) && conf_history_.back().index <= committed) {
    // Our own removal committed (thesis §4.2.2): hand over to the most up-to-date voter and
    // step down. We never campaign again: we are not a voter of our configuration.
    NodeId best = kNoNode;
    uint64_t best_match = 0;
    for (NodeId v : conf_.voters) {
      auto it = prs_.find(v);
      if (it != prs_.end() && it->second.match >= best_match) {
        best = v;
        best_match = it->second.match;
      }
    }
    if (best != kNoNode && best_match == log_.last_index()) send_timeout_now(best);
    become_follower(term_, kNoNode);
  }
}

// ---- proposals --------------------------------------------------------------------------------

ProposeResult RawNode::append_proposal(Entry e) {
  KEEL_RAFT_ASSERT(role_ == Role::leader);
  if (lead_transferee_ != kNoNode || !conf_.is_voter(cfg_.id)) return {ProposeStatus::dropped};
  if (e.type == EntryType::conf_change) {
    ConfChange cc;
    ConfState ignored;
    bool has_result = false;
    std::string context;
    if (!decode_conf_change(e.data, &cc, &ignored, &has_result, &context))
      return {ProposeStatus::invalid};
    // Thesis §4.1 with the 2015 correction: one change at a time, and only after an entry of
    // this term committed (a previous leader's uncommitted change must not be built upon).
    if (conf_history_.back().index > log_.committed() || !committed_in_term())
      return {ProposeStatus::conf_change_pending};
    auto next = apply_conf_change(conf_, cc);
    if (!next) return {ProposeStatus::invalid};
    // A removed id never comes back (etcd refuses it too, ErrIDRemoved): the member behind it
    // may still hold a log, a vote and a term from its earlier life, and the driver has shut it
    // down. Demoting or promoting a current member is fine.
    if (!conf_.contains(cc.node) && was_removed(cc.node)) return {ProposeStatus::invalid};
    e.data = encode_conf_change(cc, &*next, context);
  }
  const uint64_t bytes = e.data.size();
  if (cfg_.max_uncommitted_entries_size != 0 && uncommitted_bytes_ > 0 &&
      uncommitted_bytes_ + bytes > cfg_.max_uncommitted_entries_size) {
    return {ProposeStatus::dropped};
  }
  e.index = log_.last_index() + 1;
  e.term = term_;
  const ProposeResult result{ProposeStatus::ok, e.index, e.term};
  if (bytes > 0) {
    uncommitted_bytes_ += bytes;
    uncommitted_.emplace_back(e.index, bytes);
  }
  if (e.type == EntryType::conf_change) {
    conf_history_.push_back({e.index, decode_conf_result(e)});
    log_.append_one(std::move(e));
    set_conf(conf_history_.back().conf);
  } else {
    log_.append_one(std::move(e));
  }
  bcast_pending_ = true;
  return result;
}

ProposeResult RawNode::propose_entry(Entry e) {
  if (role_ != Role::leader) {
    if (lead_ == kNoNode || !cfg_.forward_proposals) return {ProposeStatus::not_leader};
    Message m;
    m.type = MessageType::prop;
    m.to = lead_;
    m.entries.push_back(std::move(e));
    send(std::move(m));
    return {ProposeStatus::forwarded};
  }
  auto r = append_proposal(std::move(e));
  KEEL_RAFT_CHECK();
  return r;
}

ProposeResult RawNode::propose(std::string data) {
  Entry e;
  e.data = std::move(data);
  return propose_entry(std::move(e));
}

ProposeResult RawNode::propose_conf_change(const ConfChange& cc, const std::string& context) {
  Entry e;
  e.type = EntryType::conf_change;
  e.data = encode_conf_change(cc, nullptr, context);
  return propose_entry(std::move(e));
}

ReadResult RawNode::read_index(std::string context) {
  if (context.empty()) return ReadResult::invalid;
  if (role_ == Role::leader) {
    handle_read_index(cfg_.id, std::move(context));
    KEEL_RAFT_CHECK();
    return ReadResult::ok;
  }
  if (lead_ == kNoNode) return ReadResult::not_leader;
  Message m;
  m.type = MessageType::read_index;
  m.to = lead_;
  m.context = std::move(context);
  send(std::move(m));
  return ReadResult::forwarded;
}

TransferResult RawNode::transfer_leadership(NodeId to) {
  if (role_ != Role::leader) {
    if (lead_ == kNoNode) return TransferResult::not_leader;
    if (to == lead_) return TransferResult::invalid;
    Message m;
    m.type = MessageType::transfer_leader;
    m.to = lead_;
    m.index = to;
    send(std::move(m));
    return TransferResult::forwarded;
  }
  auto r = handle_transfer(to);
  KEEL_RAFT_CHECK();
  return r;
}

void RawNode::report_unreachable(NodeId to) {
  if (role_ != Role::leader) return;
  auto it = prs_.find(to);
  if (it != prs_.end() && it->second.state == ProgressState::replicate) it->second.become_probe();
}

void RawNode::report_snapshot(NodeId to, bool ok) {
  if (role_ != Role::leader) return;
  auto it = prs_.find(to);
  if (it == prs_.end() || it->second.state != ProgressState::snapshot) return;
  Progress& pr = it->second;
  if (!ok) pr.pending_snapshot = 0;
  pr.become_probe();
  pr.probe_sent = true;  // wait for the follower's answer or the next heartbeat
}

// ---- configuration ----------------------------------------------------------------------------

void RawNode::log_appended(const std::vector<Entry>& ents, size_t from) {
  if (from >= ents.size()) return;
  const uint64_t first = ents[from].index;
  bool changed = false;
  while (conf_history_.size() > 1 && conf_history_.back().index >= first) {
    conf_history_.pop_back();  // a configuration entry was truncated: revert (thesis §4.1)
    changed = true;
  }
  for (size_t i = from; i < ents.size(); ++i) {
    if (ents[i].type == EntryType::conf_change) {
      conf_history_.push_back({ents[i].index, decode_conf_result(ents[i])});
      changed = true;
    }
  }
  if (changed) set_conf(conf_history_.back().conf);
}

void RawNode::set_conf(const ConfState& conf) {
  conf_ = conf;
  // Keep the history short: points at or below the applied index are only needed as the base.
  while (conf_history_.size() > 2 && conf_history_[1].index <= log_.applied()) {
    note_removals(conf_history_[0].conf, conf_history_[1].conf);
    conf_history_.erase(conf_history_.begin());
  }
  if (role_ == Role::leader) sync_progress();
}

void RawNode::note_removals(const ConfState& before, const ConfState& after) {
  for (const auto* ids : {&before.voters, &before.learners}) {
    for (NodeId id : *ids) {
      if (!after.contains(id)) removed_.insert(id);
    }
  }
}

// Every id that left a committed configuration the core has seen: the retained log's
// configurations (conf_history_ up to the commit index) and those discarded since the core
// started (removed_), plus the ids the driver's durable record lists (Config::removed: a
// snapshot lists members, not former members, so without that record a removal compacted
// into a snapshot before a restart would be forgotten; etcd's store keeps removed ids too).
bool RawNode::was_removed(NodeId id) const {
  if (removed_.count(id) != 0) return true;
  for (size_t i = 1; i < conf_history_.size() && conf_history_[i].index <= log_.committed(); ++i) {
    if (conf_history_[i - 1].conf.contains(id) && !conf_history_[i].conf.contains(id)) return true;
  }
  return false;
}

void RawNode::sync_progress() {
  for (auto it = prs_.begin(); it != prs_.end();) {
    it = conf_.contains(it->first) ? std::next(it) : prs_.erase(it);
  }
  auto add = [&](NodeId id, bool learner) {
    auto [it, inserted] = prs_.try_emplace(id, log_.last_index() + 1, cfg_.max_inflight_msgs,
                                           cfg_.max_inflight_bytes);
    if (inserted) it->second.recent_active = true;  // give a new member a chance (snapshot)
    it->second.learner = learner;
  };
  for (NodeId v : conf_.voters)
    add(v, false);
  for (NodeId l : conf_.learners)
    add(l, true);
  if (lead_transferee_ != kNoNode && !conf_.is_voter(lead_transferee_)) lead_transferee_ = kNoNode;
}

const Progress* RawNode::progress(NodeId id) const {
  auto it = prs_.find(id);
  return it == prs_.end() ? nullptr : &it->second;
}

// ---- Ready ------------------------------------------------------------------------------------

bool RawNode::has_ready() const {
  if (ready_outstanding_) return false;
  if (bcast_pending_ || !msgs_.empty() || !read_states_.empty()) return true;
  if (SoftState{lead_, role_} != prev_soft_) return true;
  if (HardState{term_, vote_, log_.committed()} != prev_hard_) return true;
  if (!log_.unstable_entries().empty() || log_.unstable_snapshot()) return true;
  return log_.has_next_committed();
}

Ready RawNode::ready() {
  KEEL_RAFT_ASSERT(!ready_outstanding_, "ready() called twice without advance()");
  if (bcast_pending_) {
    bcast_pending_ = false;
    if (role_ == Role::leader) bcast_append();
  }
  Ready rd;
  const SoftState ss{lead_, role_};
  if (ss != prev_soft_) rd.soft_state = ss;
  const HardState hs{term_, vote_, log_.committed()};
  if (hs != prev_hard_) rd.hard_state = hs;
  rd.snapshot = log_.unstable_snapshot();
  rd.entries = log_.unstable_entries();
  rd.committed_entries = log_.next_committed(cfg_.max_committed_size_per_ready);
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  ready_outstanding_ = true;
  return rd;
}

void RawNode::advance(const Ready& rd) {
  KEEL_RAFT_ASSERT(ready_outstanding_, "advance() without ready()");
  ready_outstanding_ = false;
  if (rd.soft_state) prev_soft_ = *rd.soft_state;
  if (rd.hard_state) prev_hard_ = *rd.hard_state;
  if (rd.snapshot) {
    log_.stable_snap_to(rd.snapshot->meta.index);
    log_.applied_to(rd.snapshot->meta.index);
  }
  if (!rd.entries.empty()) log_.stable_to(rd.entries.back().index, rd.entries.back().term);
  if (!rd.committed_entries.empty()) log_.applied_to(rd.committed_entries.back().index);
  if (role_ == Role::leader) {
    // The leader counts itself only for entries it has made durable (§5.3 / thesis §10.2.1).
    auto it = prs_.find(cfg_.id);
    if (it != prs_.end() && it->second.maybe_update(log_.stable_last())) {
      if (maybe_commit() && role_ == Role::leader) bcast_pending_ = true;
    }
  }
  KEEL_RAFT_CHECK();
}

// ---- invariants -------------------------------------------------------------------------------

void RawNode::check_invariants() const {
  const uint64_t last = log_.last_index();
  KEEL_RAFT_ASSERT(log_.committed() <= last, "commit beyond last index");
  KEEL_RAFT_ASSERT(log_.applied() <= log_.committed(), "applied beyond commit");
  KEEL_RAFT_ASSERT(log_.term(log_.committed()).has_value(), "term of commit index unknown");
  KEEL_RAFT_ASSERT(log_.last_term() <= term_, "log term above current term");
  KEEL_RAFT_ASSERT(log_.stable_last() <= last);
  const auto& un = log_.unstable_entries();
  for (size_t i = 0; i < un.size(); ++i) {
    KEEL_RAFT_ASSERT(un[i].index == log_.unstable_offset() + i, "unstable entries not contiguous");
    if (i > 0) KEEL_RAFT_ASSERT(un[i].term >= un[i - 1].term, "terms decrease in the log");
  }
  KEEL_RAFT_ASSERT(!conf_history_.empty() && conf_ == conf_history_.back().conf);
  for (size_t i = 1; i < conf_history_.size(); ++i) {
    KEEL_RAFT_ASSERT(conf_history_[i - 1].index < conf_history_[i].index);
  }
  KEEL_RAFT_ASSERT(conf_history_.back().index <= last, "configuration entry beyond the log");
  switch (role_) {
    case Role::leader:
      KEEL_RAFT_ASSERT(lead_ == cfg_.id && vote_ == cfg_.id, "leader did not vote for itself");
      KEEL_RAFT_ASSERT(noop_index_ > 0 && noop_index_ <= last);
      for (const auto& [id, pr] : prs_) {
        KEEL_RAFT_ASSERT(conf_.contains(id), "progress for a non-member");
        KEEL_RAFT_ASSERT(pr.match <= last && pr.match < pr.next && pr.next <= last + 1,
                         "progress out of range");
        KEEL_RAFT_ASSERT(pr.learner == conf_.is_learner(id));
        if (pr.state == ProgressState::snapshot) KEEL_RAFT_ASSERT(pr.pending_snapshot > 0);
        if (pr.state != ProgressState::replicate) KEEL_RAFT_ASSERT(pr.inflights.count() == 0);
      }
      for (NodeId v : conf_.voters)
        KEEL_RAFT_ASSERT(prs_.count(v) == 1, "voter without progress");
      for (NodeId l : conf_.learners)
        KEEL_RAFT_ASSERT(prs_.count(l) == 1);
      break;
    case Role::candidate:
      KEEL_RAFT_ASSERT(vote_ == cfg_.id && lead_ == kNoNode);
      break;
    case Role::pre_candidate:
      KEEL_RAFT_ASSERT(lead_ == kNoNode);
      break;
    case Role::follower:
      KEEL_RAFT_ASSERT(prs_.empty());
      break;
  }
}

}  // namespace keel::raft
