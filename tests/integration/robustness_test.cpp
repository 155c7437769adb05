// Bad input gets a typed error naming what was wrong; nothing stored is lost; the agent keeps
// serving. Start-up refuses what it cannot safely do, with a clear message.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "harness.hpp"

using namespace keel;
using namespace keel::test;
using namespace keel::storage;

namespace {

const char* kSmallLimits = R"(
[limits]
max_key_bytes = 64
max_value_bytes = 1024
max_request_bytes = 4096
max_txn_ops = 4
)";

int raw_connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{10, 0};  // bounded reads
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Reads until EOF (or error/timeout); true if the peer closed the connection.
bool closed_by_peer(int fd) {
  char buf[4096];
  for (int i = 0; i < 10000; ++i) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
  return false;
}

}  // namespace

TEST_CASE("every limit and malformed request gets its typed error", "[integration][limits]") {
  TempDir dir;
  Keeld keeld(dir.path, kSmallLimits);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  REQUIRE(c->put(put("keep", "me")).ok());

  auto code_of = [](const auto& result) {
    return result.ok() ? ErrorCode::ok : result.error().code;
  };

  CHECK(code_of(c->put(put("", "v"))) == ErrorCode::empty_key);
  auto big_key = c->put(put(std::string(65, 'k'), "v"));
  CHECK(code_of(big_key) == ErrorCode::key_too_large);
  CHECK_THAT(big_key.error().message, Catch::Contains("max_key_bytes"));
  CHECK(code_of(c->put(put("k", std::string(1025, 'v')))) == ErrorCode::value_too_large);

  TxnRequest big;
  for (int i = 0; i < 4; ++i)
    big.success.emplace_back(put("k" + std::to_string(i), std::string(1000, 'v')));
  auto too_big = c->txn(big);
  CHECK(code_of(too_big) == ErrorCode::request_too_large);
  CHECK_THAT(too_big.error().message, Catch::Contains("max_request_bytes"));

  TxnRequest many;
  for (int i = 0; i < 5; ++i)
    many.success.emplace_back(put("m" + std::to_string(i), "v"));
  CHECK(code_of(c->txn(many)) == ErrorCode::too_many_ops);

  TxnRequest dup;
  dup.success.emplace_back(put("same", "1"));
  dup.success.emplace_back(put("same", "2"));
  CHECK(code_of(c->txn(dup)) == ErrorCode::duplicate_key);

  RangeRequest backwards;
  backwards.key = "b";
  backwards.range_end = "a";
  CHECK(code_of(c->range(backwards)) == ErrorCode::range_end_before_key);
  DeleteRangeRequest del_backwards;
  del_backwards.key = "b";
  del_backwards.range_end = "a";
  CHECK(code_of(c->delete_range(del_backwards)) == ErrorCode::range_end_before_key);

  PutRequest leased = put("l", "v");
  leased.lease = 5;
  CHECK(code_of(c->put(leased)) == ErrorCode::lease_not_found);

  PutRequest ignore = put("missing", "");
  ignore.ignore_value = true;
  CHECK(code_of(c->put(ignore)) == ErrorCode::key_not_found);

  RangeRequest future;
  future.key = "keep";
  future.revision = 1000;
  auto fut = c->range(future);
  CHECK(code_of(fut) == ErrorCode::future_revision);

  // Nothing above was stored, and nothing stored was lost.
  RangeRequest all;
  all.key = std::string(1, '\0');
  all.range_end = std::string(1, '\0');
  auto r = c->range(all);
  REQUIRE(r.ok());
  REQUIRE(r->kvs.size() == 1);
  CHECK(r->kvs[0].value == "me");
  CHECK(r->revision == 2);
}

