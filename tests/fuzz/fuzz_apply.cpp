// Fuzz target for the apply path: input bytes -> commands -> validate -> encode_command ->
// decode_command -> MvccStore::apply on a scratch WiredTiger store, checked against an
// in-memory reference model (std::map of key -> KeyValue, one snapshot per revision).
//
// The store is opened once per process (temporary directory, 16 MiB cache, tiny compaction
// chunks so that physical compaction resumes often). Each input starts from an empty state:
// everything is deleted and compacted away first, so the input alone decides what happens
// (revision numbers in the generated commands are relative to that starting revision).
//
// Input layout, read byte by byte (an exhausted input reads as zeros and ends the run):
//   byte 0    bit 0: tiny limits (16-byte keys, 32-byte values, 4 ops, 256-byte requests)
//   then steps, each: a control byte
//             bits 0-3  what to generate: put (0-5), delete_range (6-8), txn (9-13),
//                       compact (14), or (15) a length byte and that many raw bytes for
//                       decode_command
//             bit 4     the command's log index is 0 (allowed; does not move applied_index)
//             bits 5-7  < 3: the batch ends after this command (at most 8 per batch)
//             followed by the command's own bytes; keys come from a small key space.
//   After each batch one more byte picks the revision of a generated range checked against
//   the model's history.
//
// Properties checked (a violation prints the input's commands and aborts):
//   - decode_command(encode_command(c)) == c for every valid command; a raw chunk that does
//     not decode fails with invalid_argument;
//   - apply returns one result per command, never ErrorCode::internal, and each result
//     (error code, revisions, prev_kv(s), deleted, succeeded, responses of txn ops) is the
//     model's;
//   - current_revision never decreases and grows by exactly one per successful command that
//     writes (a put, a delete that deletes something, a txn whose branch writes);
//     compact_revision and applied_index follow;
//   - after each batch a range over every key at the current revision, and a generated
//     range at a revision in [compact revision, current], agree with the model;
//   - at the end of the input, after physical compaction has caught up, a range at every
//     revision still available agrees with the model, and so do the watch events
//     (Reader::events) of every revision after the compact revision.
// Not modelled: paging of large ranges (values stay far below the page sizes).
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "cluster/model/kv_types.hpp"
#include "cluster/storage/mvcc_store.hpp"

// Counters the replay driver reports: commands generated, valid (applied), and applied
// without an error.
uint64_t fuzz_apply_generated = 0;
uint64_t fuzz_apply_commands = 0;
uint64_t fuzz_apply_succeeded = 0;

