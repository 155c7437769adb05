#include "cluster/node/wire.hpp"

namespace keel::node::wire {

namespace {

constexpr char kEntryMagic = 'K';
constexpr char kVersion = 1;
constexpr char kEntryVersion = 2;        // entries: version 1 had no cluster time
constexpr size_t kStampOffset = 2 + 24;  // magic, version, origin
constexpr size_t kMaxString = 1 << 16;   // names, addresses, roles
constexpr size_t kMaxMembers = 1 << 16;

void put_u64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_str(std::string* out, std::string_view s) {
  put_u64(out, s.size());
  out->append(s);
}

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u64(uint64_t* v) {
    if (in_.size() < 8) return false;
    uint64_t r = 0;
    for (int i = 0; i < 8; ++i)
      r |= static_cast<uint64_t>(static_cast<unsigned char>(in_[i])) << (8 * i);
    in_.remove_prefix(8);
    *v = r;
    return true;
  }
  bool i64(int64_t* v) {
    uint64_t u = 0;
    if (!u64(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  bool byte(uint8_t* v) {
    if (in_.empty()) return false;
    *v = static_cast<uint8_t>(in_.front());
    in_.remove_prefix(1);
    return true;
  }
  bool str(std::string* s) {
    uint64_t n = 0;
    if (!u64(&n) || n > kMaxString || n > in_.size()) return false;
    s->assign(in_.substr(0, n));
    in_.remove_prefix(n);
    return true;
  }
  bool origin(Origin* o) { return u64(&o->member) && u64(&o->nonce) && u64(&o->seq); }
  bool member(Member* m) {
    uint8_t learner = 0;
    if (!u64(&m->id) || !str(&m->name) || !str(&m->peer_address) || !byte(&learner)) return false;
    if (learner > 1) return false;
    m->learner = learner == 1;
    return true;
  }
  bool members(std::vector<Member>* out) {
    uint64_t n = 0;
    if (!u64(&n) || n > kMaxMembers) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      Member m;
      if (!member(&m)) return false;
      out->push_back(std::move(m));
    }
    return true;
  }
  bool ids(std::vector<uint64_t>* out) {
    uint64_t n = 0;
    if (!u64(&n) || n > kMaxMembers || n > in_.size() / 8) return false;
    out->resize(n);
    for (auto& id : *out)
      if (!u64(&id)) return false;
    return true;
  }
  bool code(ErrorCode* c) {
    uint64_t v = 0;
    if (!u64(&v) || v > static_cast<uint64_t>(ErrorCode::semaphore_max_mismatch)) return false;
    *c = static_cast<ErrorCode>(v);
    return true;
  }
  bool bytes(std::string* s) {  // no kMaxString bound: entry data, bounded by the frame
    uint64_t n = 0;
    if (!u64(&n) || n > in_.size()) return false;
    s->assign(in_.substr(0, n));
    in_.remove_prefix(n);
    return true;
  }
  bool learners(std::vector<Learner>* out) {
    uint64_t n = 0;
    if (!u64(&n) || n > kMaxMembers) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      Learner l;
      if (!u64(&l.id) || !str(&l.name) || !str(&l.peer_address) || !u64(&l.parent) ||
          !u64(&l.applied)) {
        return false;
      }
      out->push_back(std::move(l));
    }
    return true;
  }
  std::string_view rest() const { return in_; }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

void put_origin(std::string* out, const Origin& o) {
  put_u64(out, o.member);
  put_u64(out, o.nonce);
  put_u64(out, o.seq);
}
void put_member(std::string* out, const Member& m) {
  put_u64(out, m.id);
  put_str(out, m.name);
  put_str(out, m.peer_address);
  out->push_back(m.learner ? 1 : 0);
}
void put_members(std::string* out, const std::vector<Member>& members) {
  put_u64(out, members.size());
  for (const auto& m : members)
    put_member(out, m);
}
void put_ids(std::string* out, const std::vector<uint64_t>& ids) {
  put_u64(out, ids.size());
  for (uint64_t id : ids)
    put_u64(out, id);
}
void put_learners(std::string* out, const std::vector<Learner>& learners) {
  put_u64(out, learners.size());
  for (const auto& l : learners) {
    put_u64(out, l.id);
    put_str(out, l.name);
    put_str(out, l.peer_address);
    put_u64(out, l.parent);
    put_u64(out, l.applied);
  }
}
std::string start(AppKind k) {
  return std::string(1, static_cast<char>(k));
}
// The payload after the kind byte, if `data` is a message of kind k.
std::optional<Reader> open_app(std::string_view data, AppKind k) {
  if (data.empty() || static_cast<uint8_t>(data[0]) != static_cast<uint8_t>(k)) return {};
  return Reader(data.substr(1));
}

}  // namespace

std::string encode_entry(const Origin& origin, std::string_view command) {
  std::string out;
  out.reserve(kStampOffset + 8 + command.size());
  out.push_back(kEntryMagic);
  out.push_back(kEntryVersion);
  put_origin(&out, origin);
  put_u64(&out, 0);  // cluster time: stamped by the leader (stamp_entry)
  out.append(command);
  return out;
}

bool stamp_entry(std::string* data, uint64_t cluster_ms) {
  if (data->size() < kStampOffset + 8 || (*data)[0] != kEntryMagic || (*data)[1] != kEntryVersion) {
    return false;
  }
  for (int i = 0; i < 8; ++i)
    (*data)[kStampOffset + i] = static_cast<char>((cluster_ms >> (8 * i)) & 0xff);
  return true;
}

bool decode_entry(std::string_view data, Origin* origin, std::string_view* command,
                  uint64_t* cluster_ms) {
  if (data.size() < 2 || data[0] != kEntryMagic) return false;
  if (data[1] != kVersion && data[1] != kEntryVersion) return false;
  Reader r(data.substr(2));
  if (!r.origin(origin)) return false;
  uint64_t stamp = 0;
  if (data[1] == kEntryVersion && !r.u64(&stamp)) return false;  // version 1: no stamp
  if (cluster_ms != nullptr) *cluster_ms = stamp;
  *command = r.rest();
  return true;
}

std::string encode_member_context(const Origin& origin, const Member& member) {
  std::string out;
  out.push_back(kVersion);
  put_origin(&out, origin);
  put_member(&out, member);
  return out;
}

bool decode_member_context(std::string_view data, Origin* origin, Member* member) {
  if (data.empty() || data[0] != kVersion) return false;
  Reader r(data.substr(1));
  return r.origin(origin) && r.member(member) && r.done();
}

std::string encode_members(const std::vector<Member>& members,
                           const std::vector<uint64_t>& removed) {
  std::string out;
  out.push_back(kVersion);
  put_members(&out, members);
  if (!removed.empty()) {
    put_u64(&out, removed.size());
    for (uint64_t id : removed)
      put_u64(&out, id);
  }
  return out;
}

bool decode_members(std::string_view data, std::vector<Member>* members,
                    std::vector<uint64_t>* removed) {
  if (data.empty() || data[0] != kVersion) return false;
  Reader r(data.substr(1));
  if (!r.members(members)) return false;
  if (removed != nullptr) removed->clear();
  if (r.done()) return true;  // written before removed ids were recorded, or none
  uint64_t n = 0;
  if (!r.u64(&n) || n > kMaxMembers) return false;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t id = 0;
    if (!r.u64(&id)) return false;
    if (removed != nullptr) removed->push_back(id);
  }
  return r.done();
}

std::string encode_status_request(uint64_t seq) {
  std::string out;
  out.push_back(static_cast<char>(AppKind::status_request));
  put_u64(&out, seq);
  return out;
}

std::string encode_status_response(uint64_t seq, const NodeStatus& s) {
  std::string out;
  out.push_back(static_cast<char>(AppKind::status_response));
  put_u64(&out, seq);
  put_u64(&out, s.cluster_id);
  put_u64(&out, s.id);
  put_str(&out, s.name);
  put_str(&out, s.role);
  put_u64(&out, s.leader);
  put_u64(&out, s.term);
  put_u64(&out, s.commit_index);
  put_u64(&out, s.applied_index);
  put_u64(&out, s.last_index);
  put_u64(&out, static_cast<uint64_t>(s.revision));
  put_members(&out, s.members);
  put_u64(&out, s.readies);
  put_u64(&out, s.proposals);
  put_u64(&out, s.log_syncs);
  put_u64(&out, s.cluster_ms);
  put_u64(&out, s.upstream);
  put_ids(&out, s.upstream_path);
  put_u64(&out, s.lag_entries);
  put_u64(&out, s.lag_ms);
  put_u64(&out, s.relay_children);
  put_learners(&out, s.learners);
  return out;
}

std::optional<AppKind> app_kind(std::string_view data) {
  if (data.empty()) return std::nullopt;
  auto k = static_cast<uint8_t>(data[0]);
  if (k == 1) return AppKind::status_request;
  if (k == 2) return AppKind::status_response;
  if (k == 3) return AppKind::removed_notice;
  if (k == 4) return AppKind::snapshot_chunk;
  if (k >= 5 && k <= static_cast<uint8_t>(AppKind::relay_read_ack)) return AppKind(k);
  return std::nullopt;
}

std::string encode_removed_notice(uint64_t member) {
  std::string out;
  out.push_back(static_cast<char>(AppKind::removed_notice));
  put_u64(&out, member);
  return out;
}

bool decode_removed_notice(std::string_view data, uint64_t* member) {
  if (app_kind(data) != AppKind::removed_notice) return false;
  Reader r(data.substr(1));
  return r.u64(member) && r.done();
}

bool decode_status_request(std::string_view data, uint64_t* seq) {
  if (app_kind(data) != AppKind::status_request) return false;
  Reader r(data.substr(1));
  return r.u64(seq) && r.done();
}

bool decode_status_response(std::string_view data, uint64_t* seq, NodeStatus* s) {
  if (app_kind(data) != AppKind::status_response) return false;
  Reader r(data.substr(1));
  return r.u64(seq) && r.u64(&s->cluster_id) && r.u64(&s->id) && r.str(&s->name) &&
         r.str(&s->role) && r.u64(&s->leader) && r.u64(&s->term) && r.u64(&s->commit_index) &&
         r.u64(&s->applied_index) && r.u64(&s->last_index) && r.i64(&s->revision) &&
         r.members(&s->members) && r.u64(&s->readies) && r.u64(&s->proposals) &&
         r.u64(&s->log_syncs) && r.u64(&s->cluster_ms) && r.u64(&s->upstream) &&
         r.ids(&s->upstream_path) && r.u64(&s->lag_entries) && r.u64(&s->lag_ms) &&
         r.u64(&s->relay_children) && r.learners(&s->learners) && r.done();
}

std::string encode_snapshot_chunk(uint64_t transfer, uint64_t seq, bool last,
                                  std::string_view data) {
  std::string out;
  out.reserve(18 + data.size());
  out.push_back(static_cast<char>(AppKind::snapshot_chunk));
  put_u64(&out, transfer);
  put_u64(&out, seq);
  out.push_back(last ? 1 : 0);
  out.append(data);
  return out;
}

bool decode_snapshot_chunk(std::string_view payload, SnapshotChunk* out) {
  if (app_kind(payload) != AppKind::snapshot_chunk) return false;
  Reader r(payload.substr(1));
  uint8_t last = 0;
  if (!r.u64(&out->transfer) || !r.u64(&out->seq) || !r.byte(&last) || last > 1) return false;
  out->last = last == 1;
  out->data = payload.substr(1 + 8 + 8 + 1);
  return true;
}

std::string encode_snapshot_ack(const SnapshotAck& ack) {
  std::string out;
  out.push_back(static_cast<char>(AppKind::snapshot_ack));
  put_u64(&out, ack.transfer);
  put_u64(&out, ack.seq);
  out.push_back(ack.ok ? 1 : 0);
  put_str(&out, ack.reason);
  return out;
}

bool decode_snapshot_ack(std::string_view payload, SnapshotAck* out) {
  if (app_kind(payload) != AppKind::snapshot_ack) return false;
  Reader r(payload.substr(1));
  uint8_t ok = 0;
  if (!r.u64(&out->transfer) || !r.u64(&out->seq) || !r.byte(&ok) || ok > 1 ||
      !r.str(&out->reason) || !r.done()) {
    return false;
  }
  out->ok = ok == 1;
  return true;
}

// ---- the relay tree ------------------------------------------------------------------

std::string encode_relay_subscribe(const RelaySubscribe& m) {
  auto out = start(AppKind::relay_subscribe);
  put_str(&out, m.name);
  put_str(&out, m.peer_address);
  put_u64(&out, m.next_index);
  return out;
}
bool decode_relay_subscribe(std::string_view data, RelaySubscribe* m) {
  auto r = open_app(data, AppKind::relay_subscribe);
  return r && r->str(&m->name) && r->str(&m->peer_address) && r->u64(&m->next_index) &&
         m->next_index > 0 && r->done();
}

std::string encode_relay_accept(const std::vector<uint64_t>& path) {
  auto out = start(AppKind::relay_accept);
  put_ids(&out, path);
  return out;
}
bool decode_relay_accept(std::string_view data, std::vector<uint64_t>* path) {
  auto r = open_app(data, AppKind::relay_accept);
  return r && r->ids(path) && !path->empty() && r->done();
}

std::string encode_relay_redirect(const RelayRedirect& m) {
  auto out = start(AppKind::relay_redirect);
  put_members(&out, m.candidates);
  put_str(&out, m.reason);
  return out;
}
bool decode_relay_redirect(std::string_view data, RelayRedirect* m) {
  auto r = open_app(data, AppKind::relay_redirect);
  return r && r->members(&m->candidates) && r->str(&m->reason) && r->done();
}

std::string encode_relay_entries(const RelayEntries& m) {
  auto out = start(AppKind::relay_entries);
  put_u64(&out, m.leader);
  put_u64(&out, m.term);
  put_u64(&out, m.commit);
  put_u64(&out, m.prev_index);
  put_u64(&out, m.prev_term);
  put_u64(&out, m.cluster_ms);
  out.push_back(m.upstream_ok ? 1 : 0);
  put_ids(&out, m.path);
  put_u64(&out, m.entries.size());
  for (const auto& e : m.entries) {
    put_u64(&out, e.term);
    out.push_back(static_cast<char>(e.type));
    put_str(&out, e.data);
  }
  return out;
}
bool decode_relay_entries(std::string_view data, RelayEntries* m) {
  auto r = open_app(data, AppKind::relay_entries);
  uint8_t ok = 0;
  uint64_t n = 0;
  if (!r || !r->u64(&m->leader) || !r->u64(&m->term) || !r->u64(&m->commit) ||
      !r->u64(&m->prev_index) || !r->u64(&m->prev_term) || !r->u64(&m->cluster_ms) ||
      !r->byte(&ok) || ok > 1 || !r->ids(&m->path) || !r->u64(&n) || n > data.size() / 17) {
    return false;
  }
  m->upstream_ok = ok == 1;
  m->entries.clear();
  m->entries.reserve(n);
  uint64_t prev_term = m->prev_term;
  for (uint64_t i = 0; i < n; ++i) {
    raft::Entry e;
    uint8_t type = 0;
    if (!r->u64(&e.term) || !r->byte(&type) || type > 1 || !r->bytes(&e.data)) return false;
    // Committed entries: indexes follow prev_index, terms never go back.
    if (e.term < prev_term || m->prev_index + i + 1 == 0) return false;
    prev_term = e.term;
    e.index = m->prev_index + i + 1;
    e.type = static_cast<raft::EntryType>(type);
    m->entries.push_back(std::move(e));
  }
  return r->done();
}

std::string encode_relay_ack(const RelayAck& m) {
  auto out = start(AppKind::relay_ack);
  put_u64(&out, m.applied);
  out.push_back(m.has_report ? 1 : 0);
  if (m.has_report) put_learners(&out, m.subtree);
  return out;
}
bool decode_relay_ack(std::string_view data, RelayAck* m) {
  auto r = open_app(data, AppKind::relay_ack);
  uint8_t has = 0;
  if (!r || !r->u64(&m->applied) || !r->byte(&has) || has > 1) return false;
  m->has_report = has == 1;
  m->subtree.clear();
  return (!m->has_report || r->learners(&m->subtree)) && r->done();
}

std::string encode_relay_propose(const RelayPropose& m) {
  auto out = start(AppKind::relay_propose);
  put_u64(&out, m.seq);
  put_str(&out, m.peer_address);
  put_str(&out, m.data);
  return out;
}
bool decode_relay_propose(std::string_view data, RelayPropose* m) {
  auto r = open_app(data, AppKind::relay_propose);
  return r && r->u64(&m->seq) && r->str(&m->peer_address) && r->bytes(&m->data) && r->done();
}

std::string encode_relay_propose_ack(const RelayProposeAck& m) {
  auto out = start(AppKind::relay_propose_ack);
  put_u64(&out, m.seq);
  put_u64(&out, static_cast<uint64_t>(m.code));
  put_u64(&out, m.term);
  put_str(&out, m.message);
  return out;
}
bool decode_relay_propose_ack(std::string_view data, RelayProposeAck* m) {
  auto r = open_app(data, AppKind::relay_propose_ack);
  return r && r->u64(&m->seq) && r->code(&m->code) && r->u64(&m->term) && r->str(&m->message) &&
         r->done();
}

std::string encode_relay_read(const RelayRead& m) {
  auto out = start(AppKind::relay_read);
  put_u64(&out, m.seq);
  put_str(&out, m.peer_address);
  return out;
}
bool decode_relay_read(std::string_view data, RelayRead* m) {
  auto r = open_app(data, AppKind::relay_read);
  return r && r->u64(&m->seq) && r->str(&m->peer_address) && r->done();
}

std::string encode_relay_read_ack(const RelayReadAck& m) {
  auto out = start(AppKind::relay_read_ack);
  put_u64(&out, m.seq);
  put_u64(&out, static_cast<uint64_t>(m.code));
  put_u64(&out, m.index);
  put_str(&out, m.message);
  return out;
}
bool decode_relay_read_ack(std::string_view data, RelayReadAck* m) {
  auto r = open_app(data, AppKind::relay_read_ack);
  return r && r->u64(&m->seq) && r->code(&m->code) && r->u64(&m->index) && r->str(&m->message) &&
         r->done();
}

}  // namespace keel::node::wire
