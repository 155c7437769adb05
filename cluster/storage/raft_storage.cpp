// raft::LogStorage on WiredTiger (see raft_storage.hpp for the layout and the contracts).
#include "cluster/storage/raft_storage.hpp"

#include <cstdio>
#include <cstdlib>

#include "cluster/storage/wt_internal.hpp"

namespace keel::storage {
namespace {

using wt::get_be64;
using wt::get_varint;
using wt::put_be64;
using wt::put_varint;

constexpr const char* kHardStateRow = "raft_hardstate";
constexpr const char* kCompactedRow = "raft_compacted";
constexpr const char* kSnapshotRow = "raft_snapshot";
constexpr const char* kIdentityRow = "raft_identity";

// A WiredTiger failure on the raft log: nothing after it can be trusted (see the header).
[[noreturn]] void fatal(const char* what, int ret) {
  std::fprintf(stderr,
               "keel storage: raft log: %s failed: %s; aborting (the log cannot be trusted "
               "after a failed write or read)\n",
               what, wiredtiger_strerror(ret));
  std::fflush(stderr);
  std::abort();
}
void check(int ret, const char* what) {
  if (ret != 0) fatal(what, ret);
}

std::string be(uint64_t v) {
  std::string k;
  put_be64(k, v);
  return k;
}

std::string encode_entry(const raft::Entry& e) {
  std::string v;
  v.reserve(e.data.size() + 11);
  put_varint(v, e.term);
  v.push_back(static_cast<char>(e.type));
  v.append(e.data);
  return v;
}
bool decode_entry(std::string_view v, uint64_t index, raft::Entry* e) {
  e->index = index;
  if (!get_varint(&v, &e->term) || v.empty()) return false;
  auto type = static_cast<uint8_t>(v.front());
  if (type > static_cast<uint8_t>(raft::EntryType::conf_change)) return false;
  e->type = static_cast<raft::EntryType>(type);
  v.remove_prefix(1);
  e->data.assign(v.data(), v.size());
  return true;
}

std::string encode_snapshot(const raft::Snapshot& s) {
  return wt::encode_raft_snapshot(s);
}
bool decode_snapshot(std::string_view v, raft::Snapshot* s) {
  return wt::decode_raft_snapshot(v, s);
}

Error corrupt(const char* row) {
  return make_error(ErrorCode::internal, std::string("corrupt row ") + row + " in table meta");
}

}  // namespace

RaftStorage::RaftStorage(std::atomic<uint64_t>* syncs, std::atomic<uint64_t>* appended)
    : syncs_(syncs), appended_(appended), snap_(std::make_shared<raft::Snapshot>()) {
  terms_.push_back(0);
}

RaftStorage::~RaftStorage() {
  if (session_ != nullptr) session_->close(session_, nullptr);  // closes its cursors
}

Result<std::unique_ptr<RaftStorage>> RaftStorage::open(WT_CONNECTION* conn,
                                                       std::atomic<uint64_t>* syncs,
                                                       std::atomic<uint64_t>* appended) {
  std::unique_ptr<RaftStorage> rs(new RaftStorage(syncs, appended));
  WT_SESSION* s = nullptr;
  int ret = conn->open_session(conn, nullptr, "isolation=snapshot", &s);
  if (ret != 0) return wt::wt_error("raft log: open_session", ret);
  rs->session_ = s;
  ret = s->open_cursor(s, "table:raft_entries", nullptr, nullptr, &rs->entries_cursor_);
  if (ret == 0) ret = s->open_cursor(s, "table:meta", nullptr, nullptr, &rs->meta_cursor_);
  if (ret != 0) return wt::wt_error("raft log: open_cursor", ret);

  WT_CURSOR* m = rs->meta_cursor_;
  // Reads meta row `key` into *v; false if absent.
  std::string row;
  auto read_row = [&](const char* key) -> Result<bool> {
    wt::set_key(m, key);
    int r = m->search(m);
    if (r == WT_NOTFOUND) return false;
    if (r != 0) return wt::wt_error("raft log: read meta", r);
    row.assign(wt::value_view(m));
    m->reset(m);
    return true;
  };
  for (const char* key : {kHardStateRow, kCompactedRow, kSnapshotRow, kIdentityRow}) {
    auto found = read_row(key);
    if (!found) return std::move(found).error();
    if (!*found) continue;
    std::string_view v = row;
    if (key == kHardStateRow) {
      if (!get_varint(&v, &rs->hs_.term) || !get_varint(&v, &rs->hs_.vote) ||
          !get_varint(&v, &rs->hs_.commit) || !v.empty()) {
        return corrupt(key);
      }
    } else if (key == kCompactedRow) {
      uint64_t term = 0;
      if (!get_varint(&v, &rs->offset_) || !get_varint(&v, &term) || !v.empty()) {
        return corrupt(key);
      }
      rs->terms_.assign(1, term);
    } else if (key == kSnapshotRow) {
      auto snap = std::make_shared<raft::Snapshot>();
      if (!decode_snapshot(v, snap.get())) return corrupt(key);
      rs->snap_ = std::move(snap);
      rs->initialized_ = true;
    } else {
      uint64_t cluster = 0, member = 0;
      if (!get_varint(&v, &cluster) || !get_varint(&v, &member) || !v.empty()) {
        return corrupt(key);
      }
      rs->identity_ = std::make_pair(cluster, member);
    }
  }
  // The term cache: one pass over the log (which compaction keeps short).
  WT_CURSOR* c = rs->entries_cursor_;
  while ((ret = c->next(c)) == 0) {
    std::string_view k = wt::key_view(c);
    uint64_t want = rs->offset_ + rs->terms_.size();
    if (k.size() != 8 || get_be64(k.data()) != want) {
      c->reset(c);
      return make_error(ErrorCode::internal, "table raft_entries is not contiguous: expected " +
                                                 std::to_string(want) +
                                                 " after the compaction "
                                                 "point " +
                                                 std::to_string(rs->offset_));
    }
    std::string_view v = wt::value_view(c);
    uint64_t term = 0;
    if (!get_varint(&v, &term)) {
      c->reset(c);
      return make_error(ErrorCode::internal, "corrupt entry " + std::to_string(want));
    }
    rs->terms_.push_back(term);
  }
  c->reset(c);
  if (ret != WT_NOTFOUND) return wt::wt_error("raft log: scan raft_entries", ret);
  rs->live_entries_.store(rs->terms_.size() - 1);
  if (rs->snap_->meta.index < rs->offset_ || rs->snap_->meta.index > rs->last_index()) {
    return make_error(ErrorCode::internal, "raft log: the snapshot index " +
                                               std::to_string(rs->snap_->meta.index) +
                                               " is outside the log");
  }
  return rs;
}

std::optional<uint64_t> RaftStorage::term(uint64_t index) const {
  if (index < offset_ || index > last_index()) return std::nullopt;
  return terms_[index - offset_];
}

void RaftStorage::entries(uint64_t lo, uint64_t hi, uint64_t max_bytes,
                          std::vector<raft::Entry>* out) const {
  KEEL_ASSERT(lo >= first_index() && lo < hi && hi <= last_index() + 1);
  const uint64_t tail_lo = tail_.empty() ? last_index() + 1 : tail_.front().index;
  uint64_t bytes = 0;
  uint64_t i = lo;
  if (i < tail_lo) {
    WT_CURSOR* c = entries_cursor_;
    const uint64_t end = std::min(hi, tail_lo);
    int ret = wt::seek_ge(c, be(i));
    for (; i < end; i++) {
      if (i > lo) ret = c->next(c);
      if (ret == WT_NOTFOUND) {
        std::fprintf(stderr, "keel storage: raft log: entry %llu is missing\n",
                     static_cast<unsigned long long>(i));
      }
      check(ret, "read raft_entries");
      std::string_view k = wt::key_view(c);
      raft::Entry e;
      KEEL_ASSERT(k.size() == 8 && get_be64(k.data()) == i, "raft_entries has a gap");
      KEEL_ASSERT(decode_entry(wt::value_view(c), i, &e), "corrupt row in raft_entries");
      bytes += raft::entry_bytes(e);
      if (i > lo && bytes > max_bytes) {
        c->reset(c);
        return;
      }
      out->push_back(std::move(e));
    }
    c->reset(c);
  }
  for (; i < hi; i++) {
    const raft::Entry& e = tail_[i - tail_lo];
    bytes += raft::entry_bytes(e);
    if (i > lo && bytes > max_bytes) return;
    out->push_back(e);
  }
}

// ---- writes ----

void RaftStorage::begin() {
  check(session_->begin_transaction(session_, nullptr), "begin_transaction");
}

void RaftStorage::commit(bool sync) {
  check(session_->commit_transaction(session_, sync ? "sync=on" : nullptr),
        sync ? "commit_transaction (sync=on)" : "commit_transaction");
  if (sync) syncs_->fetch_add(1, std::memory_order_relaxed);
  live_entries_.store(terms_.size() - 1, std::memory_order_relaxed);
}

void RaftStorage::mark_initialized() {
  if (!initialized_) write_snapshot_row(*snap_);
}

void RaftStorage::write_snapshot_row(const raft::Snapshot& snap) {
  check(wt::put_row(meta_cursor_, kSnapshotRow, encode_snapshot(snap)), "write raft_snapshot");
  initialized_ = true;
}

void RaftStorage::write_compacted_row() {
  std::string v;
  put_varint(v, offset_);
  put_varint(v, terms_.front());
  check(wt::put_row(meta_cursor_, kCompactedRow, v), "write raft_compacted");
}

void RaftStorage::remove_entries(uint64_t lo, uint64_t hi) {
  for (uint64_t i = lo; i < hi; i++)
    check(wt::remove_row(entries_cursor_, be(i)), "remove from raft_entries");
}

void RaftStorage::write_snapshot(const raft::Snapshot& snap) {
  KEEL_ASSERT(snap.meta.index >= snap_->meta.index, "snapshot out of date");
  remove_entries(first_index(), last_index() + 1);
  offset_ = snap.meta.index;
  terms_.assign(1, snap.meta.term);
  tail_.clear();
  tail_bytes_ = 0;
  write_compacted_row();
  write_snapshot_row(snap);
}

void RaftStorage::write_entries(const std::vector<raft::Entry>& entries) {
  if (entries.empty()) return;
  const uint64_t first = entries.front().index;
  KEEL_ASSERT(first <= last_index() + 1, "gap in the log");
  // Entries at or below the compaction point are already covered by the snapshot.
  size_t skip = 0;
  if (first <= offset_) skip = offset_ - first + 1;
  if (skip >= entries.size()) return;
  const uint64_t start = entries[skip].index;
  const uint64_t new_last = entries.back().index;
  KEEL_ASSERT(new_last - start == entries.size() - 1 - skip, "entries are not contiguous");
  // Truncate-and-append: the conflicting suffix that the new entries do not overwrite goes.
  if (new_last < last_index()) remove_entries(new_last + 1, last_index() + 1);
  terms_.resize(start - offset_);
  tail_truncate_from(start);
  for (size_t i = skip; i < entries.size(); i++) {
    const raft::Entry& e = entries[i];
    KEEL_ASSERT(e.index == start + (i - skip), "entries are not contiguous");
    std::string row = encode_entry(e);
    check(wt::put_row(entries_cursor_, be(e.index), row), "write raft_entries");
    appended_bytes_.fetch_add(row.size() + 8, std::memory_order_relaxed);
    terms_.push_back(e.term);
    tail_push(e);
  }
  appended_->fetch_add(entries.size() - skip, std::memory_order_relaxed);
}

void RaftStorage::write_hard_state(const raft::HardState& hs) {
  std::string v;
  put_varint(v, hs.term);
  put_varint(v, hs.vote);
  put_varint(v, hs.commit);
  check(wt::put_row(meta_cursor_, kHardStateRow, v), "write raft_hardstate");
  hs_ = hs;
}

void RaftStorage::persist(const raft::Ready& rd) {
  persist(rd, {});
}

void RaftStorage::persist(const raft::Ready& rd,
                          const std::vector<std::pair<std::string, std::string>>& meta_rows) {
  if (!rd.snapshot && rd.entries.empty() && !rd.hard_state && meta_rows.empty()) return;
  // etcd-io/raft's MustSync: entries, a snapshot, a new term or vote must be durable before
  // anything of this Ready is sent; a commit index alone need not (it is re-learned from the
  // leader). The applied state, written after this, is durable only at a checkpoint, which
  // holds every transaction committed before it: this one too, synced or not.
  const bool sync = rd.snapshot || !rd.entries.empty() || !meta_rows.empty() ||
                    (rd.hard_state && (rd.hard_state->term != hs_.term ||
                                       rd.hard_state->vote != hs_.vote || !initialized_));
  begin();
  for (const auto& [key, value] : meta_rows)
    check(wt::put_row(meta_cursor_, key, value), "write a state row of a snapshot install");
  if (rd.snapshot) {
    write_snapshot(*rd.snapshot);
    snap_ = rd.snapshot;
  }
  write_entries(rd.entries);
  if (rd.hard_state) write_hard_state(*rd.hard_state);
  mark_initialized();
  commit(sync);
}

void RaftStorage::set_hard_state(const raft::HardState& hs) {
  begin();
  write_hard_state(hs);
  mark_initialized();
  commit(true);
}

void RaftStorage::append(const std::vector<raft::Entry>& entries) {
  begin();
  write_entries(entries);
  mark_initialized();
  commit(true);
}

void RaftStorage::apply_snapshot(std::shared_ptr<const raft::Snapshot> snap) {
  KEEL_ASSERT(snap != nullptr);
  begin();
  write_snapshot(*snap);
  snap_ = std::move(snap);
  commit(true);
}

void RaftStorage::create_snapshot(uint64_t index, const raft::ConfState& conf, std::string data,
                                  uint64_t compact_to) {
  KEEL_ASSERT(index >= snap_->meta.index && index <= last_index() && index >= offset_);
  KEEL_ASSERT(compact_to <= index);
  auto snap = std::make_shared<raft::Snapshot>();
  snap->meta.index = index;
  snap->meta.term = *term(index);
  snap->meta.conf = conf;
  snap->data = std::move(data);
  begin();
  write_snapshot_row(*snap);
  snap_ = std::move(snap);
  if (compact_to > offset_) {
    remove_entries(first_index(), compact_to + 1);
    terms_.erase(terms_.begin(),
                 terms_.begin() + static_cast<std::ptrdiff_t>(compact_to - offset_));
    offset_ = compact_to;
    write_compacted_row();
    tail_drop_below(compact_to + 1);
  }
  commit(false);
}

Status RaftStorage::bootstrap(const raft::ConfState& initial) {
  if (initialized_) {
    return make_error(ErrorCode::invalid_argument,
                      "the raft log is already initialized (bootstrapped, or it joined a "
                      "cluster); refusing to bootstrap it again");
  }
  auto snap = std::make_shared<raft::Snapshot>();
  snap->meta.conf = initial;
  begin();
  write_snapshot_row(*snap);
  snap_ = std::move(snap);
  commit(true);
  return ok_status();
}

Status RaftStorage::set_identity(uint64_t cluster_id, uint64_t member_id) {
  auto want = std::make_pair(cluster_id, member_id);
  if (identity_) {
    if (*identity_ == want) return ok_status();
    return make_error(ErrorCode::invalid_argument,
                      "this data directory belongs to cluster " + std::to_string(identity_->first) +
                          " as member " + std::to_string(identity_->second) +
                          "; refusing to use it as member " + std::to_string(member_id) +
                          " of cluster " + std::to_string(cluster_id));
  }
  std::string v;
  put_varint(v, cluster_id);
  put_varint(v, member_id);
  begin();
  check(wt::put_row(meta_cursor_, kIdentityRow, v), "write raft_identity");
  commit(true);
  identity_ = want;
  return ok_status();
}

// ---- tail cache ----

void RaftStorage::tail_push(const raft::Entry& e) {
  tail_.push_back(e);
  tail_bytes_ += raft::entry_bytes(e);
  while (!tail_.empty() && (tail_bytes_ > kTailMaxBytes || tail_.size() > kTailMaxEntries)) {
    tail_bytes_ -= raft::entry_bytes(tail_.front());
    tail_.pop_front();
  }
}

void RaftStorage::tail_truncate_from(uint64_t index) {
  while (!tail_.empty() && tail_.back().index >= index) {
    tail_bytes_ -= raft::entry_bytes(tail_.back());
    tail_.pop_back();
  }
}

void RaftStorage::tail_drop_below(uint64_t index) {
  while (!tail_.empty() && tail_.front().index < index) {
    tail_bytes_ -= raft::entry_bytes(tail_.front());
    tail_.pop_front();
  }
}

}  // namespace keel::storage
