// The WiredTiger connection, its tables, and the raft log (LogStore).
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>

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

constexpr const char* kTables[] = {"table:meta",    "table:current", "table:index",
                                   "table:history", "table:raftlog", "table:raft_entries"};

}  // namespace

Status Session::open(WT_CONNECTION* conn) {
  int ret = conn->open_session(conn, &event_handler, "isolation=snapshot", &session);
  if (ret != 0) {
    session = nullptr;
    return wt_error("open_session", ret);
  }
  struct {
    WT_CURSOR** cursor;
    const char* uri;
  } cursors[] = {{&meta, "table:meta"},           {&current, "table:current"},
                 {&current_aux, "table:current"}, {&index, "table:index"},
                 {&index_aux, "table:index"},     {&history, "table:history"},
                 {&history_aux, "table:history"}, {&raftlog, "table:raftlog"}};
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
}

namespace {

std::string hard_state_bytes(const HardState& hs) {
  std::string v;
  put_varint(v, hs.term);
  put_varint(v, hs.vote);
  put_varint(v, hs.commit);
  return v;
}

class LogImpl : public LogStore {
 public:
  LogImpl(std::atomic<uint64_t>* syncs, std::atomic<uint64_t>* appended)
      : syncs_(syncs), appended_(appended) {}

  Status open(WT_CONNECTION* conn) {
    if (auto st = s_.open(conn); !st) return st;
    set_key(s_.meta, "hardstate");
    int ret = s_.meta->search(s_.meta);
    if (ret == 0) {
      std::string_view v = value_view(s_.meta);
      if (!get_varint(&v, &hard_state_.term) || !get_varint(&v, &hard_state_.vote) ||
          !get_varint(&v, &hard_state_.commit)) {
        return make_error(ErrorCode::internal, "corrupt hardstate row in table meta");
      }
    } else if (ret != WT_NOTFOUND) {
      return wt_error("read hardstate", ret);
    }
    s_.meta->reset(s_.meta);
    set_key(s_.meta, "log_first");
    ret = s_.meta->search(s_.meta);
    if (ret == 0) {
      std::string_view v = value_view(s_.meta);
      if (v.size() != 8) return make_error(ErrorCode::internal, "corrupt log_first in meta");
      first_ = get_be64(v.data());
    } else if (ret != WT_NOTFOUND) {
      return wt_error("read log_first", ret);
    }
    s_.meta->reset(s_.meta);
    WT_CURSOR* c = s_.raftlog;
    ret = c->prev(c);  // the last row
    if (ret == 0) {
      last_ = get_be64(key_view(c).data());
    } else if (ret == WT_NOTFOUND) {
      last_ = first_ - 1;
    } else {
      return wt_error("read raftlog", ret);
    }
    c->reset(c);
    return ok_status();
  }

  Status append(const std::vector<LogEntry>& entries, const HardState* hard_state) override {
    std::lock_guard lk(mu_);
    if (entries.empty() && hard_state == nullptr) return ok_status();
    uint64_t new_last = last_;
    if (!entries.empty()) {
      uint64_t lo = entries.front().index;
      if (lo < first_ || lo > last_ + 1) {
        return make_error(ErrorCode::invalid_argument, "log append at index " + std::to_string(lo) +
                                                           " outside [" + std::to_string(first_) +
                                                           ", " + std::to_string(last_ + 1) + "]");
      }
      for (size_t i = 1; i < entries.size(); i++) {
        if (entries[i].index != lo + i) {
          return make_error(ErrorCode::invalid_argument, "log entries are not contiguous");
        }
      }
      new_last = entries.back().index;
    }
    WT_SESSION* session = s_.session;
    int ret = session->begin_transaction(session, nullptr);
    if (ret != 0) return wt_error("begin log txn", ret);
    WT_CURSOR* c = s_.raftlog;
    if (!entries.empty()) {
      // Truncate-and-append: the tail after the new entries goes.
      for (uint64_t i = new_last + 1; i <= last_ && ret == 0; i++)
        ret = remove_row(c, be(i));
      std::string v;
      for (size_t i = 0; i < entries.size() && ret == 0; i++) {
        v.clear();
        put_varint(v, entries[i].term);
        v.append(entries[i].data);
        ret = put_row(c, be(entries[i].index), v);
      }
    }
    if (ret == 0 && hard_state != nullptr) {
      ret = put_row(s_.meta, "hardstate", hard_state_bytes(*hard_state));
    }
    if (ret == 0) {
      ret = session->commit_transaction(session, "sync=on");
    } else {
      session->rollback_transaction(session, nullptr);
    }
    if (ret != 0) return wt_error("log append", ret);
    syncs_->fetch_add(1, std::memory_order_relaxed);
    appended_->fetch_add(entries.size(), std::memory_order_relaxed);
    if (!entries.empty()) last_ = new_last;
    if (hard_state != nullptr) hard_state_ = *hard_state;
    return ok_status();
  }

