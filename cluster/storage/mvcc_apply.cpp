// The write side of the MVCC store: apply() of committed commands, and the background
// thread that physically deletes compacted history.
#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "cluster/storage/wt_internal.hpp"

namespace keel::storage::wt {
namespace {

// Structure-only limits: apply() re-checks what its code relies on (one write per key per
// txn branch, ordered ranges, enums in range) without the size limits the node enforces.
Limits structural_limits() {
  Limits l;
  l.max_key_bytes = SIZE_MAX;
  l.max_value_bytes = SIZE_MAX;
  l.max_request_bytes = SIZE_MAX;
  l.max_txn_ops = SIZE_MAX;
  l.max_response_bytes = SIZE_MAX;
  l.max_lock_name_bytes = SIZE_MAX;
  l.max_renew_ids = SIZE_MAX;
  l.max_semaphore_slots = SIZE_MAX;
  l.max_holder_id_bytes = SIZE_MAX;
  return l;
}

std::string index_value(uint32_t sub, bool tombstone) {
  std::string v;
  put_be32(v, sub);
  v.push_back(tombstone ? '\1' : '\0');
  return v;
}

Error future_error(int64_t revision, int64_t current) {
  Error e = make_error(ErrorCode::future_revision,
                       "revision " + std::to_string(revision) +
                           " is in the future; the current revision is " + std::to_string(current));
  e.current_revision = current;
  return e;
}
Error compacted_error(int64_t revision, int64_t compact) {
  Error e = make_error(ErrorCode::compacted,
                       "revision " + std::to_string(revision) +
                           " has been compacted; the oldest available revision is " +
                           std::to_string(compact));
  e.compact_revision = compact;
  return e;
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

// A compare on one key (nullptr = missing: zero numbers, and a value compare is false).
bool compare_holds(const Compare& c, const Record* r) {
  switch (c.target) {
    case CompareTarget::version:
      return compare_numbers(c.result, r ? r->version : 0, c.number);
    case CompareTarget::create:
      return compare_numbers(c.result, r ? r->create_revision : 0, c.number);
    case CompareTarget::mod:
      return compare_numbers(c.result, r ? r->mod_revision : 0, c.number);
    case CompareTarget::lease:
      return compare_numbers(c.result, r ? r->lease : 0, c.number);
    case CompareTarget::value: {
      if (!r) return false;
      int v = r->value.compare(c.value);
      return compare_numbers(c.result, v < 0 ? -1 : (v > 0 ? 1 : 0), 0);
    }
  }
  return false;
}

class StoreImpl : public MvccStore {
 public:
  StoreImpl(WT_CONNECTION* conn, const EngineOptions& options,
            std::atomic<uint64_t>* applied_batches)
      : conn_(conn),
        options_(options),
        applied_batches_(applied_batches),
        ext_(options.extension) {}

  ~StoreImpl() override { stop_compactor(); }

  Status open() {
    // The state row names the generation of the state tables: read it before opening them.
    State state;
    {
      WT_SESSION* session = nullptr;
      int ret = conn_->open_session(conn_, nullptr, nullptr, &session);
      if (ret != 0) return wt_error("open_session", ret);
      WT_CURSOR* meta = nullptr;
      ret = session->open_cursor(session, kStateMetaTable, nullptr, nullptr, &meta);
      if (ret == 0) {
        set_key(meta, "state");
        ret = meta->search(meta);
        if (ret == 0) {
          if (!decode_state(value_view(meta), &state)) ret = WT_ERROR;
        } else if (ret == WT_NOTFOUND) {
          ret = put_row(meta, "state", encode_state(state));
        }
        meta->close(meta);
      }
      if (ret == 0) ret = create_state_tables(session, state.generation);
      session->close(session, nullptr);
      if (ret == WT_ERROR)
        return make_error(ErrorCode::internal, "corrupt state row in table statemeta");
      if (ret != 0) return wt_error("open the state tables", ret);
    }
    // Leftovers of a crash mid-stream or mid-install.
    if (drop_other_generations(conn_, state.generation) == 0) {
      remove_orphan_files(options_.dir, state.generation);
    }
    if (auto st = s_.open(conn_, state.generation); !st) return st;
    if (auto st = cs_.open(conn_, state.generation); !st) return st;
    return load(state);
  }

  // Takes the in-memory copies from the tables (at open, and after an install).
  Status load(const State& state) {
    generation_ = state.generation;
    next_sink_generation_ = std::max(next_sink_generation_, state.generation + 1);
    revision_ = state.revision;
    compact_revision_ = state.compact_revision;
    applied_index_ = state.applied_index;
    cluster_ms_ = state.cluster_ms;
    {
      std::lock_guard lk(conf_mu_);
      applied_conf_ = state.conf;
      applied_members_.clear();
      set_key(s_.meta, "members");
      int ret = s_.meta->search(s_.meta);
      if (ret == 0) {
        std::string_view v = value_view(s_.meta);
        applied_members_.assign(v.data(), v.size());
      } else if (ret != WT_NOTFOUND) {
        return wt_error("read meta members", ret);
      }
      s_.meta->reset(s_.meta);
    }
    std::lock_guard lk(mu_);
    target_ = state.compact_revision;
    done_ = 0;
    resume_key_.clear();
    set_key(s_.meta, "compaction");
    int ret = s_.meta->search(s_.meta);
    if (ret == 0) {
      CompactionRow row;
      if (!decode_compaction(value_view(s_.meta), &row)) {
        return make_error(ErrorCode::internal, "corrupt compaction row in table meta");
      }
      done_ = row.done;
      if (row.target == target_) resume_key_ = std::move(row.resume);
    } else if (ret != WT_NOTFOUND) {
      return wt_error("read meta compaction", ret);
    }
    s_.meta->reset(s_.meta);
    stop_ = false;
    compactor_ = std::thread([this] { compactor_loop(); });
    if (ext_ != nullptr) {
      State st = state;
      bool wrote = false;
      Txn tx(*this, st, &wrote);
      ret = s_.session->begin_transaction(s_.session, nullptr);
      if (ret != 0) return wt_error("begin_transaction", ret);
      auto reloaded = ext_->reload(tx);
      s_.session->rollback_transaction(s_.session, nullptr);
      KEEL_ASSERT(!wrote, "StateExtension::reload wrote");
      if (!reloaded) return reloaded;
    }
    return ok_status();
  }

  void stop_compactor() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (compactor_.joinable()) compactor_.join();
  }

  Result<std::unique_ptr<SnapshotSource>> snapshot_source() override {
    return make_snapshot_source(conn_);
  }

  Result<std::unique_ptr<SnapshotSink>> snapshot_sink() override {
    auto sink = make_snapshot_sink(conn_, next_sink_generation_++);
    if (!sink) return std::move(sink).error();
    return std::unique_ptr<SnapshotSink>(std::move(sink).value());
  }

  Status install(SnapshotSink& sink, const std::string& installed,
                 const std::function<void()>& durable) override {
    auto* staged = dynamic_cast<StagedSnapshot*>(&sink);
    KEEL_ASSERT(staged != nullptr && staged->finished(), "install of an unfinished sink");
    KEEL_ASSERT(staged->state().applied_index > applied_index_.load(),
                "install of a snapshot that is not newer than the applied state");
    // The compactor writes its progress row; it must not outlive the switch.
    stop_compactor();
    // 1. The switch, in one transaction (see the contract in mvcc_store.hpp).
    int ret = s_.session->begin_transaction(s_.session, nullptr);
    if (ret == 0) {
      for (const auto& [key, value] : staged->install_rows()) {
        if ((ret = put_row(s_.meta, key, value)) != 0) break;
      }
    }
    if (ret == 0) ret = put_row(s_.meta, kInstalledRow, installed);
    if (ret == 0) {
      ret = s_.session->commit_transaction(s_.session, nullptr);
    } else {
      s_.session->rollback_transaction(s_.session, nullptr);
    }
    // Nothing is durable yet; but readers may have followed the switch, so there is no way
    // back in-process either (a restart drops the staged tables).
    KEEL_ASSERT(ret == 0, "a snapshot install could not commit its switch of state");
    staged->installed();
    // 2. Checkpoint, then the log's snapshot record (or abort).
    durable();
    s_.close();
    cs_.close();
    const State state = staged->state();
    auto opened = s_.open(conn_, state.generation);
    if (opened) opened = cs_.open(conn_, state.generation);
    // The switch is durable: a store that cannot follow it cannot go on in-process.
    KEEL_ASSERT(opened.ok(), "cannot open the installed snapshot's tables");
    if (auto st = load(state); !st) return st;
    retired_pending_ = true;
    drop_retired();
    return ok_status();
  }

  size_t drop_retired() override {
    if (!retired_pending_) return 0;
    size_t left = drop_other_generations(conn_, generation_.load());
    retired_pending_ = left > 0;
    return left;
  }

  using MvccStore::apply;
  std::vector<Result<CommandResult>> apply_entries(const std::vector<ApplyEntry>& entries,
                                                   uint64_t applied_index,
                                                   const raft::ConfState* conf,
                                                   const std::string* members) override {
    if (applied_index != 0) {
      KEEL_ASSERT(applied_index >= applied_index_.load(), "apply: applied index goes back");
      for (const auto& e : entries)
        KEEL_ASSERT(e.index <= applied_index, "apply: a command after the applied index");
    }
    size_t commands = 0;
    for (const auto& e : entries)
      commands += e.command != nullptr ? 1 : 0;
    applied_batches_->fetch_add(1, std::memory_order_relaxed);
    // Commands known to fail after they had written: the batch is rolled back and re-run
    // without them (WiredTiger has no savepoints), which keeps every command atomic.
    std::map<size_t, Error> failed;
    for (;;) {
      std::vector<Result<CommandResult>> results;
      results.reserve(entries.size());
      State state{revision_.load(),   compact_revision_.load(), applied_index_.load(), {},
                  generation_.load(), cluster_ms_.load()};
      {
        std::lock_guard lk(conf_mu_);
        state.conf = conf != nullptr ? *conf : applied_conf_;
      }
      int ret = s_.session->begin_transaction(s_.session, nullptr);
      if (ret != 0) return all_failed(commands, wt_error("begin_transaction", ret));
      cur_state_ = &state;
      bool restart = false;
      std::optional<Error> internal;
      for (size_t i = 0; i < entries.size() && !restart && !internal; i++) {
        const ApplyEntry& e = entries[i];
        if (e.cluster_ms > state.cluster_ms) {
          // Time moves before the entry: what ends at its stamp ends before it applies.
          if (ext_ != nullptr) {
            bool wrote = false;
            Txn tx(*this, state, &wrote);
            if (auto st = ext_->advance(e.cluster_ms, tx); !st) internal = st.error();
          }
          state.cluster_ms = e.cluster_ms;
        }
        if (e.command != nullptr && !internal) {
          if (auto it = failed.find(i); it != failed.end()) {
            results.emplace_back(it->second);
          } else {
            bool wrote = false;
            auto r = apply_one(*e.command, state, &wrote);
            if (!r.ok() && wrote) {
              failed.emplace(i, r.error());
              restart = true;
              break;
            }
            results.push_back(std::move(r));
          }
        }
        if (e.index != 0) state.applied_index = e.index;
      }
      if (!restart && !internal && ext_ != nullptr) {
        bool wrote = false;
        Txn tx(*this, state, &wrote);
        if (auto st = ext_->before_commit(tx); !st) internal = st.error();
      }
      if (restart || internal) {
        s_.session->rollback_transaction(s_.session, nullptr);
        if (ext_ != nullptr) ext_->rolled_back();
        if (internal) return all_failed(commands, *internal);
        continue;
      }
      if (applied_index != 0) state.applied_index = applied_index;
      ret = put_row(s_.meta, "state", encode_state(state));
      if (ret == 0 && members != nullptr) ret = put_row(s_.meta, "members", *members);
      if (ret == 0)
        ret = s_.session->commit_transaction(s_.session, nullptr);
      else
        s_.session->rollback_transaction(s_.session, nullptr);
      if (ret != 0) {
        if (ext_ != nullptr) ext_->rolled_back();
        return all_failed(commands, wt_error("commit apply batch", ret));
      }
      if (ext_ != nullptr) ext_->committed();
      bool compacted = state.compact_revision != compact_revision_.load();
      revision_.store(state.revision);
      compact_revision_.store(state.compact_revision);
      applied_index_.store(state.applied_index);
      cluster_ms_.store(state.cluster_ms);
      if (conf != nullptr || members != nullptr) {
        std::lock_guard lk(conf_mu_);
        if (conf != nullptr) applied_conf_ = std::move(state.conf);
        if (members != nullptr) applied_members_ = *members;
      }
      if (compacted) {
        {
          std::lock_guard lk(mu_);
          target_ = state.compact_revision;
        }
        cv_.notify_all();
      }
      return results;
    }
  }

  uint64_t applied_index() const override { return applied_index_.load(); }
  uint64_t next_deadline_ms() const override {
    return ext_ != nullptr ? ext_->next_deadline_ms() : UINT64_MAX;
  }
  uint64_t applied_cluster_ms() const override { return cluster_ms_.load(); }
  raft::ConfState applied_conf() const override {
    std::lock_guard lk(conf_mu_);
    return applied_conf_;
  }
  std::string applied_members() const override {
    std::lock_guard lk(conf_mu_);
    return applied_members_;
  }
  int64_t current_revision() const override { return revision_.load(); }
  int64_t compact_revision() const override { return compact_revision_.load(); }

  std::unique_ptr<Reader> reader() override {
    auto r = make_reader(conn_, generation_.load());
    KEEL_ASSERT(r.ok(), "cannot open a WiredTiger session for a reader (session_max?)");
    return std::move(r).value();
  }

  void wait_compaction_idle() override {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return stop_ || done_ >= target_; });
  }

