// The WiredTiger connection and its tables.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/storage/raft_storage.hpp"
#include "cluster/storage/wt_internal.hpp"

namespace keel::storage {
namespace wt {
namespace {

// WiredTiger's messages go to stderr, prefixed, one line each (this library has no logger).
int on_wt_error(WT_EVENT_HANDLER*, WT_SESSION*, int, const char* message) {
  std::fprintf(stderr, "wiredtiger: %s\n", message);
  return 0;
}
int on_wt_message(WT_EVENT_HANDLER*, WT_SESSION*, const char* message) {
  std::fprintf(stderr, "wiredtiger: %s\n", message);
  return 0;
}
WT_EVENT_HANDLER event_handler = {on_wt_error, on_wt_message, nullptr, nullptr};

// The journaled tables. The state tables are created by the store, for its generation
// (create_state_tables), not journaled, as is table:statemeta.
// (Data directories written before RaftStorage also hold an unused table:raftlog.)
constexpr const char* kTables[] = {"table:meta", "table:raft_entries"};

}  // namespace

Status Session::open(WT_CONNECTION* conn, uint64_t gen) {
  generation = gen;
  const std::string current_uri = table_uri(StateTable::current, gen);
  const std::string index_uri = table_uri(StateTable::index, gen);
  const std::string history_uri = table_uri(StateTable::history, gen);
  const std::string ext_uri = table_uri(StateTable::ext, gen);
  int ret = conn->open_session(conn, &event_handler, "isolation=snapshot", &session);
  if (ret != 0) {
    session = nullptr;
    return wt_error("open_session", ret);
  }
  struct {
    WT_CURSOR** cursor;
    const char* uri;
  } cursors[] = {{&meta, kStateMetaTable},
                 {&current, current_uri.c_str()},
                 {&current_aux, current_uri.c_str()},
                 {&index, index_uri.c_str()},
                 {&index_aux, index_uri.c_str()},
                 {&history, history_uri.c_str()},
                 {&history_aux, history_uri.c_str()},
                 {&ext, ext_uri.c_str()}};
  for (auto& c : cursors) {
    ret = session->open_cursor(session, c.uri, nullptr, nullptr, c.cursor);
    if (ret != 0) {
      close();
      return wt_error("open_cursor", ret);
    }
  }
  return ok_status();
}

void Session::close() {
  if (session != nullptr) session->close(session, nullptr);  // closes its cursors
  session = nullptr;
  meta = current = current_aux = index = index_aux = history = history_aux = ext = nullptr;
}

int create_state_tables(WT_SESSION* session, uint64_t generation) {
  for (StateTable t : kStateTables) {
    int ret = session->create(session, table_uri(t, generation).c_str(), kStateTableConfig);
    if (ret != 0) return ret;
  }
  return 0;
}

namespace {
// The generation in a state table's name after `base` ("" -> 0, "_g12" -> 12); nullopt if
// it is not one of ours. `rest` may carry a suffix such as ".wt" or ".wt.1" when `files`.
std::optional<uint64_t> generation_of(std::string_view rest, bool files) {
  if (files) {
    size_t dot = rest.find('.');
    if (dot == std::string_view::npos || rest.substr(dot, 3) != ".wt") return std::nullopt;
    rest = rest.substr(0, dot);
  }
  if (rest.empty()) return 0;
  if (rest.size() < 3 || rest.substr(0, 2) != "_g") return std::nullopt;
  uint64_t gen = 0;
  for (char ch : rest.substr(2)) {
    if (ch < '0' || ch > '9') return std::nullopt;
    gen = gen * 10 + static_cast<uint64_t>(ch - '0');
  }
  return gen;
}
}  // namespace

void remove_orphan_files(const std::string& dir, uint64_t live) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    for (StateTable t : kStateTables) {
      std::string_view base = std::string_view(table_base(t)).substr(6);  // past "table:"
      if (name.compare(0, base.size(), base) != 0) continue;
      auto gen = generation_of(std::string_view(name).substr(base.size()), true);
      if (gen && *gen != live && *gen != 0) std::filesystem::remove(entry.path(), ec);
    }
  }
}

