// Reads: Range at the current revision (the `current` table) or at an older one (`index` +
// `history`), and the event stream for watches (`history`).
#include <algorithm>

#include "cluster/storage/wt_internal.hpp"

namespace keel::storage::wt {
namespace {

// Bytes a returned pair counts against the page size: key, value and a fixed overhead for
// the revisions and the framing of the reply.
constexpr size_t kKvOverheadBytes = 32;

size_t kv_bytes(const KeyValue& kv) {
  return kv.key.size() + kv.value.size() + kKvOverheadBytes;
}

// etcd's range rules: empty end = the single key, "\0" = every key >= start.
struct Bounds {
  std::string_view start;
  std::string_view end;
  bool single() const { return end.empty(); }
  bool unbounded() const { return end.size() == 1 && end[0] == '\0'; }
  // For a key >= start: is it past the range?
  bool past(std::string_view key) const {
    if (single()) return key != start;
    if (unbounded()) return false;
    return key >= end;
  }
};

// A current row holds no value (each value is stored once, in its history row): fills
// r->value from the history row (r->mod_revision, r->sub) the current row points at, which
// compaction never deletes (it keeps the newest version of every live key).
void load_value(Session& s, Record* r) {
  set_key(s.history_aux, history_key(r->mod_revision, r->sub));
  int ret = s.history_aux->search(s.history_aux);
  KEEL_ASSERT(ret == 0, "a current row without its history row");
  Record h;
  KEEL_ASSERT(decode_record(value_view(s.history_aux), &h), "corrupt row in history");
  r->value = std::move(h.value);
  s.history_aux->reset(s.history_aux);
}

// Visits live keys at the current revision in key order: visit(key, load) where load()
// returns the KeyValue. Stops when visit returns false. Returns 0 or a WiredTiger error.
template <typename Visit>
int scan_current(Session& s, const Bounds& b, Visit&& visit) {
  WT_CURSOR* c = s.current;
  int ret;
  if (b.single()) {
    set_key(c, b.start);
    ret = c->search(c);
  } else {
    ret = seek_ge(c, b.start);
  }
  while (ret == 0) {
    std::string_view key = key_view(c);
    if (b.past(key)) break;
    auto load = [&]() {
      Record r;
      KEEL_ASSERT(decode_record(value_view(c), &r, false), "corrupt row in table current");
      load_value(s, &r);
      r.key.assign(key.data(), key.size());
      return record_kv(std::move(r));
    };
    if (!visit(key, load)) break;
    if (b.single()) break;
    ret = c->next(c);
  }
  c->reset(c);
  return ret == WT_NOTFOUND ? 0 : ret;
}

// Visits the keys that are live at `revision` (older than the current one) in key order,
// from the per-key versions in `index`.
template <typename Visit>
int scan_index(Session& s, const Bounds& b, int64_t revision, Visit&& visit) {
  WT_CURSOR* c = s.index;
  std::string start_prefix;
  put_escaped(start_prefix, b.start);
  std::string group;  // escaped prefix of the key being looked at
  std::string group_key;
  bool have_group = false, candidate = false, tombstone = false;
  int64_t cand_rev = 0;
  uint32_t cand_sub = 0;
  bool stopped = false;

  auto emit = [&]() -> bool {
    if (!have_group || !candidate || tombstone) return true;
    auto load = [&]() {
      std::string hk = history_key(cand_rev, cand_sub);
      set_key(s.history_aux, hk);
      int r = s.history_aux->search(s.history_aux);
      KEEL_ASSERT(r == 0, "index row without its history row");
      Record rec;
      KEEL_ASSERT(decode_record(value_view(s.history_aux), &rec), "corrupt row in history");
      s.history_aux->reset(s.history_aux);
      return record_kv(std::move(rec));
    };
    return visit(std::string_view(group_key), load);
  };

  int ret = seek_ge(c, start_prefix);
  while (ret == 0) {
    std::string_view ik = key_view(c);
    size_t plen = escaped_prefix_len(ik);
    KEEL_ASSERT(plen > 0 && ik.size() == plen + 8, "corrupt key in table index");
    std::string_view prefix = ik.substr(0, plen);
    if (!have_group || prefix != group) {
      if (!emit()) {
        stopped = true;
        break;
      }
      group.assign(prefix.data(), prefix.size());
      group_key = unescape_key(prefix);
      if (b.past(group_key)) {
        have_group = false;
        break;
      }
      have_group = true;
      candidate = false;
    }
    auto rev = static_cast<int64_t>(get_be64(ik.data() + plen));
    if (rev > revision) {
      // The key's remaining versions are newer than the read: jump to the next key. Every
      // index key of another user key sorts after group + 0xff * 8 (the terminator 00 01
      // cannot occur inside an escaped key).
      ret = seek_ge(c, group + std::string(8, '\xff'));
      continue;
    }
    std::string_view v = value_view(c);
    KEEL_ASSERT(v.size() == 5, "corrupt value in table index");
    candidate = true;
    cand_rev = rev;
    cand_sub = get_be32(v.data());
    tombstone = v[4] != 0;
    ret = c->next(c);
  }
  if (ret != 0 && ret != WT_NOTFOUND) {
    c->reset(c);
    return ret;
  }
  if (!stopped) emit();
  c->reset(c);
  return 0;
}

bool passes_filters(const RangeRequest& r, const KeyValue& kv) {
  if (r.min_mod_revision > 0 && kv.mod_revision < r.min_mod_revision) return false;
  if (r.max_mod_revision > 0 && kv.mod_revision > r.max_mod_revision) return false;
  if (r.min_create_revision > 0 && kv.create_revision < r.min_create_revision) return false;
  if (r.max_create_revision > 0 && kv.create_revision > r.max_create_revision) return false;
  return true;
}

// Builds a RangeResponse from keys offered in key order, within max_bytes of memory.
class Collector {
 public:
  Collector(const RangeRequest& r, size_t max_bytes, bool skip_count)
      : r_(r), max_bytes_(max_bytes), skip_count_(skip_count) {
    order_ = r.sort_order;
    // etcd: a sort target other than the key with no order means ascending.
    if (order_ == SortOrder::none && r.sort_target != SortTarget::key) order_ = SortOrder::ascend;
    key_ordered_ = r.sort_target == SortTarget::key && order_ != SortOrder::descend;
  }

