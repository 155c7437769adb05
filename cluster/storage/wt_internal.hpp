#pragma once
// Internals of the WiredTiger engine, shared by wt_engine.cpp, mvcc_apply.cpp and
// mvcc_read.cpp. Not part of the storage interface.
//
// Tables (all key_format=u,value_format=u, with our own order-preserving key encodings):
//   statemeta "state" -> {revision, compact revision, applied index, configuration,
//            generation} (written by apply); "members" -> the node's member list (apply);
//            "compaction" -> progress of physical compaction (written by the compactor);
//            "installed" -> the Raft snapshot record of the last snapshot install (install)
//   history  be64(revision) be32(sub) -> Record with key: every event, for events() and
//            reads at old revisions
//   index    escaped(user key) be64(revision) -> be32(sub) u8(tombstone): per key versions
//   current  raw user key -> Record without key and without value: the live keys, for reads
//            at the current revision; the value is in the history row (mod_revision, sub) it
//            points at, so each value is stored once (a point read: two cursor searches)
//   ext      the primitives' rows (StateExtension; their format is primitives/state.cpp's)
//   raft_entries  be64(index) -> varint(term) u8(type) data (RaftStorage, raft_storage.hpp)
//   meta     RaftStorage's rows "raft_*", and "format" (kFormatVersion)
//
// Journaling (see also "Durability" in mvcc_store.hpp): only raft_entries and
// meta are written to WiredTiger's journal (they are the Raft log and hard state, synced
// once per Ready). statemeta and the state tables of every generation are created with
// log=(enabled=false): they are re-derivable from the log, and become durable only at a
// checkpoint, which holds them at one consistent applied index (a checkpoint is one snapshot
// transaction over every table). After a crash WiredTiger brings them back as of the last
// completed checkpoint and the node re-applies the log above its applied index.
// WiredTiger 3.2.1 facts this relies on:
//  - log=(enabled=false) per table on a connection with logging is supported ("commit-level
//    durability for some objects and not others"); a transaction writing both kinds journals
//    only its logged tables' changes, so after a crash such a transaction may survive in part.
//    Nothing here relies on one: the state and its applied index are all unjournaled, the log
//    all journaled; the one step that spans both, a snapshot install, orders them
//    (checkpoint, then the log's commit) and open completes it (MvccStore::install).
//  - A checkpoint is one snapshot transaction over every table (txn_ckpt.c begins it with
//    isolation=snapshot), so it holds the state rows and the data of one applied index.
//  - A table's logging setting is stored in WiredTiger's metadata at create and kept: a data
//    dir written when every table was journaled (format 1: no "format" row, state rows in
//    table:meta) would stay fully journaled, so it is refused at open with a message instead.
//  - WiredTiger also checkpoints a single file when its last handle closes. The live state
//    tables are held open by the store's sessions for its whole life, so that never happens
//    to them while they are live (it would checkpoint one table ahead of the others).
//
// Generations: history, index and current are the state machine's tables. A snapshot
// install (snapshot.cpp) writes them anew as generation g+1 ("table:current_g1", ...;
// generation 0 has the plain names) and switches every reader to them by one write of the
// state row, which names the live generation. Tables of other generations are dropped once
// no cursor holds them.
#include <wiredtiger.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cluster/model/bytes.hpp"
#include "cluster/model/kv_types.hpp"
#include "cluster/raft/types.hpp"
#include "cluster/storage/mvcc_store.hpp"