namespace {

using namespace keel::storage;
using keel::Error;
using keel::ErrorCode;
using keel::Result;

// ---- printing, for the report of a violated property ----

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out + "\"";
}
std::string n(int64_t v) {
  return std::to_string(v);
}
std::string str(const KeyValue& kv) {
  return "{" + quote(kv.key) + "=" + quote(kv.value) + " c" + n(kv.create_revision) + " m" +
         n(kv.mod_revision) + " v" + n(kv.version) + " l" + n(kv.lease) + "}";
}
std::string str(const std::vector<KeyValue>& kvs) {
  std::string s = "[";
  for (const auto& kv : kvs)
    s += (s.size() > 1 ? " " : "") + str(kv);
  return s + "]";
}
std::string str(const RangeRequest& r) {
  return "range(" + quote(r.key) + ", " + quote(r.range_end) + ", rev " + n(r.revision) +
         ", limit " + n(r.limit) + ", order " + n(static_cast<int>(r.sort_order)) + ", target " +
         n(static_cast<int>(r.sort_target)) + (r.keys_only ? ", keys_only" : "") +
         (r.count_only ? ", count_only" : "") + ", mod [" + n(r.min_mod_revision) + "," +
         n(r.max_mod_revision) + "], create [" + n(r.min_create_revision) + "," +
         n(r.max_create_revision) + "])";
}
std::string str(const PutRequest& p) {
  return "put(" + quote(p.key) + ", " + quote(p.value) + ", lease " + n(p.lease) +
         (p.prev_kv ? ", prev_kv" : "") + (p.ignore_value ? ", ignore_value" : "") +
         (p.ignore_lease ? ", ignore_lease" : "") + ")";
}
std::string str(const DeleteRangeRequest& d) {
  return "delete_range(" + quote(d.key) + ", " + quote(d.range_end) +
         (d.prev_kv ? ", prev_kv" : "") + ")";
}
std::string str(const RequestOp& op) {
  return std::visit([](const auto& o) { return str(o); }, op);
}
std::string str(const Command& c) {
  if (auto* p = std::get_if<PutRequest>(&c)) return str(*p);
  if (auto* d = std::get_if<DeleteRangeRequest>(&c)) return str(*d);
  if (auto* k = std::get_if<CompactRequest>(&c)) return "compact(" + n(k->revision) + ")";
  const auto& t = std::get<TxnRequest>(c);
  std::string s = "txn(if";
  for (const auto& cmp : t.compare) {
    s += " [" + n(static_cast<int>(cmp.target)) + " " + quote(cmp.key) + ".." +
         quote(cmp.range_end) + " " + n(static_cast<int>(cmp.result)) + " " + n(cmp.number) + "/" +
         quote(cmp.value) + "]";
  }
  s += " then";
  for (const auto& op : t.success)
    s += " " + str(op);
  s += " else";
  for (const auto& op : t.failure)
    s += " " + str(op);
  return s + ")";
}
std::string str(const RangeResponse& r) {
  return "{rev " + n(r.revision) + " count " + n(r.count) + (r.more ? " more" : "") + " " +
         str(r.kvs) + (r.continue_key.empty() ? "" : " continue " + quote(r.continue_key)) + "}";
}
std::string str(const std::optional<KeyValue>& kv) {
  return kv ? str(*kv) : "none";
}
std::string str(const PutResponse& r) {
  return "{rev " + n(r.revision) + " prev " + str(r.prev_kv) + "}";
}
std::string str(const DeleteRangeResponse& r) {
  return "{rev " + n(r.revision) + " deleted " + n(r.deleted) + " prev " + str(r.prev_kvs) + "}";
}
std::string str(const TxnResponse& r) {
  std::string s = "{rev " + n(r.revision) + (r.succeeded ? " succeeded" : " failed");
  for (const auto& op : r.responses)
    s += " " + std::visit([](const auto& o) { return str(o); }, op);
  return s + "}";
}
std::string str(const CompactResponse& r) {
  return "{rev " + n(r.revision) + "}";
}
// The fuzzer generates no primitive commands (tests/unit/primitives covers them).
template <typename R>
std::string str(const R&) {
  return "{primitive}";
}
std::string str(const Error& e) {
  return std::string(keel::error_code_name(e.code)) + " (" + e.message + ", compact_revision " +
         n(e.compact_revision) + ", current_revision " + n(e.current_revision) + ")";
}
std::string str(const Result<CommandResult>& r) {
  if (!r) return "error " + str(r.error());
  return std::visit([](const auto& o) { return str(o); }, r.value());
}
std::string str(const Event& e) {
  return std::string(e.type == EventType::put ? "put " : "del ") + str(e.kv) + " prev " +
         str(e.prev_kv);
}

// The commands of the current input, for the report.
std::vector<std::string> g_log;

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz_apply: commands of this input (applied in batches, '|' ends one):\n");
  for (const auto& line : g_log)
    std::fprintf(stderr, "  %s\n", line.c_str());
  std::fprintf(stderr, "fuzz_apply: property violated: %s\n", what.c_str());
  std::abort();
}

// ---- the reference model ----

using State = std::map<std::string, KeyValue>;

bool in_range(const std::string& k, const std::string& key, const std::string& end) {
  if (end.empty()) return k == key;
  if (end == std::string(1, '\0')) return k >= key;
  return k >= key && k < end;
}