  bool compaction_idle() override {
    std::lock_guard lk(mu_);
    return stop_ || done_ >= target_;
  }

 private:
  // The extension's view of the batch in progress (StateExtension, mvcc_store.hpp).
  class Txn final : public ApplyTxn {
   public:
    Txn(StoreImpl& store, State& state, bool* wrote) : st_(store), state_(state), wrote_(wrote) {}
    Result<bool> get(std::string_view key, std::string* value) override {
      WT_CURSOR* c = st_.s_.ext;
      set_key(c, key);
      int ret = c->search(c);
      if (ret == WT_NOTFOUND) return false;
      if (ret != 0) return wt_error("read table ext", ret);
      std::string_view v = value_view(c);
      value->assign(v.data(), v.size());
      c->reset(c);
      return true;
    }
    Status put(std::string_view key, std::string_view value) override {
      *wrote_ = true;
      int ret = put_row(st_.s_.ext, key, value);
      st_.s_.ext->reset(st_.s_.ext);
      if (ret != 0) return wt_error("write table ext", ret);
      return ok_status();
    }
    Status del(std::string_view key) override {
      *wrote_ = true;
      int ret = remove_row(st_.s_.ext, key);
      st_.s_.ext->reset(st_.s_.ext);
      if (ret != 0) return wt_error("delete from table ext", ret);
      return ok_status();
    }
    Status scan(std::string_view from, std::string_view to,
                const std::function<bool(std::string_view, std::string_view)>& visit) override {
      int ret = scan_rows(st_.s_.ext, from, to, visit);
      if (ret != 0) return wt_error("scan table ext", ret);
      return ok_status();
    }
    Status delete_keys(const std::vector<std::string>& keys) override {
      const int64_t revision = state_.revision + 1;
      uint32_t sub = 0;
      for (const auto& key : keys) {
        DeleteRangeRequest del;
        del.key = key;
        auto r = st_.do_delete(del, revision, sub, wrote_, /*notify_extension=*/false);
        if (!r) return std::move(r).error();
      }
      if (sub > 0) state_.revision = revision;
      return ok_status();
    }
    int64_t revision() const override { return state_.revision; }