size_t drop_other_generations(WT_CONNECTION* conn, uint64_t live) {
  WT_SESSION* session = nullptr;
  if (conn->open_session(conn, &event_handler, nullptr, &session) != 0) return 1;
  // Every state table of another generation, from WiredTiger's metadata.
  std::vector<std::string> doomed;
  WT_CURSOR* c = nullptr;
  if (session->open_cursor(session, "metadata:", nullptr, nullptr, &c) == 0) {
    while (c->next(c) == 0) {
      const char* key = nullptr;
      if (c->get_key(c, &key) != 0 || key == nullptr) continue;
      std::string_view k(key);
      for (StateTable t : kStateTables) {
        std::string_view base = table_base(t);
        if (k.substr(0, base.size()) != base) continue;
        auto gen = generation_of(k.substr(base.size()), false);
        if (gen && *gen != live) doomed.emplace_back(k);
      }
    }
    c->close(c);
  }
  size_t left = 0;
  for (const auto& uri : doomed) {
    // A table a cursor still holds gives EBUSY; it goes at a later call.
    int ret = session->drop(session, uri.c_str(), "force=true");
    if (ret != 0) left++;
  }
  session->close(session, nullptr);
  return left;
}

namespace {

// Whether the metadata knows `uri`.
bool table_exists(WT_SESSION* session, const char* uri) {
  WT_CURSOR* c = nullptr;
  if (session->open_cursor(session, "metadata:", nullptr, nullptr, &c) != 0) return false;
  c->set_key(c, uri);
  bool found = c->search(c) == 0;
  c->close(c);
  return found;
}

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(std::string dir) : dir_(std::move(dir)) {}
  ~EngineImpl() override {
    stop_checkpointer();
    const bool opened = store_ && raft_ && ckpt_session_ != nullptr;
    store_.reset();  // stops the compactor: nothing writes after this
    if (opened) {
      // The state of a clean shutdown is durable: the next open re-applies nothing.
      if (auto st = checkpoint(); !st)
        std::fprintf(stderr, "keel storage: %s\n", st.error().message.c_str());
    }
    raft_.reset();
    if (ckpt_session_ != nullptr) ckpt_session_->close(ckpt_session_, nullptr);
    if (conn_ != nullptr) conn_->close(conn_, nullptr);
  }

  Status open(const EngineOptions& options) {
    options_ = options;
    // No checkpoint server: this engine's own thread checkpoints, so that it knows the
    // applied index each checkpoint holds (durable_applied()).
    // Dirty pages: WiredTiger's default starts writing them out at 5% of the cache (20%: the
    // writers help). Unjournaled state is written once by the next checkpoint anyway, so a
    // page evicted early and dirtied again is written twice; letting 30% of the cache stay
    // dirty (60%: writers help) cut the bytes written per put between checkpoints from 1221
    // to 849 on 10k overwritten keys, and the checkpoint stall did not grow (README;
    // tests/bench/storage/checkpoint_stall).
    std::string config = "create,cache_size=" + std::to_string(options.cache_size_mb) +
                         "MB,session_max=1024,log=(enabled=true,archive=true,prealloc=false," +
                         "file_max=" + std::to_string(options.log_file_max_mb) +
                         "MB),eviction_dirty_target=30,eviction_dirty_trigger=60,"
                         "statistics=(none)";
    int ret = wiredtiger_open(dir_.c_str(), &event_handler, config.c_str(), &conn_);
    if (ret != 0) {
      conn_ = nullptr;
      if (ret == EBUSY) {
        return make_error(ErrorCode::internal,
                          "data directory " + dir_ +
                              " is in use by another process (its WiredTiger lock is held)");
      }
      return make_error(ErrorCode::internal,
                        "cannot open the data directory " + dir_ + ": " + wiredtiger_strerror(ret));
    }
    if (auto st = create_tables(); !st) return st;

    auto raft = RaftStorage::open(conn_, &log_syncs_, &log_entries_);
    if (!raft) return std::move(raft).error();
    raft_ = std::move(raft).value();
    auto store = make_store(conn_, options, &applied_batches_);
    if (!store) return std::move(store).error();
    store_ = std::move(store).value();
    if (auto st = complete_install(); !st) return st;

    ret = conn_->open_session(conn_, &event_handler, "isolation=snapshot", &ckpt_session_);
    if (ret != 0) {
      ckpt_session_ = nullptr;
      return wt_error("open the checkpoint session", ret);
    }
    // What is open now came from the last checkpoint (or WiredTiger's recovery, which ends
    // with one), or is a new store.
    {
      std::lock_guard lk(durable_mu_);
      durable_ = DurablePoint{store_->applied_index(), store_->applied_conf()};
    }
    checkpointer_ = std::thread([this] { checkpoint_loop(); });
    return ok_status();
  }