bool passes_filters(const RangeRequest& r, const KeyValue& kv) {
  if (r.min_mod_revision > 0 && kv.mod_revision < r.min_mod_revision) return false;
  if (r.max_mod_revision > 0 && kv.mod_revision > r.max_mod_revision) return false;
  if (r.min_create_revision > 0 && kv.create_revision < r.min_create_revision) return false;
  if (r.max_create_revision > 0 && kv.create_revision > r.max_create_revision) return false;
  return true;
}

// etcd's range semantics as documented in kv_types.hpp: count ignores limit and filters; a
// sort target other than the key with no order means ascending; ties by key ascending.
RangeResponse model_range(const State& s, int64_t revision, const RangeRequest& r) {
  RangeResponse resp;
  resp.revision = revision;
  std::vector<KeyValue> matched;
  for (const auto& [k, kv] : s) {
    if (!in_range(k, r.key, r.range_end)) continue;
    resp.count++;
    if (r.count_only || !passes_filters(r, kv)) continue;
    matched.push_back(kv);
    if (r.keys_only) matched.back().value.clear();
  }
  SortOrder order = r.sort_order;
  if (order == SortOrder::none && r.sort_target != SortTarget::key) order = SortOrder::ascend;
  if (r.sort_target != SortTarget::key || order == SortOrder::descend) {
    auto field = [&](const KeyValue& a, const KeyValue& b) {
      switch (r.sort_target) {
        case SortTarget::version:
          return a.version < b.version ? -1 : a.version > b.version;
        case SortTarget::create:
          return a.create_revision < b.create_revision ? -1 : a.create_revision > b.create_revision;
        case SortTarget::mod:
          return a.mod_revision < b.mod_revision ? -1 : a.mod_revision > b.mod_revision;
        case SortTarget::value: {
          int c = a.value.compare(b.value);
          return c < 0 ? -1 : c > 0;
        }
        case SortTarget::key:
          break;
      }
      return 0;
    };
    std::sort(matched.begin(), matched.end(), [&](const KeyValue& a, const KeyValue& b) {
      int c = field(a, b);
      if (order == SortOrder::descend) c = -c;
      if (c != 0) return c < 0;
      if (r.sort_target == SortTarget::key && order == SortOrder::descend) return a.key > b.key;
      return a.key < b.key;
    });
  }
  size_t keep = matched.size();
  if (r.limit > 0) keep = std::min(keep, static_cast<size_t>(r.limit));
  resp.more = matched.size() > keep;
  resp.kvs.assign(matched.begin(), matched.begin() + static_cast<ptrdiff_t>(keep));
  return resp;
}

bool compare_numbers(CompareResult r, int64_t a, int64_t b) {
  switch (r) {
    case CompareResult::equal:
      return a == b;
    case CompareResult::not_equal:
      return a != b;
    case CompareResult::less:
      return a < b;
    case CompareResult::greater:
      return a > b;
  }
  return false;
}

// A missing key compares as version 0, create 0, mod 0, lease 0; a value compare on a
// missing key is false (kv_types.hpp).
bool holds_one(const Compare& c, const KeyValue* kv) {
  switch (c.target) {
    case CompareTarget::version:
      return compare_numbers(c.result, kv ? kv->version : 0, c.number);
    case CompareTarget::create:
      return compare_numbers(c.result, kv ? kv->create_revision : 0, c.number);
    case CompareTarget::mod:
      return compare_numbers(c.result, kv ? kv->mod_revision : 0, c.number);
    case CompareTarget::lease:
      return compare_numbers(c.result, kv ? kv->lease : 0, c.number);
    case CompareTarget::value: {
      if (!kv) return false;
      int v = kv->value.compare(c.value);
      return compare_numbers(c.result, v < 0 ? -1 : (v > 0 ? 1 : 0), 0);
    }
  }
  return false;
}

// A compare holds for a range when it holds for every key in it (a range with no key: as
// for a missing key).
bool holds(const State& s, const Compare& c) {
  bool any = false;
  for (const auto& [k, kv] : s) {
    if (!in_range(k, c.key, c.range_end)) continue;
    any = true;
    if (!holds_one(c, &kv)) return false;
  }
  return any || holds_one(c, nullptr);
}

Error error_of(ErrorCode code) {
  return keel::make_error(code, "");
}

