// Streamed snapshots of the state machine: SnapshotSource reads one WiredTiger snapshot of
// the state tables and their meta rows in chunks; SnapshotSink writes received chunks into
// the tables of a new generation (wt_internal.hpp, "Generations"), checking every row first:
// the bytes come from a peer, and a malformed row must never reach an assertion of the read
// or compaction paths.
#include <algorithm>
#include <map>
#include <vector>

#include "cluster/storage/wt_internal.hpp"

namespace keel::storage::wt {
namespace {

void put_row_bytes(std::string& out, uint8_t tag, std::string_view key, std::string_view value) {
  out.push_back(static_cast<char>(tag));
  put_varint(out, key.size());
  out.append(key);
  put_varint(out, value.size());
  out.append(value);
}

Error bad_chunk(const std::string& what) {
  return make_error(ErrorCode::invalid_argument, "malformed snapshot chunk: " + what);
}

bool is_state_meta_row(std::string_view key) {
  return std::any_of(std::begin(kStateMetaRows), std::end(kStateMetaRows),
                     [&](const char* k) { return key == k; });
}

class SourceImpl final : public SnapshotSource {
 public:
  ~SourceImpl() override {
    if (session_ != nullptr) session_->close(session_, nullptr);  // ends the read txn
  }

  Status open(WT_CONNECTION* conn) {
    int ret = conn->open_session(conn, nullptr, "isolation=snapshot", &session_);
    if (ret != 0) {
      session_ = nullptr;
      return wt_error("open a snapshot source session", ret);
    }
    WT_CURSOR* meta = nullptr;
    ret = session_->open_cursor(session_, kStateMetaTable, nullptr, nullptr, &meta);
    if (ret != 0) return wt_error("open meta for a snapshot", ret);
    ret = session_->begin_transaction(session_, nullptr);
    if (ret != 0) return wt_error("begin snapshot read", ret);
    for (const char* key : kStateMetaRows) {
      set_key(meta, key);
      ret = meta->search(meta);
      if (ret == WT_NOTFOUND) continue;
      if (ret != 0) return wt_error("read meta for a snapshot", ret);
      meta_rows_.emplace_back(key, std::string(value_view(meta)));
    }
    meta->close(meta);
    State state;
    auto it = std::find_if(meta_rows_.begin(), meta_rows_.end(),
                           [](const auto& r) { return r.first == "state"; });
    if (it == meta_rows_.end() || !decode_state(it->second, &state)) {
      return make_error(ErrorCode::internal,
                        "snapshot source: no valid state row in table statemeta");
    }
    info_.applied_index = state.applied_index;
    info_.conf = state.conf;
    info_.revision = state.revision;
    for (const auto& [k, v] : meta_rows_) {
      if (k == "members") info_.members = v;
    }
    // The tables of the generation this transaction sees: a table is never dropped while a
    // cursor holds it.
    for (int i = 0; i < static_cast<int>(kStateTableCount); i++) {
      ret = session_->open_cursor(session_, table_uri(kOrder[i], state.generation).c_str(), nullptr,
                                  nullptr, &cursors_[i]);
      if (ret != 0) return wt_error("open a snapshot cursor", ret);
    }
    return ok_status();
  }

  const SnapshotInfo& info() const override { return info_; }

  Result<bool> next(size_t max_bytes, std::string* chunk) override {
    chunk->clear();
    if (!meta_sent_) {
      for (const auto& [k, v] : meta_rows_)
        put_row_bytes(*chunk, kMetaTag, k, v);
      meta_sent_ = true;
    }
    while (table_ < static_cast<int>(kStateTableCount) && chunk->size() < max_bytes) {
      WT_CURSOR* c = cursors_[table_];
      int ret = c->next(c);
      if (ret == WT_NOTFOUND) {
        c->reset(c);
        table_++;
        continue;
      }
      if (ret != 0) return wt_error("read state for a snapshot", ret);
      put_row_bytes(*chunk, static_cast<uint8_t>(kOrder[table_]), key_view(c), value_view(c));
    }
    bytes_ += chunk->size();
    return !chunk->empty();
  }

  uint64_t bytes() const override { return bytes_; }