  // Returns false when the scan can stop.
  template <typename Load>
  bool offer(std::string_view, Load& load) {
    count_++;
    if (r_.count_only) return true;
    if (key_ordered_) {
      if (more_) return !skip_count_;
      KeyValue kv = load();
      if (!passes_filters(r_, kv)) return true;
      if (r_.keys_only) kv.value.clear();
      if (r_.limit > 0 && kvs_.size() == static_cast<size_t>(r_.limit)) {
        more_ = true;
        return !skip_count_;
      }
      size_t size = kv_bytes(kv);
      if (!kvs_.empty() && bytes_ + size > max_bytes_) {
        more_ = true;
        continue_key_ = kv.key;
        return !skip_count_;
      }
      bytes_ += size;
      kvs_.push_back(std::move(kv));
      return true;
    }
    KeyValue kv = load();
    if (!passes_filters(r_, kv)) return true;
    if (r_.keys_only) kv.value.clear();
    matched_++;
    auto before = [this](const KeyValue& a, const KeyValue& b) { return comes_before(a, b); };
    if (r_.limit > 0 && kvs_.size() == static_cast<size_t>(r_.limit)) {
      // A heap whose front is the pair that would come last: replace it if kv comes before.
      if (!before(kv, kvs_.front())) return true;
      std::pop_heap(kvs_.begin(), kvs_.end(), before);
      bytes_ -= kv_bytes(kvs_.back());
      kvs_.back() = std::move(kv);
      bytes_ += kv_bytes(kvs_.back());
      std::push_heap(kvs_.begin(), kvs_.end(), before);
    } else {
      bytes_ += kv_bytes(kv);
      kvs_.push_back(std::move(kv));
      if (r_.limit > 0) std::push_heap(kvs_.begin(), kvs_.end(), before);
    }
    if (bytes_ > max_bytes_) {
      too_large_ = true;
      return false;
    }
    return true;
  }

  Result<RangeResponse> finish(int64_t revision) {
    if (too_large_) {
      return make_error(ErrorCode::invalid_argument,
                        "result larger than " + std::to_string(max_bytes_) +
                            " bytes; use a limit (only key-ordered results are paged)");
    }
    RangeResponse resp;
    resp.revision = revision;
    resp.count = skip_count_ ? 0 : count_;
    if (!key_ordered_) {
      std::sort(kvs_.begin(), kvs_.end(),
                [this](const KeyValue& a, const KeyValue& b) { return comes_before(a, b); });
      more_ = matched_ > static_cast<int64_t>(kvs_.size());
    }
    resp.more = more_;
    resp.kvs = std::move(kvs_);
    resp.continue_key = std::move(continue_key_);
    return resp;
  }