  MvccStore& store() override { return *store_; }
  RaftStorage& raft() override { return *raft_; }
  Status install_snapshot(SnapshotSink& sink, const raft::Ready& rd) override {
    KEEL_ASSERT(rd.snapshot != nullptr, "install_snapshot without a snapshot in the Ready");
    auto* staged = dynamic_cast<wt::StagedSnapshot*>(&sink);
    KEEL_ASSERT(staged != nullptr && staged->finished() &&
                    staged->state().applied_index == rd.snapshot->meta.index &&
                    staged->state().conf == rd.snapshot->meta.conf,
                "install_snapshot: the sink's state is not the Ready's snapshot");
    return store_->install(sink, encode_raft_snapshot(*rd.snapshot), [&] {
      // The new state durable first, then the log that no longer holds what it replaces.
      auto st = checkpoint();
      KEEL_ASSERT(st.ok(), "the checkpoint of a snapshot install failed (restart recovers)");
      raft_->persist(rd);
    });
  }
  EngineStats stats() const override {
    EngineStats st;
    st.log_syncs = log_syncs_.load();
    st.log_entries = log_entries_.load();
    st.applied_batches = applied_batches_.load();
    st.checkpoints = checkpoints_.load();
    st.checkpoint_ms_last = checkpoint_ms_last_.load();
    st.checkpoint_ms_max = checkpoint_ms_max_.load();
    st.raft_log_compactions = raft_log_compactions_.load();
    return st;
  }
  const std::string& dir() const override { return dir_; }

  void request_checkpoint() override {
    {
      std::lock_guard lk(loop_mu_);
      requested_ = true;
    }
    loop_cv_.notify_all();
  }

  DurablePoint durable_applied() const override {
    std::lock_guard lk(durable_mu_);
    return durable_;
  }

  Status checkpoint() override {
    std::lock_guard run(ckpt_run_mu_);  // one of ours at a time
    log_at_last_start_.store(raft_->appended_bytes());
    // The state the checkpoint will hold at least: committed before it starts.
    WT_SESSION* s = ckpt_session_;
    State state;
    WT_CURSOR* meta = nullptr;
    int ret = s->open_cursor(s, kStateMetaTable, nullptr, nullptr, &meta);
    if (ret == 0) ret = s->begin_transaction(s, nullptr);
    if (ret == 0) {
      set_key(meta, "state");
      ret = meta->search(meta);
      if (ret == 0 && !decode_state(value_view(meta), &state)) ret = WT_ERROR;
      s->rollback_transaction(s, nullptr);
    }
    if (meta != nullptr) meta->close(meta);
    if (ret == WT_NOTFOUND) ret = 0;  // a new store: nothing applied
    if (ret != 0) return wt_error("read the state row for a checkpoint", ret);
    const auto t0 = std::chrono::steady_clock::now();
    ret = s->checkpoint(s, nullptr);
    if (ret != 0) return wt_error("checkpoint", ret);
    const auto ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    {
      std::lock_guard lk(durable_mu_);
      // Never back: an install's checkpoint may have moved it past this reading.
      if (state.applied_index >= durable_.applied_index) {
        durable_ = DurablePoint{state.applied_index, state.conf};
      }
    }
    checkpoints_.fetch_add(1);
    checkpoint_ms_last_.store(ms);
    if (ms > checkpoint_ms_max_.load()) checkpoint_ms_max_.store(ms);
    return ok_status();
  }