 private:
  static constexpr StateTable kOrder[kStateTableCount] = {StateTable::current, StateTable::index,
                                                          StateTable::history, StateTable::ext};
  WT_SESSION* session_ = nullptr;
  WT_CURSOR* cursors_[kStateTableCount] = {};  // in kOrder
  SnapshotInfo info_;
  std::vector<std::pair<std::string, std::string>> meta_rows_;
  bool meta_sent_ = false;
  int table_ = 0;
  uint64_t bytes_ = 0;
};

class SinkImpl final : public StagedSnapshot {
 public:
  SinkImpl(WT_CONNECTION* conn, uint64_t generation) : conn_(conn), generation_(generation) {}

  ~SinkImpl() override {
    if (session_ != nullptr) session_->close(session_, nullptr);
    session_ = nullptr;
    if (installed_) return;
    // Not installed: its tables go (nothing else ever opened them).
    WT_SESSION* s = nullptr;
    if (conn_->open_session(conn_, nullptr, nullptr, &s) != 0) return;
    for (StateTable t : kStateTables)
      s->drop(s, table_uri(t, generation_).c_str(), "force=true");
    s->close(s, nullptr);
  }

  Status open() {
    int ret = conn_->open_session(conn_, nullptr, "isolation=snapshot", &session_);
    if (ret != 0) {
      session_ = nullptr;
      return wt_error("open a snapshot sink session", ret);
    }
    // Leftovers of an abandoned stream of the same generation go first.
    for (StateTable t : kStateTables) {
      ret = session_->drop(session_, table_uri(t, generation_).c_str(), "force=true");
      if (ret != 0) return wt_error("drop an old staging table", ret);
    }
    if ((ret = create_state_tables(session_, generation_)) != 0) {
      return wt_error("create staging tables", ret);
    }
    for (StateTable t : kStateTables) {
      ret = session_->open_cursor(session_, table_uri(t, generation_).c_str(), nullptr, nullptr,
                                  &cursors_[static_cast<int>(t) - 1]);
      if (ret != 0) return wt_error("open a staging cursor", ret);
    }
    return ok_status();
  }

  Status add(std::string_view chunk) override {
    if (finished_) return bad_chunk("a chunk after the end of the stream");
    // Check every row before writing any, so a bad chunk leaves the staging tables as they
    // were (the stream is abandoned anyway).
    struct Row {
      uint8_t tag;
      std::string_view key, value;
    };
    std::vector<Row> rows;
    std::string_view in = chunk;
    while (!in.empty()) {
      Row r{static_cast<uint8_t>(in.front()), {}, {}};
      in.remove_prefix(1);
      uint64_t n = 0;
      if (!get_varint(&in, &n) || n > in.size()) return bad_chunk("truncated key");
      r.key = in.substr(0, n);
      in.remove_prefix(n);
      if (!get_varint(&in, &n) || n > in.size()) return bad_chunk("truncated value");
      r.value = in.substr(0, n);
      in.remove_prefix(n);
      if (auto st = check_row(r.tag, r.key, r.value); !st) return st;
      rows.push_back(r);
    }
    int ret = session_->begin_transaction(session_, nullptr);
    if (ret != 0) return wt_error("begin a staging transaction", ret);
    for (const Row& r : rows) {
      if (r.tag == kMetaTag) continue;  // kept in memory; written at install
      ret = put_row(cursors_[r.tag - 1], r.key, r.value);
      if (ret != 0) break;
    }
    if (ret == 0) {
      ret = session_->commit_transaction(session_, nullptr);
    } else {
      session_->rollback_transaction(session_, nullptr);
    }
    if (ret != 0) return wt_error("write a snapshot chunk", ret);
    for (const Row& r : rows) {
      if (r.tag == kMetaTag) meta_[std::string(r.key)] = std::string(r.value);
    }
    bytes_ += chunk.size();
    return ok_status();
  }