namespace keel::storage::wt {

// The journaled tables: the Raft log and its meta rows.
constexpr const char* kTableConfig = "key_format=u,value_format=u";
// The state tables (statemeta, current, index, history, ext of every generation): not
// journaled, durable at checkpoints (see "Journaling" above).
constexpr const char* kStateTableConfig = "key_format=u,value_format=u,log=(enabled=false)";
constexpr const char* kStateMetaTable = "table:statemeta";
// The data directory's layout, in table:meta's "format" row. 1 (no row): every table
// journaled, the state rows in table:meta, values in current and history; 2: the layout
// above.
constexpr uint64_t kFormatVersion = 2;
constexpr const char* kFormatRow = "format";
// statemeta's row holding the Raft snapshot record of the last install (see
// Engine::install_snapshot): encode_raft_snapshot().
constexpr const char* kInstalledRow = "installed";

enum class StateTable : uint8_t { current = 1, index = 2, history = 3, ext = 4 };
inline constexpr StateTable kStateTables[] = {StateTable::current, StateTable::index,
                                              StateTable::history, StateTable::ext};
inline constexpr size_t kStateTableCount = 4;
inline const char* table_base(StateTable t) {
  switch (t) {
    case StateTable::current:
      return "table:current";
    case StateTable::index:
      return "table:index";
    case StateTable::history:
      return "table:history";
    case StateTable::ext:
      return "table:ext";
  }
  return "";
}
inline std::string table_uri(StateTable t, uint64_t generation) {
  std::string uri = table_base(t);
  if (generation != 0) uri += "_g" + std::to_string(generation);
  return uri;
}
// The meta rows that belong to the state machine: a snapshot copies them with the tables.
inline constexpr const char* kStateMetaRows[] = {"state", "members", "compaction"};

inline Error wt_error(const char* what, int ret) {
  return make_error(ErrorCode::internal,
                    std::string("wiredtiger: ") + what + ": " + wiredtiger_strerror(ret));
}

// ---- byte helpers (cluster/model/bytes.hpp) ----

using bytes::get_be32;
using bytes::get_be64;
using bytes::get_varint;
using bytes::put_be32;
using bytes::put_be64;
using bytes::put_varint;

// A configuration: varint(#voters) varint(id)... varint(#learners) varint(id)...
inline void put_conf(std::string& out, const raft::ConfState& conf) {
  put_varint(out, conf.voters.size());
  for (uint64_t id : conf.voters)
    put_varint(out, id);
  put_varint(out, conf.learners.size());
  for (uint64_t id : conf.learners)
    put_varint(out, id);
}
inline bool get_conf(std::string_view* in, raft::ConfState* conf) {
  for (auto* ids : {&conf->voters, &conf->learners}) {
    uint64_t n = 0;
    if (!get_varint(in, &n) || n > in->size()) return false;
    ids->clear();
    for (uint64_t i = 0; i < n; i++) {
      uint64_t id = 0;
      if (!get_varint(in, &id) || (!ids->empty() && id <= ids->back())) return false;
      ids->push_back(id);
    }
  }
  return true;
}

// A Raft snapshot record: varint(index) varint(term) conf varint(len) data.
inline std::string encode_raft_snapshot(const raft::Snapshot& s) {
  std::string v;
  put_varint(v, s.meta.index);
  put_varint(v, s.meta.term);
  put_conf(v, s.meta.conf);
  put_varint(v, s.data.size());
  v.append(s.data);
  return v;
}
inline bool decode_raft_snapshot(std::string_view v, raft::Snapshot* s) {
  uint64_t n = 0;
  if (!get_varint(&v, &s->meta.index) || !get_varint(&v, &s->meta.term) ||
      !get_conf(&v, &s->meta.conf) || !get_varint(&v, &n) || n != v.size()) {
    return false;
  }
  s->data.assign(v.data(), v.size());
  return true;
}

inline std::string history_key(int64_t revision, uint32_t sub) {
  std::string k;
  k.reserve(12);
  put_be64(k, static_cast<uint64_t>(revision));
  put_be32(k, sub);
  return k;
}

// Index keys: the user key with 0x00 escaped as 0x00 0xff and terminated by 0x00 0x01,
// then be64(revision). The escaping makes byte order of the encoding follow (key, revision)
// order, which WiredTiger's packed formats do not for a `u` that is not the last column.
inline void put_escaped(std::string& out, std::string_view key) {
  for (char c : key) {
    out.push_back(c);
    if (c == '\0') out.push_back('\xff');
  }
  out.push_back('\0');
  out.push_back('\x01');
}
inline std::string index_key(std::string_view key, int64_t revision) {
  std::string k;
  k.reserve(key.size() + 10);
  put_escaped(k, key);
  put_be64(k, static_cast<uint64_t>(revision));
  return k;
}
// Length of the escaped-key prefix (terminator included) of an index key; 0 if malformed.
inline size_t escaped_prefix_len(std::string_view ik) {
  for (size_t i = 0; i + 1 < ik.size(); i++) {
    if (ik[i] == '\0') {
      if (ik[i + 1] == '\x01') return i + 2;
      i++;  // skip the 0xff of an escaped zero
    }
  }
  return 0;
}
inline std::string unescape_key(std::string_view prefix) {
  std::string key;
  size_t n = prefix.size() >= 2 ? prefix.size() - 2 : 0;  // drop the terminator
  key.reserve(n);
  for (size_t i = 0; i < n; i++) {
    key.push_back(prefix[i]);
    if (prefix[i] == '\0') i++;
  }
  return key;
}

// ---- records ----

// One version of a key: a history row, or (without key) the live row in `current`.
struct Record {
  EventType type = EventType::put;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
  uint32_t sub = 0;           // sub-revision of this version within mod_revision's txn
  int64_t prev_revision = 0;  // (prev_revision, prev_sub): the previous version, if any
  uint32_t prev_sub = 0;
  std::string key;
  std::string value;
};

inline std::string encode_record(const Record& r, bool with_key) {
  std::string out;
  out.reserve(16 + (with_key ? r.key.size() : 0) + r.value.size());
  out.push_back(static_cast<char>(r.type));
  put_varint(out, static_cast<uint64_t>(r.create_revision));
  put_varint(out, static_cast<uint64_t>(r.mod_revision));
  put_varint(out, static_cast<uint64_t>(r.version));
  put_varint(out, static_cast<uint64_t>(r.lease));
  put_varint(out, r.sub);
  put_varint(out, static_cast<uint64_t>(r.prev_revision));
  put_varint(out, r.prev_sub);
  if (with_key) {
    put_varint(out, r.key.size());
    out.append(r.key);
  } else {
    put_varint(out, 0);
  }
  out.append(r.value);
  return out;
}

inline bool decode_record(std::string_view in, Record* r, bool want_value = true) {
  if (in.empty() || static_cast<uint8_t>(in[0]) > 1) return false;
  r->type = static_cast<EventType>(in[0]);
  in.remove_prefix(1);
  uint64_t v[8];
  for (auto& x : v) {
    if (!get_varint(&in, &x)) return false;
  }
  r->create_revision = static_cast<int64_t>(v[0]);
  r->mod_revision = static_cast<int64_t>(v[1]);
  r->version = static_cast<int64_t>(v[2]);
  r->lease = static_cast<int64_t>(v[3]);
  r->sub = static_cast<uint32_t>(v[4]);
  r->prev_revision = static_cast<int64_t>(v[5]);
  r->prev_sub = static_cast<uint32_t>(v[6]);
  if (v[7] > in.size()) return false;
  r->key.assign(in.data(), v[7]);
  in.remove_prefix(v[7]);
  if (want_value) {
    r->value.assign(in.data(), in.size());
  } else {
    r->value.clear();
  }
  return true;
}

inline KeyValue record_kv(Record&& r) {
  KeyValue kv;
  kv.key = std::move(r.key);
  kv.value = std::move(r.value);
  kv.create_revision = r.create_revision;
  kv.mod_revision = r.mod_revision;
  kv.version = r.version;
  kv.lease = r.lease;
  return kv;
}

// The "state" row of meta: what apply() changes atomically with the data. The applied
// configuration was added later: a row without it decodes with an empty one.
// Then tagged fields: generation ('g' varint; absent = 0) and cluster time ('t' varint).
struct State {
  int64_t revision = 1;
  int64_t compact_revision = 0;
  uint64_t applied_index = 0;
  raft::ConfState conf;     // the raft configuration as of applied_index
  uint64_t generation = 0;  // of the state machine's tables (see "Generations" above)
  uint64_t cluster_ms = 0;  // cluster time as of applied_index (leader-stamped, in the log)
};
inline std::string encode_state(const State& s) {
  std::string out;
  put_varint(out, static_cast<uint64_t>(s.revision));
  put_varint(out, static_cast<uint64_t>(s.compact_revision));
  put_varint(out, s.applied_index);
  put_conf(out, s.conf);
  if (s.generation != 0) {
    out.push_back('g');
    put_varint(out, s.generation);
  }
  if (s.cluster_ms != 0) {
    out.push_back('t');
    put_varint(out, s.cluster_ms);
  }
  return out;
}
inline bool decode_state(std::string_view in, State* s) {
  uint64_t a, b, c;
  if (!get_varint(&in, &a) || !get_varint(&in, &b) || !get_varint(&in, &c)) return false;
  s->revision = static_cast<int64_t>(a);
  s->compact_revision = static_cast<int64_t>(b);
  s->applied_index = c;
  s->conf = raft::ConfState{};
  s->generation = 0;
  if (!in.empty() && !get_conf(&in, &s->conf)) return false;
  s->cluster_ms = 0;
  // Tagged fields added later, each at most once, in this order.
  if (!in.empty() && in.front() == 'g') {
    in.remove_prefix(1);
    if (!get_varint(&in, &s->generation)) return false;
  }
  if (!in.empty() && in.front() == 't') {
    in.remove_prefix(1);
    if (!get_varint(&in, &s->cluster_ms)) return false;
  }
  return in.empty();
}

// ---- cursors ----

inline void set_key(WT_CURSOR* c, std::string_view k) {
  WT_ITEM item{};
  item.data = k.data();
  item.size = k.size();
  c->set_key(c, &item);
}
inline void set_value(WT_CURSOR* c, std::string_view v) {
  WT_ITEM item{};
  item.data = v.data();
  item.size = v.size();
  c->set_value(c, &item);
}
// Views into WiredTiger memory: valid until the cursor's next operation or reset.
inline std::string_view key_view(WT_CURSOR* c) {
  WT_ITEM item{};
  int ret = c->get_key(c, &item);
  KEEL_ASSERT(ret == 0, "WT_CURSOR::get_key on a positioned cursor");
  return {static_cast<const char*>(item.data), item.size};
}
inline std::string_view value_view(WT_CURSOR* c) {
  WT_ITEM item{};
  int ret = c->get_value(c, &item);
  KEEL_ASSERT(ret == 0, "WT_CURSOR::get_value on a positioned cursor");
  return {static_cast<const char*>(item.data), item.size};
}
// Positions c on the first key >= k. Returns 0, WT_NOTFOUND (no such key) or an error.
inline int seek_ge(WT_CURSOR* c, std::string_view k) {
  set_key(c, k);
  int exact = 0;
  int ret = c->search_near(c, &exact);
  if (ret == 0 && exact < 0) ret = c->next(c);
  return ret;
}
inline int put_row(WT_CURSOR* c, std::string_view k, std::string_view v) {
  set_key(c, k);
  set_value(c, v);
  return c->insert(c);
}
inline int remove_row(WT_CURSOR* c, std::string_view k) {
  set_key(c, k);
  int ret = c->remove(c);
  return ret == WT_NOTFOUND ? 0 : ret;
}

// One WiredTiger session (isolation=snapshot) with its cursors on one generation of the
// state tables, opened once and reused: opening cursors per call is slow. Used by one
// thread at a time.
struct Session {
  uint64_t generation = 0;
  WT_SESSION* session = nullptr;
  WT_CURSOR* meta = nullptr;
  WT_CURSOR* current = nullptr;
  WT_CURSOR* current_aux = nullptr;  // lookups/removals while `current` iterates
  WT_CURSOR* index = nullptr;
  WT_CURSOR* index_aux = nullptr;
  WT_CURSOR* history = nullptr;
  WT_CURSOR* history_aux = nullptr;  // prev_kv lookups while `history` iterates
  WT_CURSOR* ext = nullptr;          // the StateExtension's rows