   private:
    StoreImpl& st_;
    State& state_;
    bool* wrote_;
  };

  static std::vector<Result<CommandResult>> all_failed(size_t n, const Error& e) {
    std::vector<Result<CommandResult>> v;
    v.reserve(n);
    for (size_t i = 0; i < n; i++)
      v.emplace_back(e);
    return v;
  }

  Result<CommandResult> apply_one(const Command& command, State& state, bool* wrote) {
    if (auto st = validate(command, structural_limits()); !st) return std::move(st).error();
    if (is_primitive(command)) {
      if (ext_ == nullptr) {
        return make_error(ErrorCode::invalid_argument,
                          "this store has no primitives state machine (leases, locks)");
      }
      Txn tx(*this, state, wrote);
      return ext_->apply(command, state.cluster_ms, tx);
    }
    if (auto* put = std::get_if<PutRequest>(&command)) {
      uint32_t sub = 0;
      auto r = do_put(*put, state.revision + 1, sub, wrote);
      if (!r) return std::move(r).error();
      state.revision++;
      return CommandResult(std::move(r).value());
    }
    if (auto* del = std::get_if<DeleteRangeRequest>(&command)) {
      uint32_t sub = 0;
      auto r = do_delete(*del, state.revision + 1, sub, wrote);
      if (!r) return std::move(r).error();
      if (sub > 0) state.revision++;
      r->revision = state.revision;
      return CommandResult(std::move(r).value());
    }
    if (auto* txn = std::get_if<TxnRequest>(&command)) {
      if (!txn->fences.empty()) {
        if (ext_ == nullptr) {
          return make_error(ErrorCode::fenced, "this store has no locks to check fences against");
        }
        Txn tx(*this, state, wrote);
        for (const auto& f : txn->fences) {
          if (auto st = ext_->check_fence(f, tx); !st) return std::move(st).error();
        }
      }
      auto r = do_txn(*txn, state, wrote);
      if (!r) return std::move(r).error();
      return CommandResult(std::move(r).value());
    }
    const auto& compact = std::get<CompactRequest>(command);
    if (compact.revision <= state.compact_revision) {
      return compacted_error(compact.revision, state.compact_revision);
    }
    if (compact.revision > state.revision) return future_error(compact.revision, state.revision);
    state.compact_revision = compact.revision;
    return CommandResult(CompactResponse{state.revision});
  }