 private:
  // Output order: by the sort target (ties by key ascending).
  bool comes_before(const KeyValue& a, const KeyValue& b) const {
    int c = 0;
    auto cmp = [](auto x, auto y) { return x < y ? -1 : (y < x ? 1 : 0); };
    switch (r_.sort_target) {
      case SortTarget::key:
        c = 0;
        break;
      case SortTarget::version:
        c = cmp(a.version, b.version);
        break;
      case SortTarget::create:
        c = cmp(a.create_revision, b.create_revision);
        break;
      case SortTarget::mod:
        c = cmp(a.mod_revision, b.mod_revision);
        break;
      case SortTarget::value:
        c = a.value.compare(b.value);
        break;
    }
    if (order_ == SortOrder::descend) c = -c;
    if (c != 0) return c < 0;
    int k = a.key.compare(b.key);
    if (r_.sort_target == SortTarget::key && order_ == SortOrder::descend) k = -k;
    return k < 0;
  }

  const RangeRequest& r_;
  size_t max_bytes_;
  bool skip_count_;
  SortOrder order_;
  bool key_ordered_;
  int64_t count_ = 0;
  int64_t matched_ = 0;
  size_t bytes_ = 0;
  bool more_ = false;
  bool too_large_ = false;
  std::vector<KeyValue> kvs_;
  std::string continue_key_;
};

Error compacted_error(int64_t revision, int64_t compact_revision) {
  Error e = make_error(ErrorCode::compacted,
                       "revision " + std::to_string(revision) +
                           " has been compacted; the oldest available revision is " +
                           std::to_string(compact_revision));
  e.compact_revision = compact_revision;
  return e;
}

}  // namespace

Result<bool> read_current(Session& s, std::string_view key, Record* out) {
  WT_CURSOR* c = s.current_aux;
  set_key(c, key);
  int ret = c->search(c);
  if (ret == WT_NOTFOUND) return false;
  if (ret != 0) return wt_error("search current", ret);
  KEEL_ASSERT(decode_record(value_view(c), out, false), "corrupt row in table current");
  c->reset(c);
  load_value(s, out);
  out->key.assign(key.data(), key.size());
  return true;
}

int for_each_current(Session& s, std::string_view start, std::string_view end,
                     const std::function<bool(Record&&)>& visit) {
  return scan_current(s, Bounds{start, end}, [&](std::string_view key, auto&) {
    Record r;
    KEEL_ASSERT(decode_record(value_view(s.current), &r, false), "corrupt row in table current");
    load_value(s, &r);
    r.key.assign(key.data(), key.size());
    return visit(std::move(r));
  });
}

Result<RangeResponse> do_range(Session& s, const ReadView& view, const RangeRequest& request,
                               size_t max_response_bytes, bool skip_count) {
  int64_t revision = request.revision == 0 ? view.current_table_revision : request.revision;
  if (revision > view.max_revision && revision != view.current_table_revision) {
    Error e =
        make_error(ErrorCode::future_revision, "revision " + std::to_string(revision) +
                                                   " is in the future; the current revision is " +
                                                   std::to_string(view.max_revision));
    e.current_revision = view.max_revision;
    return e;
  }
  if (revision < view.compact_revision) return compacted_error(revision, view.compact_revision);

  Collector collector(request, max_response_bytes, skip_count);
  Bounds bounds{request.key, request.range_end};
  auto visit = [&](std::string_view key, auto& load) { return collector.offer(key, load); };
  int ret = revision == view.current_table_revision ? scan_current(s, bounds, visit)
                                                    : scan_index(s, bounds, revision, visit);
  if (ret != 0) return wt_error("range scan", ret);
  return collector.finish(revision);
}

namespace {

class ReaderImpl : public Reader {
 public:
  Status open(WT_CONNECTION* conn, uint64_t generation) {
    conn_ = conn;
    return s_.open(conn, generation);
  }

  Result<RangeResponse> range(const RangeRequest& request, size_t max_response_bytes,
                              bool skip_count) override {
    auto st = begin();
    if (!st) return std::move(st).error();
    ReadView view{st->revision, st->revision, st->compact_revision};
    auto r = do_range(s_, view, request, max_response_bytes, skip_count);
    end();
    return r;
  }

  Result<int64_t> events(int64_t from_revision, int64_t to_revision, const std::string& key,
                         const std::string& range_end, bool prev_kv, size_t max_bytes,
                         const std::function<bool(const Event&)>& visit) override {
    auto st = begin();
    if (!st) return std::move(st).error();
    auto r = scan_events(*st, from_revision, to_revision, Bounds{key, range_end}, prev_kv,
                         max_bytes, visit);
    end();
    return r;
  }

  Result<uint64_t> ext_scan(
      std::string_view from, std::string_view to,
      const std::function<bool(std::string_view, std::string_view)>& visit) override {
    auto st = begin();
    if (!st) return std::move(st).error();
    int ret = scan_rows(s_.ext, from, to, visit);
    end();
    if (ret != 0) return wt_error("read table ext", ret);
    return st->cluster_ms;
  }