  Status open(WT_CONNECTION* conn, uint64_t generation);
  void close();
  ~Session() { close(); }
};

// ---- reads shared by Reader and by txns inside apply() ----

// Visits the rows of c with from <= key < to (from empty = from the first row, to empty = no
// bound) in key order until visit returns false; resets c. Returns 0 or a WiredTiger error.
inline int scan_rows(WT_CURSOR* c, std::string_view from, std::string_view to,
                     const std::function<bool(std::string_view, std::string_view)>& visit) {
  int ret = from.empty() ? c->next(c) : seek_ge(c, from);  // WiredTiger has no empty keys
  while (ret == 0) {
    std::string_view k = key_view(c);
    if (!to.empty() && k >= to) break;
    if (!visit(k, value_view(c))) break;
    ret = c->next(c);
  }
  c->reset(c);
  return ret == WT_NOTFOUND ? 0 : ret;
}

// Where a read runs. current_table_revision: the revision the `current` table shows (inside
// a txn that already wrote, the txn's own revision). max_revision: the newest revision a
// read may ask for explicitly.
struct ReadView {
  int64_t current_table_revision = 1;
  int64_t max_revision = 1;
  int64_t compact_revision = 0;
};

Result<RangeResponse> do_range(Session& s, const ReadView& view, const RangeRequest& request,
                               size_t max_response_bytes, bool skip_count);

// Visits the live keys of [start, end) (etcd range rules) in `current` through s.current;
// visit may write through the other cursors of s. Returns 0 or a WiredTiger error.
int for_each_current(Session& s, std::string_view start, std::string_view end,
                     const std::function<bool(Record&&)>& visit);

// The MVCC store on `conn` (tables already created).
Result<std::unique_ptr<MvccStore>> make_store(WT_CONNECTION* conn, const EngineOptions& options,
                                              std::atomic<uint64_t>* applied_batches);

// A Reader on its own session of `conn`, first on `generation` (it follows the state row).
Result<std::unique_ptr<Reader>> make_reader(WT_CONNECTION* conn, uint64_t generation);

// ---- snapshots (snapshot.cpp) ----

// Chunk rows: u8 tag, varint key length, key, varint value length, value. Tag 0 is a meta
// row (kStateMetaRows), the others a StateTable.
inline constexpr uint8_t kMetaTag = 0;

// The storage side of a sink: what MvccStore::install needs.
class StagedSnapshot : public SnapshotSink {
 public:
  virtual uint64_t generation() const = 0;
  virtual bool finished() const = 0;
  // After finish(): the state row (generation set), members and compaction rows to write.
  virtual MetaRows install_rows() const = 0;
  virtual const State& state() const = 0;
  // Install committed: closes the sink's session and keeps its tables (they are live now).
  virtual void installed() = 0;
};
Result<std::unique_ptr<StagedSnapshot>> make_snapshot_sink(WT_CONNECTION* conn,
                                                           uint64_t generation);
Result<std::unique_ptr<SnapshotSource>> make_snapshot_source(WT_CONNECTION* conn);

// The "compaction" meta row: varint(target) varint(done) resume key. False if malformed.
struct CompactionRow {
  int64_t target = 0;
  int64_t done = 0;
  std::string resume;
};
inline bool decode_compaction(std::string_view v, CompactionRow* out) {
  uint64_t t = 0, d = 0;
  if (!get_varint(&v, &t) || !get_varint(&v, &d)) return false;
  out->target = static_cast<int64_t>(t);
  out->done = static_cast<int64_t>(d);
  out->resume.assign(v.data(), v.size());
  return true;
}

// Creates the state tables of `generation` if missing (not journaled: kStateTableConfig).
// Returns 0 or a WiredTiger error.
int create_state_tables(WT_SESSION* session, uint64_t generation);
// Drops the state tables of every generation but `live` that no cursor holds (the rest stay
// for a later call). Returns how many generations are left to drop.
size_t drop_other_generations(WT_CONNECTION* conn, uint64_t live);
// Deletes files of state tables of other generations than `live` in `dir` that WiredTiger
// does not know (a crash after a sink created its files but before the creation was
// durable). Only right after drop_other_generations(live) returned 0, before any sink.
void remove_orphan_files(const std::string& dir, uint64_t live);

// Reads the live record of `key` from `current`; false if the key does not exist.
Result<bool> read_current(Session& s, std::string_view key, Record* out);

}  // namespace keel::storage::wt