struct Model {
  int64_t revision = 1;
  int64_t compact = 0;
  uint64_t applied_index = 0;
  State current;
  std::map<int64_t, State> history;              // the state at each revision of this input
  std::map<int64_t, std::vector<Event>> events;  // each revision's events, in write order

  const State& at(int64_t rev) const {
    auto it = history.upper_bound(rev);
    if (it == history.begin()) bug("model: no state at revision " + n(rev));
    return std::prev(it)->second;
  }

  void commit(State next, std::vector<Event> evs) {
    revision++;
    current = std::move(next);
    history[revision] = current;
    events[revision] = std::move(evs);
  }

  Result<PutResponse> put(State& s, const PutRequest& p, int64_t rev, std::vector<Event>* evs) {
    auto it = s.find(p.key);
    const KeyValue* old = it == s.end() ? nullptr : &it->second;
    if (!old && (p.ignore_value || p.ignore_lease)) return error_of(ErrorCode::key_not_found);
    KeyValue kv;
    kv.key = p.key;
    kv.mod_revision = rev;
    kv.create_revision = old ? old->create_revision : rev;
    kv.version = old ? old->version + 1 : 1;
    kv.lease = p.ignore_lease ? old->lease : p.lease;
    kv.value = p.ignore_value ? old->value : p.value;
    PutResponse resp;
    resp.revision = rev;
    Event e;
    e.type = EventType::put;
    e.kv = kv;
    if (old) {
      e.prev_kv = *old;
      if (p.prev_kv) resp.prev_kv = *old;
    }
    evs->push_back(std::move(e));
    s[p.key] = std::move(kv);
    return resp;
  }

  DeleteRangeResponse del(State& s, const DeleteRangeRequest& d, int64_t rev,
                          std::vector<Event>* evs) {
    DeleteRangeResponse resp;
    for (auto it = s.begin(); it != s.end();) {
      if (!in_range(it->first, d.key, d.range_end)) {
        ++it;
        continue;
      }
      resp.deleted++;
      if (d.prev_kv) resp.prev_kvs.push_back(it->second);
      Event e;
      e.type = EventType::del;
      e.kv.key = it->first;
      e.kv.mod_revision = rev;
      e.prev_kv = it->second;
      evs->push_back(std::move(e));
      it = s.erase(it);
    }
    resp.revision = rev;
    return resp;
  }