  Result<SnapshotInfo> finish() override {
    auto it = meta_.find("state");
    if (it == meta_.end()) return bad_chunk("the stream ended without a state row");
    if (!decode_state(it->second, &state_)) return bad_chunk("undecodable state row");
    if (state_.applied_index == 0 || state_.conf.voters.empty()) {
      return bad_chunk("a state row without an applied index or voters");
    }
    state_.generation = generation_;
    finished_ = true;
    SnapshotInfo info;
    info.applied_index = state_.applied_index;
    info.conf = state_.conf;
    info.revision = state_.revision;
    if (auto m = meta_.find("members"); m != meta_.end()) info.members = m->second;
    return info;
  }

  uint64_t bytes() const override { return bytes_; }
  uint64_t generation() const override { return generation_; }
  bool finished() const override { return finished_; }
  const State& state() const override { return state_; }

  MetaRows install_rows() const override {
    MetaRows rows;
    rows.emplace_back("state", encode_state(state_));
    auto m = meta_.find("members");
    rows.emplace_back("members", m != meta_.end() ? m->second : std::string());
    auto c = meta_.find("compaction");
    if (c != meta_.end()) {
      rows.emplace_back("compaction", c->second);
    } else {
      // Physical compaction has to look at everything once.
      std::string v;
      put_varint(v, static_cast<uint64_t>(state_.compact_revision));
      put_varint(v, 0);
      rows.emplace_back("compaction", v);
    }
    return rows;
  }

  void installed() override {
    installed_ = true;
    if (session_ != nullptr) session_->close(session_, nullptr);
    session_ = nullptr;
  }

 private:
  // What the read and compaction paths rely on (they assert on it).
  static Status check_row(uint8_t tag, std::string_view key, std::string_view value) {
    Record rec;
    switch (tag) {
      case kMetaTag: {
        if (!is_state_meta_row(key))
          return bad_chunk("unexpected meta row '" + std::string(key) + "'");
        if (key == "state") {
          State st;
          if (!decode_state(value, &st)) return bad_chunk("undecodable state row");
        } else if (key == "compaction") {
          CompactionRow cr;
          if (!decode_compaction(value, &cr)) return bad_chunk("undecodable compaction row");
        }
        return ok_status();
      }
      case static_cast<uint8_t>(StateTable::current):
        if (!decode_record(value, &rec, false)) return bad_chunk("undecodable current row");
        return ok_status();
      case static_cast<uint8_t>(StateTable::index): {
        size_t plen = escaped_prefix_len(key);
        if (plen == 0 || key.size() != plen + 8) return bad_chunk("malformed index key");
        if (value.size() != 5 || static_cast<uint8_t>(value[4]) > 1) {
          return bad_chunk("malformed index value");
        }
        return ok_status();
      }
      case static_cast<uint8_t>(StateTable::history):
        if (key.size() != 12) return bad_chunk("malformed history key");
        if (!decode_record(value, &rec, false)) return bad_chunk("undecodable history row");
        return ok_status();
      case static_cast<uint8_t>(StateTable::ext):
        // The primitives' rows: their decoders treat every row as untrusted (a malformed
        // one is an internal error of the command that meets it, never a crash).
        if (key.empty()) return bad_chunk("empty ext key");
        return ok_status();
      default:
        return bad_chunk("unknown row tag " + std::to_string(tag));
    }
  }

  WT_CONNECTION* conn_;
  const uint64_t generation_;
  WT_SESSION* session_ = nullptr;
  WT_CURSOR* cursors_[kStateTableCount] = {};  // by StateTable - 1
  std::map<std::string, std::string> meta_;
  State state_;
  bool finished_ = false;
  bool installed_ = false;
  uint64_t bytes_ = 0;
};

}  // namespace

Result<std::unique_ptr<SnapshotSource>> make_snapshot_source(WT_CONNECTION* conn) {
  auto s = std::make_unique<SourceImpl>();
  if (auto st = s->open(conn); !st) return std::move(st).error();
  return std::unique_ptr<SnapshotSource>(std::move(s));
}

Result<std::unique_ptr<StagedSnapshot>> make_snapshot_sink(WT_CONNECTION* conn,
                                                           uint64_t generation) {
  auto s = std::make_unique<SinkImpl>(conn, generation);
  if (auto st = s->open(); !st) return std::move(st).error();
  return std::unique_ptr<StagedSnapshot>(std::move(s));
}

}  // namespace keel::storage::wt