 private:
  // Begins a read transaction on the live generation: if a snapshot install switched
  // generations since the last read, the cursors move to the new tables first.
  Result<State> begin() {
    for (;;) {
      if (s_.session == nullptr) {
        return make_error(ErrorCode::internal,
                          "reader session lost while following a snapshot install");
      }
      int ret = s_.session->begin_transaction(s_.session, nullptr);
      if (ret != 0) return wt_error("begin_transaction", ret);
      set_key(s_.meta, "state");
      ret = s_.meta->search(s_.meta);
      if (ret != 0) {
        end();
        return wt_error("read meta state", ret);
      }
      State st;
      KEEL_ASSERT(decode_state(value_view(s_.meta), &st), "corrupt meta state");
      s_.meta->reset(s_.meta);
      if (st.generation == s_.generation) return st;
      end();
      s_.close();
      if (auto o = s_.open(conn_, st.generation); !o) return std::move(o).error();
    }
  }
  void end() { s_.session->rollback_transaction(s_.session, nullptr); }

  Result<int64_t> scan_events(const State& st, int64_t from, int64_t to, const Bounds& b,
                              bool prev_kv, size_t max_bytes,
                              const std::function<bool(const Event&)>& visit) {
    // From the compact revision itself is served (etcd's rule: clients resume from
    // compact_revision): its surviving events are the newest versions at or below it.
    if (st.compact_revision > 0 && from < st.compact_revision) {
      return compacted_error(from, st.compact_revision);
    }
    if (from < 1) from = 1;
    if (to == 0 || to > st.revision) to = st.revision;
    if (from > to) return from - 1;
    auto in_range = [&](std::string_view k) { return k >= b.start && !b.past(k); };

    WT_CURSOR* c = s_.history;
    int64_t rev_in_progress = from - 1;  // the revision whose events are being visited
    size_t bytes = 0;
    bool visited_any = false;
    int ret = seek_ge(c, history_key(from, 0));
    while (ret == 0) {
      std::string_view hk = key_view(c);
      KEEL_ASSERT(hk.size() == 12, "corrupt key in table history");
      auto rev = static_cast<int64_t>(get_be64(hk.data()));
      if (rev > to) break;
      if (rev != rev_in_progress) {
        // rev_in_progress is complete.
        if (visited_any && bytes >= max_bytes) {
          c->reset(c);
          return rev_in_progress;
        }
        rev_in_progress = rev;
      }
      Record rec;
      KEEL_ASSERT(decode_record(value_view(c), &rec), "corrupt row in history");
      if (in_range(rec.key)) {
        Event ev;
        ev.type = rec.type;
        if (prev_kv && rec.prev_revision > 0) {
          set_key(s_.history_aux, history_key(rec.prev_revision, rec.prev_sub));
          int r = s_.history_aux->search(s_.history_aux);
          if (r == 0) {
            Record prev;
            KEEL_ASSERT(decode_record(value_view(s_.history_aux), &prev), "corrupt history");
            if (prev.type == EventType::put) ev.prev_kv = record_kv(std::move(prev));
          } else if (r != WT_NOTFOUND) {
            c->reset(c);
            return wt_error("read history", r);
          }
          s_.history_aux->reset(s_.history_aux);
        }
        bytes += rec.key.size() + rec.value.size();
        ev.kv = record_kv(std::move(rec));
        visited_any = true;
        if (!visit(ev)) {
          // Stopped inside rev: it counts as visited only if no matching event remains.
          int64_t done = rev;
          while ((ret = c->next(c)) == 0) {
            std::string_view k2 = key_view(c);
            if (static_cast<int64_t>(get_be64(k2.data())) != rev) break;
            Record r2;
            KEEL_ASSERT(decode_record(value_view(c), &r2, false), "corrupt row in history");
            if (in_range(r2.key)) {
              done = rev - 1;
              break;
            }
          }
          c->reset(c);
          if (ret != 0 && ret != WT_NOTFOUND) return wt_error("scan history", ret);
          return done;
        }
      }
      ret = c->next(c);
    }
    c->reset(c);
    if (ret != 0 && ret != WT_NOTFOUND) return wt_error("scan history", ret);
    return to;
  }

  WT_CONNECTION* conn_ = nullptr;
  Session s_;
};

}  // namespace

Result<std::unique_ptr<Reader>> make_reader(WT_CONNECTION* conn, uint64_t generation) {
  auto r = std::make_unique<ReaderImpl>();
  auto st = r->open(conn, generation);
  if (!st) return std::move(st).error();
  return std::unique_ptr<Reader>(std::move(r));
}

}  // namespace keel::storage::wt