  Result<CommandResult> apply(const Command& command) {
    std::vector<Event> evs;
    if (auto* p = std::get_if<PutRequest>(&command)) {
      State next = current;
      auto r = put(next, *p, revision + 1, &evs);
      if (!r) return std::move(r).error();
      commit(std::move(next), std::move(evs));
      return CommandResult(std::move(r).value());
    }
    if (auto* d = std::get_if<DeleteRangeRequest>(&command)) {
      State next = current;
      auto r = del(next, *d, revision + 1, &evs);
      if (r.deleted > 0) {
        commit(std::move(next), std::move(evs));
      } else {
        r.revision = revision;
      }
      return CommandResult(std::move(r));
    }
    if (auto* c = std::get_if<CompactRequest>(&command)) {
      if (c->revision <= compact) {
        Error e = error_of(ErrorCode::compacted);
        e.compact_revision = compact;
        return e;
      }
      if (c->revision > revision) {
        Error e = error_of(ErrorCode::future_revision);
        e.current_revision = revision;
        return e;
      }
      compact = c->revision;
      return CommandResult(CompactResponse{revision});
    }
    const auto& txn = std::get<TxnRequest>(command);
    TxnResponse resp;
    resp.succeeded = std::all_of(txn.compare.begin(), txn.compare.end(),
                                 [&](const Compare& c) { return holds(current, c); });
    const auto& ops = resp.succeeded ? txn.success : txn.failure;
    // Errors a txn can give, decided against the state before it: nothing is written then.
    for (const auto& op : ops) {
      if (auto* r = std::get_if<RangeRequest>(&op)) {
        if (r->revision > revision) {
          Error e = error_of(ErrorCode::future_revision);
          e.current_revision = revision;
          return e;
        }
        if (r->revision > 0 && r->revision < compact) {
          Error e = error_of(ErrorCode::compacted);
          e.compact_revision = compact;
          return e;
        }
      } else if (auto* p = std::get_if<PutRequest>(&op)) {
        if ((p->ignore_value || p->ignore_lease) && !current.count(p->key)) {
          return error_of(ErrorCode::key_not_found);
        }
      }
    }
    State next = current;
    const int64_t rev = revision + 1;
    bool wrote = false;
    for (const auto& op : ops) {
      if (auto* r = std::get_if<RangeRequest>(&op)) {
        // Reads see the txn's earlier writes; an explicit revision reads history.
        if (r->revision == 0) {
          resp.responses.emplace_back(model_range(next, wrote ? rev : revision, *r));
        } else {
          resp.responses.emplace_back(model_range(at(r->revision), r->revision, *r));
        }
      } else if (auto* p = std::get_if<PutRequest>(&op)) {
        auto pr = put(next, *p, rev, &evs);
        if (!pr) bug("model: txn put failed after its precondition");
        wrote = true;
        resp.responses.emplace_back(std::move(pr).value());
      } else {
        auto dr = del(next, std::get<DeleteRangeRequest>(op), rev, &evs);
        wrote = wrote || dr.deleted > 0;
        resp.responses.emplace_back(std::move(dr));
      }
    }
    if (wrote) commit(std::move(next), std::move(evs));
    resp.revision = revision;
    for (auto& r : resp.responses) {
      if (auto* p = std::get_if<PutResponse>(&r)) p->revision = revision;
      if (auto* d = std::get_if<DeleteRangeResponse>(&r)) d->revision = revision;
    }
    return CommandResult(std::move(resp));
  }
};

// ---- comparing the store with the model ----

bool same(const RangeResponse& a, const RangeResponse& b) {
  return a.revision == b.revision && a.kvs == b.kvs && a.count == b.count && a.more == b.more &&
         a.continue_key == b.continue_key;
}
bool same(const PutResponse& a, const PutResponse& b) {
  return a.revision == b.revision && a.prev_kv == b.prev_kv;
}
bool same(const DeleteRangeResponse& a, const DeleteRangeResponse& b) {
  return a.revision == b.revision && a.deleted == b.deleted && a.prev_kvs == b.prev_kvs;
}
bool same(const CompactResponse& a, const CompactResponse& b) {
  return a.revision == b.revision;
}
// Not generated by this fuzzer (see str above).
template <typename R>
bool same(const R&, const R&) {
  return true;
}
bool same(const TxnResponse& a, const TxnResponse& b) {
  if (a.revision != b.revision || a.succeeded != b.succeeded) return false;
  if (a.responses.size() != b.responses.size()) return false;
  for (size_t i = 0; i < a.responses.size(); i++) {
    if (a.responses[i].index() != b.responses[i].index()) return false;
    bool eq = std::visit(
        [&](const auto& x) { return same(x, std::get<std::decay_t<decltype(x)>>(b.responses[i])); },
        a.responses[i]);
    if (!eq) return false;
  }
  return true;
}
bool same(const Result<CommandResult>& a, const Result<CommandResult>& b) {
  if (a.ok() != b.ok()) return false;
  if (!a.ok()) {
    const Error &x = a.error(), &y = b.error();
    return x.code == y.code && x.compact_revision == y.compact_revision &&
           x.current_revision == y.current_revision;
  }
  if (a.value().index() != b.value().index()) return false;
  return std::visit(
      [&](const auto& x) { return same(x, std::get<std::decay_t<decltype(x)>>(b.value())); },
      a.value());
}

// ---- the scratch store, one per process ----

struct Scratch {
  std::string dir;
  std::unique_ptr<Engine> engine;
  uint64_t next_index = 1;
};