 private:
  // Creates the tables, and checks (or, in a new data directory, writes) the format row.
  Status create_tables() {
    WT_SESSION* session = nullptr;
    int ret = conn_->open_session(conn_, &event_handler, nullptr, &session);
    if (ret != 0) return wt_error("open_session", ret);
    const bool had_meta = table_exists(session, "table:meta");
    for (const char* table : kTables) {
      ret = session->create(session, table, kTableConfig);
      if (ret != 0) break;
    }
    if (ret == 0) ret = session->create(session, kStateMetaTable, kStateTableConfig);
    if (ret != 0) {
      session->close(session, nullptr);
      return wt_error("create tables", ret);
    }
    WT_CURSOR* meta = nullptr;
    ret = session->open_cursor(session, "table:meta", nullptr, nullptr, &meta);
    if (ret != 0) {
      session->close(session, nullptr);
      return wt_error("open table meta", ret);
    }
    Status st = ok_status();
    set_key(meta, kFormatRow);
    ret = meta->search(meta);
    if (ret == 0) {
      std::string_view v = value_view(meta);
      uint64_t format = 0;
      if (!get_varint(&v, &format) || !v.empty() || format != kFormatVersion) {
        st = make_error(ErrorCode::internal,
                        "data dir " + dir_ + " has storage format " + std::to_string(format) +
                            "; this keeld reads format " + std::to_string(kFormatVersion));
      }
    } else if (ret == WT_NOTFOUND) {
      meta->reset(meta);
      // Rows but no format row: written by a keeld from before the state tables stopped
      // being journaled (format 1). Its tables are journaled, its state rows are in
      // table:meta; it is not converted in place.
      const bool old = had_meta && meta->next(meta) == 0;
      meta->reset(meta);
      if (old) {
        st = make_error(ErrorCode::internal,
                        "data dir " + dir_ +
                            " was written by an older keeld (storage format 1: every table "
                            "journaled); this keeld reads format " +
                            std::to_string(kFormatVersion) +
                            ". Move it away and start with an empty data dir: a member of a "
                            "cluster gets its state back from the others as a snapshot");
      } else {
        std::string v;
        put_varint(v, kFormatVersion);
        ret = session->begin_transaction(session, nullptr);
        if (ret == 0) ret = put_row(meta, kFormatRow, v);
        if (ret == 0) {
          ret = session->commit_transaction(session, "sync=on");
        } else {
          session->rollback_transaction(session, nullptr);
        }
        if (ret != 0) st = wt_error("write the format row", ret);
      }
    } else {
      st = wt_error("read the format row", ret);
    }
    session->close(session, nullptr);  // closes meta
    return st;
  }

  // A crash after an install's checkpoint and before its log commit leaves the state ahead
  // of the log (MvccStore::install): the log takes the installed snapshot's record now, as it
  // would have then.
  Status complete_install() {
    const uint64_t applied = store_->applied_index();
    if (!raft_->initialized() || applied <= raft_->hard_state().commit) return ok_status();
    WT_SESSION* s = nullptr;
    int ret = conn_->open_session(conn_, &event_handler, nullptr, &s);
    if (ret != 0) return wt_error("open_session", ret);
    WT_CURSOR* meta = nullptr;
    raft::Snapshot snap;
    bool found = false;
    ret = s->open_cursor(s, kStateMetaTable, nullptr, nullptr, &meta);
    if (ret == 0) {
      set_key(meta, kInstalledRow);
      ret = meta->search(meta);
      if (ret == 0) found = decode_raft_snapshot(value_view(meta), &snap);
      if (ret == WT_NOTFOUND) ret = 0;
    }
    s->close(s, nullptr);
    if (ret != 0) return wt_error("read the installed row", ret);
    // Any other state ahead of the log's commit is not an install's (storage tests apply
    // without a log; in a node it is damage, which the Raft core refuses at start).
    if (!found || snap.meta.index != applied) return ok_status();
    std::fprintf(stderr,
                 "keel storage: completing the install of the snapshot at index %llu "
                 "interrupted by a crash\n",
                 static_cast<unsigned long long>(applied));
    const raft::HardState hs = raft_->hard_state();
    raft_->apply_snapshot(std::make_shared<raft::Snapshot>(std::move(snap)));
    raft_->set_hard_state(raft::HardState{hs.term, hs.vote, applied});
    return ok_status();
  }