  // Writes one new version of rec.key (history, index, and current or its removal).
  Status write_version(const Record& rec) {
    *wrote_ = true;
    int ret = put_row(s_.history, history_key(rec.mod_revision, rec.sub), encode_record(rec, true));
    if (ret == 0) {
      ret = put_row(s_.index, index_key(rec.key, rec.mod_revision),
                    index_value(rec.sub, rec.type == EventType::del));
    }
    if (ret == 0 && rec.type == EventType::put) {
      // The live row without the value: it points at the history row just written.
      Record live = rec;
      live.value.clear();
      ret = put_row(s_.current_aux, rec.key, encode_record(live, false));
    } else if (ret == 0) {
      ret = remove_row(s_.current_aux, rec.key);
    }
    if (ret != 0) return wt_error("write key version", ret);
    return ok_status();
  }

  Result<PutResponse> do_put(const PutRequest& req, int64_t revision, uint32_t& sub, bool* wrote) {
    wrote_ = wrote;
    if (ext_ != nullptr && !req.ignore_lease && req.lease != 0) {
      Txn tx(*this, *cur_state_, wrote);
      if (auto st = ext_->check_lease(req.lease, tx); !st) return std::move(st).error();
    }
    Record old;
    auto found = read_current(s_, req.key, &old);
    if (!found) return std::move(found).error();
    if (!*found && (req.ignore_value || req.ignore_lease)) {
      return make_error(ErrorCode::key_not_found,
                        std::string("key not found: put with ") +
                            (req.ignore_value ? "ignore_value" : "ignore_lease") +
                            " needs an existing key");
    }
    Record rec;
    rec.type = EventType::put;
    rec.key = req.key;
    rec.mod_revision = revision;
    rec.sub = sub++;
    if (*found) {
      rec.create_revision = old.create_revision;
      rec.version = old.version + 1;
      rec.prev_revision = old.mod_revision;
      rec.prev_sub = old.sub;
    } else {
      rec.create_revision = revision;
      rec.version = 1;
    }
    rec.lease = req.ignore_lease ? old.lease : req.lease;
    rec.value = req.ignore_value ? old.value : req.value;
    if (auto st = write_version(rec); !st) return std::move(st).error();
    const int64_t old_lease = *found ? old.lease : 0;
    if (ext_ != nullptr && rec.lease != old_lease) {
      Txn tx(*this, *cur_state_, wrote);
      if (auto st = ext_->key_lease_changed(rec.key, old_lease, rec.lease, tx); !st)
        return std::move(st).error();
    }
    PutResponse resp;
    resp.revision = revision;
    if (req.prev_kv && *found) resp.prev_kv = record_kv(std::move(old));
    return resp;
  }