Scratch& scratch() {
  static Scratch* s = [] {
    auto* sc = new Scratch;
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/keel-fuzz-apply-XXXXXX";
    if (!mkdtemp(tmpl.data())) {
      std::perror("fuzz_apply: mkdtemp");
      std::abort();
    }
    sc->dir = tmpl;
    EngineOptions options;
    options.dir = sc->dir + "/data";
    options.cache_size_mb = 16;
    options.compaction_batch_rows = 3;  // physical compaction stops and resumes often
    auto engine = open_engine(options);
    if (!engine) {
      std::fprintf(stderr, "fuzz_apply: open_engine: %s\n", engine.error().message.c_str());
      std::abort();
    }
    sc->engine = std::move(engine).value();
    // The directory goes at exit; the engine is left open (its threads may still run).
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch().dir, ec);
    });
    return sc;
  }();
  return *s;
}

const std::string kAll(1, '\0');  // with range_end "\0": every key

std::vector<Result<CommandResult>> apply_batch(
    const std::vector<std::pair<uint64_t, const Command*>>& entries) {
  auto results = scratch().engine->store().apply(entries);
  if (results.size() != entries.size()) {
    bug("apply returned " + n(static_cast<int64_t>(results.size())) + " results for " +
        n(static_cast<int64_t>(entries.size())) + " commands");
  }
  return results;
}

// Empties the store (delete everything, compact it away) and points the model at it.
void reset(Model& m) {
  MvccStore& store = scratch().engine->store();
  DeleteRangeRequest all;
  all.key = kAll;
  all.range_end = kAll;
  Command del = all;
  auto r = apply_batch({{scratch().next_index++, &del}});
  if (!r[0]) bug("reset: delete everything: " + str(r[0].error()));
  if (store.compact_revision() < store.current_revision()) {
    Command compact = CompactRequest{store.current_revision()};
    r = apply_batch({{scratch().next_index++, &compact}});
    if (!r[0]) bug("reset: compact: " + str(r[0].error()));
  }
  store.wait_compaction_idle();
  m = Model{};
  m.revision = store.current_revision();
  m.compact = store.compact_revision();
  m.applied_index = store.applied_index();
  m.history[m.revision] = {};
}

void check_range(Reader& reader, const Model& m, const RangeRequest& req, const char* what) {
  int64_t rev = req.revision == 0 ? m.revision : req.revision;
  RangeResponse want = model_range(m.at(rev), rev, req);
  auto got = reader.range(req, 64u << 20);
  if (!got) bug(std::string(what) + ": " + str(req) + " failed: " + str(got.error()));
  if (!same(*got, want)) {
    bug(std::string(what) + ": " + str(req) + "\n  store: " + str(*got) +
        "\n  model: " + str(want));
  }
}

void check_events(Reader& reader, const Model& m) {
  std::vector<Event> got;
  auto r = reader.events(m.compact + 1, 0, kAll, kAll, true, SIZE_MAX, [&](const Event& e) {
    got.push_back(e);
    return true;
  });
  if (!r) bug("events from " + n(m.compact + 1) + " failed: " + str(r.error()));
  std::vector<Event> want;
  for (auto it = m.events.upper_bound(m.compact); it != m.events.end(); ++it)
    want.insert(want.end(), it->second.begin(), it->second.end());
  if (*r != m.revision || got != want) {
    std::string s = "events from revision " + n(m.compact + 1) + ": store (to " + n(*r) + "):";
    for (const auto& e : got)
      s += "\n    " + str(e);
    s += "\n  model (to " + n(m.revision) + "):";
    for (const auto& e : want)
      s += "\n    " + str(e);
    bug(s);
  }
}