  void checkpoint_loop() {
    auto last_end = std::chrono::steady_clock::now();
    const auto interval = std::chrono::milliseconds(options_.checkpoint_interval_ms);
    const uint64_t log_bytes = static_cast<uint64_t>(options_.checkpoint_log_mb) << 20;
    std::unique_lock lk(loop_mu_);
    for (;;) {
      // Polls the log volume; a wait on a condition the node thread signals per append
      // would cost the write path, for nothing a tenth of a second changes.
      loop_cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stop_ || requested_; });
      if (stop_) return;
      const bool asked = requested_;
      requested_ = false;
      const bool by_time = options_.checkpoint_interval_ms != 0 &&
                           std::chrono::steady_clock::now() - last_end >= interval;
      const bool by_log =
          log_bytes != 0 && raft_->appended_bytes() - log_at_last_start_.load() >= log_bytes;
      if (!asked && !by_time && !by_log) continue;
      lk.unlock();
      auto st = checkpoint();
      if (!st) std::fprintf(stderr, "keel storage: %s; retrying\n", st.error().message.c_str());
      if (st) reclaim_raft_log();
      last_end = std::chrono::steady_clock::now();
      lk.lock();
    }
  }

  // See EngineOptions::raft_log_reclaim_slack_mb. The log's size is estimated from the mean
  // appended entry (entries are alike in a workload; the estimate only picks the moment).
  void reclaim_raft_log() {
    if (options_.raft_log_reclaim_slack_mb == 0) return;
    std::error_code ec;
    const uint64_t file = std::filesystem::file_size(dir_ + "/raft_entries.wt", ec);
    if (ec) return;
    const uint64_t appended = log_entries_.load();
    if (appended < 1000) return;  // too few since open to know the mean entry
    const uint64_t live = raft_->appended_bytes() / appended * raft_->live_entries();
    if (file <= 2 * live + (static_cast<uint64_t>(options_.raft_log_reclaim_slack_mb) << 20))
      return;
    std::lock_guard run(ckpt_run_mu_);  // compact checkpoints too
    int ret = ckpt_session_->compact(ckpt_session_, "table:raft_entries", nullptr);
    if (ret != 0) {
      std::fprintf(stderr, "keel storage: compact of the raft log's table: %s\n",
                   wiredtiger_strerror(ret));
      return;
    }
    raft_log_compactions_.fetch_add(1);
  }

  void stop_checkpointer() {
    {
      std::lock_guard lk(loop_mu_);
      stop_ = true;
    }
    loop_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
  }

  std::string dir_;
  EngineOptions options_;
  WT_CONNECTION* conn_ = nullptr;
  std::unique_ptr<RaftStorage> raft_;
  std::unique_ptr<MvccStore> store_;
  std::atomic<uint64_t> log_syncs_{0};
  std::atomic<uint64_t> log_entries_{0};
  std::atomic<uint64_t> applied_batches_{0};

  // Checkpoints: checkpoint() runs under ckpt_run_mu_ on ckpt_session_ (from the thread, an
  // install on the node thread, or a test).
  std::mutex ckpt_run_mu_;
  WT_SESSION* ckpt_session_ = nullptr;
  std::atomic<uint64_t> log_at_last_start_{0};
  mutable std::mutex durable_mu_;
  DurablePoint durable_;
  std::atomic<uint64_t> checkpoints_{0}, checkpoint_ms_last_{0}, checkpoint_ms_max_{0};
  std::atomic<uint64_t> raft_log_compactions_{0};
  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;
  bool requested_ = false;  // request_checkpoint()
  std::thread checkpointer_;
};

}  // namespace
}  // namespace wt

Result<std::unique_ptr<Engine>> open_engine(const EngineOptions& options) {
  const std::string& dir = options.dir;
  if (dir.empty()) return make_error(ErrorCode::internal, "no data directory given");
  struct stat sb {};
  if (::stat(dir.c_str(), &sb) != 0) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return make_error(ErrorCode::internal,
                        "cannot create the data directory " + dir + ": " + ec.message());
    }
    if (::stat(dir.c_str(), &sb) != 0) {
      return make_error(ErrorCode::internal,
                        "cannot read the data directory " + dir + ": " + std::strerror(errno));
    }
  }
  if (!S_ISDIR(sb.st_mode)) {
    return make_error(ErrorCode::internal, "the data directory " + dir + " is not a directory");
  }
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return make_error(ErrorCode::internal,
                      "cannot use the data directory " + dir + ": " + std::strerror(errno));
  }
  auto engine = std::make_unique<wt::EngineImpl>(dir);
  if (auto st = engine->open(options); !st) return std::move(st).error();
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace keel::storage