  // notify_extension: tell the extension of deleted keys that had a lease (not when the
  // extension itself deletes them: it drops its own attachment rows).
  Result<DeleteRangeResponse> do_delete(const DeleteRangeRequest& req, int64_t revision,
                                        uint32_t& sub, bool* wrote, bool notify_extension = true) {
    wrote_ = wrote;
    std::vector<std::pair<std::string, int64_t>> leased;
    DeleteRangeResponse resp;
    Status failure = ok_status();
    int ret = for_each_current(s_, req.key, req.range_end, [&](Record&& old) {
      Record t;
      t.type = EventType::del;
      t.key = old.key;
      t.mod_revision = revision;
      t.sub = sub++;
      t.prev_revision = old.mod_revision;
      t.prev_sub = old.sub;
      failure = write_version(t);
      if (!failure) return false;
      if (old.lease != 0 && notify_extension && ext_ != nullptr)
        leased.emplace_back(old.key, old.lease);
      resp.deleted++;
      if (req.prev_kv) resp.prev_kvs.push_back(record_kv(std::move(old)));
      return true;
    });
    if (!failure) return std::move(failure).error();
    if (ret != 0) return wt_error("delete range", ret);
    for (const auto& [key, lease] : leased) {
      Txn tx(*this, *cur_state_, wrote);
      if (auto st = ext_->key_lease_changed(key, lease, 0, tx); !st) return std::move(st).error();
    }
    return resp;
  }