  Result<std::vector<LogEntry>> entries(uint64_t lo, uint64_t hi, size_t max_bytes) override {
    std::lock_guard lk(mu_);
    if (lo < first_) {
      return make_error(ErrorCode::compacted, "log index " + std::to_string(lo) +
                                                  " is compacted; the first index is " +
                                                  std::to_string(first_));
    }
    if (hi > last_ + 1) {
      return make_error(ErrorCode::invalid_argument, "log index " + std::to_string(hi - 1) +
                                                         " is beyond the last index " +
                                                         std::to_string(last_));
    }
    std::vector<LogEntry> out;
    if (lo >= hi) return out;
    WT_SESSION* session = s_.session;
    int ret = session->begin_transaction(session, nullptr);
    if (ret != 0) return wt_error("begin log read", ret);
    WT_CURSOR* c = s_.raftlog;
    size_t bytes = 0;
    ret = seek_ge(c, be(lo));
    for (uint64_t i = lo; i < hi && ret == 0; i++) {
      std::string_view k = key_view(c);
      if (k.size() != 8 || get_be64(k.data()) != i) {
        ret = WT_NOTFOUND;
        break;
      }
      std::string_view v = value_view(c);
      LogEntry e;
      e.index = i;
      if (!get_varint(&v, &e.term)) {
        c->reset(c);
        session->rollback_transaction(session, nullptr);
        return make_error(ErrorCode::internal, "corrupt raftlog row");
      }
      if (!out.empty() && bytes + v.size() > max_bytes) break;
      bytes += v.size();
      e.data.assign(v.data(), v.size());
      out.push_back(std::move(e));
      if (i + 1 < hi) ret = c->next(c);
    }
    c->reset(c);
    session->rollback_transaction(session, nullptr);
    if (ret != 0) return wt_error("read raftlog", ret);
    return out;
  }

  uint64_t first_index() const override {
    std::lock_guard lk(mu_);
    return first_;
  }
  uint64_t last_index() const override {
    std::lock_guard lk(mu_);
    return last_;
  }
  HardState hard_state() const override {
    std::lock_guard lk(mu_);
    return hard_state_;
  }

  Status compact_prefix(uint64_t index) override {
    std::lock_guard lk(mu_);
    if (index <= first_) return ok_status();
    WT_SESSION* session = s_.session;
    int ret = session->begin_transaction(session, nullptr);
    if (ret != 0) return wt_error("begin log compaction", ret);
    uint64_t end = std::min(index, last_ + 1);
    for (uint64_t i = first_; i < end && ret == 0; i++)
      ret = remove_row(s_.raftlog, be(i));
    if (ret == 0) ret = put_row(s_.meta, "log_first", be(index));
    if (ret == 0) {
      ret = session->commit_transaction(session, nullptr);
    } else {
      session->rollback_transaction(session, nullptr);
    }
    if (ret != 0) return wt_error("log compact_prefix", ret);
    first_ = index;
    if (last_ < index - 1) last_ = index - 1;  // everything dropped (e.g. a snapshot)
    return ok_status();
  }

 private:
  static std::string be(uint64_t v) {
    std::string k;
    put_be64(k, v);
    return k;
  }

  std::atomic<uint64_t>* syncs_;
  std::atomic<uint64_t>* appended_;
  mutable std::mutex mu_;
  Session s_;
  uint64_t first_ = 1;
  uint64_t last_ = 0;
  HardState hard_state_;
};

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(std::string dir) : dir_(std::move(dir)) {}
  ~EngineImpl() override {
    store_.reset();
    log_.reset();
    raft_.reset();
    if (conn_ != nullptr) conn_->close(conn_, nullptr);
  }

  Status open(const EngineOptions& options) {
    std::string config = "create,cache_size=" + std::to_string(options.cache_size_mb) +
                         "MB,session_max=1024,log=(enabled=true,archive=true,prealloc=false," +
                         "file_max=" + std::to_string(options.log_file_max_mb) +
                         "MB),checkpoint=(wait=60,log_size=256MB),statistics=(none)";
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
    WT_SESSION* session = nullptr;
    ret = conn_->open_session(conn_, &event_handler, nullptr, &session);
    if (ret != 0) return wt_error("open_session", ret);
    for (const char* table : kTables) {
      ret = session->create(session, table, kTableConfig);
      if (ret != 0) break;
    }
    session->close(session, nullptr);
    if (ret != 0) return wt_error("create tables", ret);

    auto log = std::make_unique<LogImpl>(&log_syncs_, &log_entries_);
    if (auto st = log->open(conn_); !st) return st;
    log_ = std::move(log);
    auto raft = RaftStorage::open(conn_, &log_syncs_, &log_entries_);
    if (!raft) return std::move(raft).error();
    raft_ = std::move(raft).value();
    auto store = make_store(conn_, options, &applied_batches_);
    if (!store) return std::move(store).error();
    store_ = std::move(store).value();
    return ok_status();
  }

  MvccStore& store() override { return *store_; }
  LogStore& log() override { return *log_; }
  RaftStorage& raft() override { return *raft_; }
  EngineStats stats() const override {
    return EngineStats{log_syncs_.load(), log_entries_.load(), applied_batches_.load()};
  }
  const std::string& dir() const override { return dir_; }

 private:
  std::string dir_;
  WT_CONNECTION* conn_ = nullptr;
  std::unique_ptr<LogImpl> log_;
  std::unique_ptr<RaftStorage> raft_;
  std::unique_ptr<MvccStore> store_;
  std::atomic<uint64_t> log_syncs_{0};
  std::atomic<uint64_t> log_entries_{0};
  std::atomic<uint64_t> applied_batches_{0};
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
