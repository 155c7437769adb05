// The WiredTiger connection and its tables.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
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

// The state tables are created by the store, for its generation (create_state_tables).
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
  } cursors[] = {{&meta, "table:meta"},
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
    int ret = session->create(session, table_uri(t, generation).c_str(), kTableConfig);
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
  Status install_snapshot(SnapshotSink& sink, const raft::Ready& rd) override {
    KEEL_ASSERT(rd.snapshot != nullptr, "install_snapshot without a snapshot in the Ready");
    auto* staged = dynamic_cast<wt::StagedSnapshot*>(&sink);
    KEEL_ASSERT(staged != nullptr && staged->finished() &&
                    staged->state().applied_index == rd.snapshot->meta.index &&
                    staged->state().conf == rd.snapshot->meta.conf,
                "install_snapshot: the sink's state is not the Ready's snapshot");
    return store_->install(sink, [&](const MetaRows& rows) { raft_->persist(rd, rows); });
  }
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