TEST_CASE("garbage and oversized frames close that connection only", "[integration][limits]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  REQUIRE(c->put(put("before", "1")).ok());

  {  // random bytes
    int fd = raw_connect(keeld.socket());
    REQUIRE(fd >= 0);
    std::string garbage(65536, '\0');
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& ch : garbage) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      ch = static_cast<char>(x);
    }
    ssize_t n = write(fd, garbage.data(), garbage.size());
    (void)n;
    CHECK(closed_by_peer(fd));
    close(fd);
  }
  {  // a frame header announcing a 1 GiB segment: refused before it is read
    int fd = raw_connect(keeld.socket());
    REQUIRE(fd >= 0);
    uint32_t header[2] = {0, 128u * 1024 * 1024};  // one segment of 128 Mi words
    ssize_t n = write(fd, header, sizeof(header));
    (void)n;
    CHECK(closed_by_peer(fd));
    close(fd);
  }
  for (int i = 0; i < 200; ++i) {  // connections opened and dropped mid-way
    int fd = raw_connect(keeld.socket());
    REQUIRE(fd >= 0);
    close(fd);
  }
  CHECK(::kill(keeld.pid(), 0) == 0);
  // The first client's connection still works, and so does a new one.
  REQUIRE(c->put(put("after", "2")).ok());
  auto c2 = keeld.client();
  REQUIRE(c2);
  RangeRequest get;
  get.key = "before";
  auto r = c2->range(get);
  REQUIRE(r.ok());
  REQUIRE(r->kvs.size() == 1);
  CHECK(r->kvs[0].value == "1");
}

TEST_CASE("start-up: stale socket replaced, live socket, locked data dir, bad config",
          "[integration][startup]") {
  TempDir dir;
  {
    // A socket file left behind by a dead process.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = dir.path + "/keel.sock";
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    close(fd);
  }
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  CHECK_THAT(keeld.log(), Catch::Contains("replacing stale socket"));

  TempDir other;
  // Same socket, another data dir: the live agent is not disturbed.
  Keeld second(other.path);
  CHECK(second.start_expect_exit({"--socket", keeld.socket()}) == 1);
  CHECK_THAT(second.log(), Catch::Contains("another agent is serving"));
  // Same data dir, another socket: WiredTiger's lock refuses it.
  Keeld third(other.path);
  CHECK(third.start_expect_exit({"--data-dir", keeld.data_dir()}) == 1);
  CHECK_THAT(third.log(), Catch::Contains(keeld.data_dir()));
  CHECK(keeld.client()->put(put("still", "serving")).ok());

  TempDir bad;
  // A data directory that is a regular file.
  std::string file = bad.path + "/not-a-dir";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    std::fclose(f);
  }
  Keeld unusable(bad.path);
  CHECK(unusable.start_expect_exit({"--data-dir", file}) == 1);
  CHECK_THAT(unusable.log(), Catch::Contains(file));

  Keeld typo(bad.path, "[limits]\nmax_key_byte = 10\n");
  CHECK(typo.start_expect_exit() == 1);
  CHECK_THAT(typo.log(), Catch::Contains("unknown key limits.max_key_byte"));
  Keeld missing(bad.path);
  CHECK(missing.start_expect_exit({"--config", bad.path + "/nope.toml"}) == 1);
  CHECK_THAT(missing.log(), Catch::Contains("does not exist"));
}

TEST_CASE("a connection over limits.max_connections is told why, logged and closed",
          "[integration][limits]") {
  TempDir dir;
  Keeld keeld(dir.path, "[limits]\nmax_connections = 2\n");
  REQUIRE(keeld.start());
  auto c1 = keeld.client();
  REQUIRE(c1);
  // start() probed the socket; wait (bounded) until the agent has seen that probe hang up.
  uint64_t open = 0;
  for (int i = 0; i < 100; ++i) {
    auto st = c1->status();
    REQUIRE(st.ok());
    open = st->connections;
    if (open == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(open == 1);
  auto c2 = keeld.client();
  REQUIRE(c2);
  auto both = c2->status();
  REQUIRE(both.ok());
  CHECK(both->connections == 2);

  auto c3 = keeld.client();
  REQUIRE(c3);  // the socket accepts; the agent refuses the calls
  auto refused = c3->status();
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.error().message, Catch::Contains("too many connections"));
  CHECK_THAT(refused.error().message, Catch::Contains("limits.max_connections"));
  // The refused connection is closed by the agent.
  int fd = raw_connect(keeld.socket());
  REQUIRE(fd >= 0);
  CHECK(closed_by_peer(fd));
  close(fd);
  CHECK_THAT(keeld.log(), Catch::Contains("refused: too many connections"));

  // The open ones are unaffected; a slot freed by a client that leaves is usable again.
  CHECK(c1->put(put("k", "v")).ok());
  c2.reset();
  c3.reset();
  bool admitted = false;
  for (int i = 0; i < 100 && !admitted; ++i) {  // the agent sees the hang-up asynchronously
    auto c4 = keeld.client();
    admitted = c4 && c4->status().ok();
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(admitted);
}