// ---- the generator ----

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  unsigned below(unsigned k) { return u8() % k; }
  bool bit() { return u8() & 1; }
  std::string take(size_t k) {
    k = std::min(k, size_ - std::min(pos_, size_));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), k);
    pos_ += k;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class Generator {
 public:
  Generator(Input& in, int64_t base) : in_(in), base_(base) {}

  std::string key() {
    static const char* const keys[] = {"a", "a/1", "a/2", "ab", "b", "b/1", "c", "z"};
    unsigned k = in_.below(20);
    if (k < 16) return keys[k % 8];
    if (k == 16) return "";                    // invalid: empty key
    if (k == 17) return std::string(17, 'k');  // over the tiny key limit
    if (k == 18) return std::string(1, '\xff');
    return std::string("a\0", 2);
  }
  std::string range_end(const std::string& key) {
    switch (in_.below(7)) {
      case 0:
        return kAll;
      case 1:
        return key.empty() ? std::string() : prefix_end(key);
      case 2:
        return this->key();  // may sort before key: invalid
      case 3:
        return key;  // the empty range [key, key)
      default:
        return {};
    }
  }
  std::string value() {
    switch (in_.below(8)) {
      case 0:
        return {};
      case 1:
        return std::string(40, 'x');  // over the tiny value limit
      default:
        return "v" + std::to_string(in_.below(4));
    }
  }
  // A revision near this input's: below, at and above the compact and current revisions.
  int64_t revision() {
    unsigned k = in_.below(16);
    if (k < 2) return 0;
    if (k < 14) return base_ - 1 + in_.below(40);
    if (k == 14) return -1;  // invalid
    return INT64_MAX;
  }
  int64_t small() {
    unsigned k = in_.below(16);
    return k == 15 ? -1 : static_cast<int64_t>(k % 4);
  }

  PutRequest put() {
    PutRequest p;
    uint8_t f = in_.u8();
    p.key = key();
    p.prev_kv = f & 1;
    p.ignore_value = f & 2;
    p.ignore_lease = f & 4;
    if (!p.ignore_value || (f & 8)) p.value = value();
    if (!p.ignore_lease || (f & 16)) p.lease = small();
    return p;
  }
  DeleteRangeRequest del() {
    DeleteRangeRequest d;
    d.prev_kv = in_.bit();
    d.key = key();
    d.range_end = range_end(d.key);
    return d;
  }
  RangeRequest range() {
    RangeRequest r;
    uint8_t f = in_.u8();
    r.key = key();
    r.range_end = range_end(r.key);
    r.revision = revision();
    r.limit = (f & 1) ? small() : 0;
    r.sort_order = static_cast<SortOrder>(in_.below(3));
    r.sort_target = static_cast<SortTarget>(in_.below(5));
    r.keys_only = f & 2;
    r.count_only = (f & 12) == 12;
    if (f & 16) r.min_mod_revision = revision();
    if (f & 32) r.max_mod_revision = revision();
    if (f & 64) r.min_create_revision = revision();
    if (f & 128) r.max_create_revision = revision();
    return r;
  }
  std::vector<RequestOp> ops(unsigned max) {
    std::vector<RequestOp> v(in_.below(max + 1));
    for (auto& op : v) {
      switch (in_.below(3)) {
        case 0:
          op = range();
          break;
        case 1:
          op = put();
          break;
        default:
          op = del();
          break;
      }
    }
    return v;
  }
  TxnRequest txn() {
    TxnRequest t;
    t.compare.resize(in_.below(4));
    for (auto& c : t.compare) {
      c.result = static_cast<CompareResult>(in_.below(4));
      c.target = static_cast<CompareTarget>(in_.below(5));
      c.key = key();
      c.range_end = in_.below(3) == 0 ? range_end(c.key) : std::string();
      switch (c.target) {
        case CompareTarget::create:
        case CompareTarget::mod:
          c.number = revision();
          break;
        case CompareTarget::value:
          c.value = value();
          break;
        default:
          c.number = small();
          break;
      }
    }
    t.success = ops(4);
    t.failure = ops(3);
    return t;
  }

 private:
  Input& in_;
  int64_t base_;
};