  Result<bool> holds(const Compare& c) {
    bool any = false, all = true;
    int ret = for_each_current(s_, c.key, c.range_end, [&](Record&& r) {
      any = true;
      all = compare_holds(c, &r);
      return all;
    });
    if (ret != 0) return wt_error("txn compare", ret);
    return any ? all : compare_holds(c, nullptr);
  }

  Result<TxnResponse> do_txn(const TxnRequest& txn, State& state, bool* wrote) {
    TxnResponse resp;
    resp.succeeded = true;
    for (const auto& c : txn.compare) {
      auto h = holds(c);
      if (!h) return std::move(h).error();
      if (!*h) {
        resp.succeeded = false;
        break;
      }
    }
    const auto& ops = resp.succeeded ? txn.success : txn.failure;
    // Preconditions against the state before the txn, before anything is written. A branch
    // writes each key at most once (validate), so this state is also what each op sees.
    for (const auto& op : ops) {
      if (auto* r = std::get_if<RangeRequest>(&op)) {
        if (r->revision > state.revision) return future_error(r->revision, state.revision);
        if (r->revision > 0 && r->revision < state.compact_revision) {
          return compacted_error(r->revision, state.compact_revision);
        }
      } else if (auto* p = std::get_if<PutRequest>(&op);
                 p && (p->ignore_value || p->ignore_lease)) {
        Record rec;
        auto found = read_current(s_, p->key, &rec);
        if (!found) return std::move(found).error();
        if (!*found) {
          return make_error(ErrorCode::key_not_found,
                            "key not found: a txn put with ignore_value or ignore_lease needs "
                            "an existing key");
        }
      }
    }
    int64_t revision = state.revision + 1;
    uint32_t sub = 0;
    resp.responses.reserve(ops.size());
    for (const auto& op : ops) {
      if (auto* r = std::get_if<RangeRequest>(&op)) {
        ReadView view{sub > 0 ? revision : state.revision, state.revision, state.compact_revision};
        auto rr = do_range(s_, view, *r, options_.txn_range_max_bytes, false);
        if (!rr) return std::move(rr).error();
        resp.responses.emplace_back(std::move(rr).value());
      } else if (auto* p = std::get_if<PutRequest>(&op)) {
        auto pr = do_put(*p, revision, sub, wrote);
        if (!pr) return std::move(pr).error();
        resp.responses.emplace_back(std::move(pr).value());
      } else {
        auto dr = do_delete(std::get<DeleteRangeRequest>(op), revision, sub, wrote);
        if (!dr) return std::move(dr).error();
        dr->revision = revision;  // fixed below if the txn wrote nothing
        resp.responses.emplace_back(std::move(dr).value());
      }
    }
    if (sub > 0) state.revision = revision;
    resp.revision = state.revision;
    for (auto& r : resp.responses) {
      if (auto* p = std::get_if<PutResponse>(&r)) p->revision = state.revision;
      if (auto* d = std::get_if<DeleteRangeResponse>(&r)) d->revision = state.revision;
    }
    return resp;
  }

