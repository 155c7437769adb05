#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agent/config.hpp"

using namespace keel;
using keel::agent::Config;
using keel::agent::load_config_file;

namespace {
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    char tmpl[] = "/tmp/keel-config-XXXXXX";
    int fd = mkstemp(tmpl);
    close(fd);
    path = tmpl;
    std::ofstream(path) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
};
}  // namespace

TEST_CASE("defaults are the embedded single-node setup", "[config]") {
  Config c;
  CHECK(c.data_dir == "./var");
  CHECK(c.effective_socket_path() == "./var/keel.sock");
  CHECK(c.socket_mode == 0660);
  CHECK(c.limits.max_request_bytes == 1536 * 1024);
  CHECK(c.limits.max_txn_ops == 128);
  // One serving thread per core but one (left to the node thread), at least one.
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  CHECK(c.effective_server_threads() == std::max<size_t>(1, cores - 1));
}

TEST_CASE("every documented key is read", "[config]") {
  TempFile f(R"(
data_dir = "/tmp/x"
socket_path = "/tmp/x.sock"
socket_mode = "0600"
log_level = "debug"
[limits]
max_key_bytes = 100
max_value_bytes = 200
max_request_bytes = 3000
max_txn_ops = 4
max_response_bytes = 5000
max_watchers = 6
max_connections = 12
[server]
threads = 3
[storage]
cache_size_mb = 7
log_file_max_mb = 8
checkpoint_interval_ms = 1500
checkpoint_log_mb = 3
compaction_batch_rows = 9
max_batch_entries = 10
[watch]
progress_interval_ms = 11
batch_bytes = 2048
)");
  Config c;
  REQUIRE(load_config_file(f.path, true, c).ok());
  CHECK(c.data_dir == "/tmp/x");
  CHECK(c.effective_socket_path() == "/tmp/x.sock");
  CHECK(c.socket_mode == 0600);
  CHECK(c.log_level == "debug");
  CHECK(c.limits.max_key_bytes == 100);
  CHECK(c.limits.max_value_bytes == 200);
  CHECK(c.limits.max_request_bytes == 3000);
  CHECK(c.limits.max_txn_ops == 4);
  CHECK(c.limits.max_response_bytes == 5000);
  CHECK(c.limits.max_watchers == 6);
  CHECK(c.max_connections == 12);
  CHECK(c.server_threads == 3);
  CHECK(c.effective_server_threads() == 3);
  CHECK(c.cache_size_mb == 7);
  CHECK(c.log_file_max_mb == 8);
  CHECK(c.checkpoint_interval_ms == 1500);
  CHECK(c.checkpoint_log_mb == 3);
  CHECK(c.compaction_batch_rows == 9);
  CHECK(c.max_batch_entries == 10);
  CHECK(c.watch_progress_interval_ms == 11);
  CHECK(c.watch_batch_bytes == 2048);
}

TEST_CASE("unknown keys, wrong types and bad values are errors that name the key", "[config]") {
  struct Case {
    const char* text;
    const char* needle;
  };
  for (auto [text, needle] : {
           Case{"data_dri = \"x\"\n", "unknown key data_dri"},
           Case{"[limits]\nmax_keys = 1\n", "unknown key limits.max_keys"},
           Case{"[limit]\nmax_key_bytes = 1\n", "unknown table [limit]"},
           Case{"[limits]\nmax_key_bytes = \"big\"\n", "limits.max_key_bytes: must be an integer"},
           Case{"[limits]\nmax_txn_ops = 0\n", "limits.max_txn_ops: must be at least 1"},
           Case{"socket_mode = \"rw\"\n", "not an octal mode"},
           Case{"socket_mode = 660\n", "socket_mode"},
           Case{"data_dir = \n", ":1:"},
           Case{"[server]\nthreads = 65\n", "server.threads: must be at most 64"},
       }) {
    TempFile f(text);
    Config c;
    auto st = load_config_file(f.path, true, c);
    INFO(text);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == ErrorCode::invalid_argument);
    CHECK_THAT(st.error().message, Catch::Contains(needle));
  }
}

TEST_CASE("a missing file is an error only when it was asked for", "[config]") {
  Config c;
  CHECK(load_config_file("/nonexistent/keel.toml", false, c).ok());
  auto st = load_config_file("/nonexistent/keel.toml", true, c);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.error().message, Catch::Contains("/nonexistent/keel.toml"));
}

TEST_CASE(
    "role = learner: initial_cluster names the voters, a peer address is required, and a "
    "learner named among the voters or an unknown role is refused by name",
    "[config][learner]") {
  Config c;
  c.name = "host7";
  c.role = "learner";
  c.initial_cluster = "a=127.0.0.1:2380,b=127.0.0.1:2381,c=127.0.0.1:2382";
  auto no_addr = agent::node_options(c);
  REQUIRE_FALSE(no_addr);
  CHECK_THAT(no_addr.error().message, Catch::Contains("advertise_peer"));
  c.advertise_peer = "127.0.0.1:2399";
  auto o = agent::node_options(c);
  REQUIRE(o);
  CHECK(o->relay_learner);
  CHECK(o->listen_peer == "127.0.0.1:2399");
  CHECK(o->advertise_peer == "127.0.0.1:2399");
  CHECK(o->initial_members.size() == 3);
  c.name = "b";
  auto named = agent::node_options(c);
  REQUIRE_FALSE(named);
  CHECK_THAT(named.error().message, Catch::Contains("voters only"));
  c.name = "host7";
  c.initial_cluster.clear();
  auto alone = agent::node_options(c);
  REQUIRE_FALSE(alone);
  CHECK_THAT(alone.error().message, Catch::Contains("initial_cluster"));
  c.role = "observer";
  auto bad = agent::node_options(c);
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("cluster.role"));
}
