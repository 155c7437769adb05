// The WiredTiger connection and its tables.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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

// (Data directories written before RaftStorage also hold an unused table:raftlog.)
constexpr const char* kTables[] = {"table:meta", "table:current", "table:index", "table:history",
                                   "table:raft_entries"};

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
                 {&history_aux, "table:history"}};
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

class EngineImpl : public Engine {
 public:
  explicit EngineImpl(std::string dir) : dir_(std::move(dir)) {}
  ~EngineImpl() override {
    store_.reset();
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

    auto raft = RaftStorage::open(conn_, &log_syncs_, &log_entries_);
    if (!raft) return std::move(raft).error();
    raft_ = std::move(raft).value();
    auto store = make_store(conn_, options, &applied_batches_);
    if (!store) return std::move(store).error();
    store_ = std::move(store).value();
    return ok_status();
  }

  MvccStore& store() override { return *store_; }
  RaftStorage& raft() override { return *raft_; }
  EngineStats stats() const override {
    return EngineStats{log_syncs_.load(), log_entries_.load(), applied_batches_.load()};
  }
  const std::string& dir() const override { return dir_; }

 private:
  std::string dir_;
  WT_CONNECTION* conn_ = nullptr;
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