  // ---- physical compaction (background thread, own session) ----

  void compactor_loop() {
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return stop_ || done_ < target_; });
      if (stop_) return;
      int64_t target = target_;
      std::string resume = std::move(resume_key_);
      resume_key_.clear();
      lk.unlock();
      bool finished = false;
      while (!finished) {
        auto st = compact_chunk(target, &resume, &finished);
        if (!st) {
          std::fprintf(stderr, "keel storage: compaction to revision %lld: %s; retrying\n",
                       static_cast<long long>(target), st.error().message.c_str());
          lk.lock();
          cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stop_; });
          lk.unlock();
        }
        lk.lock();
        if (stop_) return;
        if (target_ != target) {  // a newer compaction: start over with it
          target = target_;
          resume.clear();
          finished = false;
        }
        lk.unlock();
      }
      lk.lock();
      done_ = target;
      cv_.notify_all();
    }
  }

  // One WiredTiger transaction: walks up to compaction_batch_rows index rows from *resume.
  // For each key, of its versions <= target every one but the newest is deleted, and the
  // newest too if it is a tombstone (etcd's rule). Progress is saved in the same txn.
  Status compact_chunk(int64_t target, std::string* resume, bool* finished) {
    WT_SESSION* session = cs_.session;
    int ret = session->begin_transaction(session, nullptr);
    if (ret != 0) return wt_error("begin compaction txn", ret);
    struct Pending {
      bool has = false;
      std::string ik;
      size_t prefix_len = 0;
      int64_t revision = 0;
      uint32_t sub = 0;
      bool tombstone = false;
    } pending;
    auto drop = [&](const Pending& p) {
      int r = remove_row(cs_.index_aux, p.ik);
      if (r == 0) r = remove_row(cs_.history_aux, history_key(p.revision, p.sub));
      return r;
    };
    WT_CURSOR* c = cs_.index;
    // Resolves the pending row given the row after it (the cursor's current row).
    auto resolve = [&](std::string_view ik, size_t plen, int64_t rev) {
      if (!pending.has) return 0;
      pending.has = false;
      bool same_key = plen == pending.prefix_len &&
                      ik.substr(0, plen) == std::string_view(pending.ik).substr(0, plen);
      return (same_key && rev <= target) || pending.tombstone ? drop(pending) : 0;
    };
    ret = resume->empty() ? c->next(c) : seek_ge(c, *resume);
    size_t rows = 0;
    while (ret == 0) {
      std::string_view ik = key_view(c);
      size_t plen = escaped_prefix_len(ik);
      KEEL_ASSERT(plen > 0 && ik.size() == plen + 8, "corrupt key in table index");
      auto rev = static_cast<int64_t>(get_be64(ik.data() + plen));
      if ((ret = resolve(ik, plen, rev)) != 0) break;
      if (rows >= std::max<size_t>(1, options_.compaction_batch_rows)) {
        resume->assign(ik.data(), ik.size());  // the first row not visited
        break;
      }
      if (rev <= target) {
        std::string_view v = value_view(c);
        KEEL_ASSERT(v.size() == 5, "corrupt value in table index");
        pending.has = true;
        pending.ik.assign(ik.data(), ik.size());
        pending.prefix_len = plen;
        pending.revision = rev;
        pending.sub = get_be32(v.data());
        pending.tombstone = v[4] != 0;
      }
      rows++;
      ret = c->next(c);
    }
    if (ret == WT_NOTFOUND) {
      ret = pending.has && pending.tombstone ? drop(pending) : 0;
      *finished = true;
      resume->clear();
    }
    c->reset(c);
    if (ret == 0) {
      std::string progress;
      put_varint(progress, static_cast<uint64_t>(target));
      put_varint(progress, static_cast<uint64_t>(*finished ? target : done_snapshot()));
      progress.append(*resume);
      ret = put_row(cs_.meta, "compaction", progress);
    }
    if (ret == 0)
      ret = session->commit_transaction(session, nullptr);
    else
      session->rollback_transaction(session, nullptr);
    if (ret != 0) {
      *finished = false;
      return wt_error("compaction chunk", ret);
    }
    return ok_status();
  }

  int64_t done_snapshot() {
    std::lock_guard lk(mu_);
    return done_;
  }

  WT_CONNECTION* conn_;
  EngineOptions options_;
  std::atomic<uint64_t>* applied_batches_;
  Session s_;   // apply (node thread)
  Session cs_;  // compactor thread
  bool* wrote_ = nullptr;
  StateExtension* ext_;         // null: no primitives; lease numbers are stored unchecked
  State* cur_state_ = nullptr;  // the state of the batch apply() is running (node thread)
  std::atomic<int64_t> revision_{1};
  std::atomic<int64_t> compact_revision_{0};
  std::atomic<uint64_t> applied_index_{0};
  std::atomic<uint64_t> generation_{0};  // of the state tables (wt_internal.hpp)
  std::atomic<uint64_t> cluster_ms_{0};
  uint64_t next_sink_generation_ = 1;  // node thread
  bool retired_pending_ = false;       // node thread: replaced tables left to drop
  mutable std::mutex conf_mu_;         // applied_conf_ is read from any thread
  raft::ConfState applied_conf_;
  std::string applied_members_;  // the node's member list (opaque here), meta row "members"

  std::mutex mu_;
  std::condition_variable cv_;
  int64_t target_ = 0;  // compact revision to reach physically
  int64_t done_ = 0;    // compact revision reached physically
  std::string resume_key_;
  bool stop_ = false;
  std::thread compactor_;
};

}  // namespace

Result<std::unique_ptr<MvccStore>> make_store(WT_CONNECTION* conn, const EngineOptions& options,
                                              std::atomic<uint64_t>* applied_batches) {
  auto store = std::make_unique<StoreImpl>(conn, options, applied_batches);
  if (auto st = store->open(); !st) return std::move(st).error();
  return std::unique_ptr<MvccStore>(std::move(store));
}

}  // namespace keel::storage::wt