void run(const uint8_t* data, size_t size) {
  Input in(data, size);
  Limits limits;
  if (in.u8() & 1) {
    limits.max_key_bytes = 16;
    limits.max_value_bytes = 32;
    limits.max_txn_ops = 4;
    limits.max_request_bytes = 256;
  }
  g_log.clear();
  Model m;
  reset(m);
  const int64_t base = m.revision;
  Generator gen(in, base);
  MvccStore& store = scratch().engine->store();
  auto reader = store.reader();

  std::vector<Command> batch;
  std::vector<bool> zero_index;
  auto run_batch = [&] {
    std::vector<std::pair<uint64_t, const Command*>> entries;
    uint64_t last_index = m.applied_index;
    for (size_t i = 0; i < batch.size(); i++) {
      uint64_t index = zero_index[i] ? 0 : scratch().next_index++;
      if (index) last_index = index;
      entries.emplace_back(index, &batch[i]);
    }
    for (size_t i = 0; i < batch.size(); i++)
      g_log.push_back(str(batch[i]) + (i + 1 == batch.size() ? " |" : ""));
    const int64_t before = store.current_revision();
    auto results = apply_batch(entries);
    fuzz_apply_commands += batch.size();
    for (size_t i = 0; i < batch.size(); i++) {
      auto want = m.apply(batch[i]);
      if (results[i].ok()) fuzz_apply_succeeded++;
      if (!results[i].ok() && results[i].error().code == ErrorCode::internal) {
        bug("command " + n(static_cast<int64_t>(i)) +
            " of the batch: internal error: " + str(results[i].error()));
      }
      if (!same(results[i], want)) {
        bug("command " + n(static_cast<int64_t>(i)) + " of the last batch: " + str(batch[i]) +
            "\n  store: " + str(results[i]) + "\n  model: " + str(want));
      }
    }
    m.applied_index = last_index;
    if (store.current_revision() < before) bug("current_revision went down");
    if (store.current_revision() != m.revision) {
      bug("current_revision " + n(store.current_revision()) + ", model " + n(m.revision));
    }
    if (store.compact_revision() != m.compact) {
      bug("compact_revision " + n(store.compact_revision()) + ", model " + n(m.compact));
    }
    if (store.applied_index() != m.applied_index) {
      bug("applied_index " + std::to_string(store.applied_index()) + ", expected " +
          std::to_string(m.applied_index));
    }
    batch.clear();
    zero_index.clear();

    RangeRequest all;
    all.key = kAll;
    all.range_end = kAll;
    check_range(*reader, m, all, "range at the current revision");
    RangeRequest r = gen.range();
    r.revision =
        m.compact +
        in.below(static_cast<unsigned>(std::min<int64_t>(m.revision - m.compact + 1, 256)));
    if (validate(r, limits)) check_range(*reader, m, r, "range at an older revision");
  };

  while (!in.empty()) {
    uint8_t ctl = in.u8();
    std::optional<Command> command;
    switch (ctl & 15) {
      case 0:
      case 1:
      case 2:
      case 3:
      case 4:
      case 5:
        command = gen.put();
        break;
      case 6:
      case 7:
      case 8:
        command = gen.del();
        break;
      case 14:
        command = CompactRequest{gen.revision()};
        break;
      case 15: {
        std::string raw = in.take(in.u8());
        auto decoded = decode_command(raw);
        if (!decoded) {
          if (decoded.error().code != ErrorCode::invalid_argument) {
            bug("decode_command failed with " + str(decoded.error()));
          }
        } else {
          command = std::move(decoded).value();
        }
        break;
      }
      default:
        command = gen.txn();
        break;
    }
    if (command) fuzz_apply_generated++;
    if (command && validate(*command, limits)) {
      // What the log holds and every replica applies: the decoded encoding.
      auto decoded = decode_command(encode_command(*command));
      if (!decoded) bug("decode_command rejects what encode_command wrote: " + str(*command));
      if (!(*decoded == *command)) bug("decode_command(encode_command(c)) != c: " + str(*command));
      batch.push_back(std::move(decoded).value());
      zero_index.push_back(ctl & 16);
    }
    if (!batch.empty() && (batch.size() >= 8 || (ctl >> 5) < 3 || in.empty())) run_batch();
  }

  // Physical compaction has caught up: what is still available is still right.
  store.wait_compaction_idle();
  for (int64_t rev = m.compact; rev <= m.revision; rev++) {
    RangeRequest all;
    all.key = kAll;
    all.range_end = kAll;
    all.revision = rev;
    check_range(*reader, m, all, "range after compaction");
  }
  check_events(*reader, m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run(data, size);
  return 0;
}
