// MvccStore::apply records the raft applied index and configuration in the apply txn.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster/storage/wt_internal.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

using raft::ConfState;

TEST_CASE("applied: index and configuration move with the batch and survive reopen", "[applied]") {
  test::Store s;
  CHECK(s.store().applied_index() == 0);
  CHECK(s.store().applied_conf() == ConfState{});

  // A batch of no commands: the leader's no-op and a conf change at 1..2.
  const ConfState c1{{1, 2, 3}, {}};
  REQUIRE(s.store().apply({}, 2, &c1).empty());
  CHECK(s.store().applied_index() == 2);
  CHECK(s.store().applied_conf() == c1);
  CHECK(s.rev() == 1);

  // Commands at 3 and 4, then a no-op at 5: applied 5, configuration unchanged.
  Command a = test::put_req("a", "1"), b = test::put_req("b", "2");
  auto r = s.store().apply({{3, &a}, {4, &b}}, 5, nullptr);
  REQUIRE(r.size() == 2);
  CHECK(r[0].ok());
  CHECK(r[1].ok());
  CHECK(s.store().applied_index() == 5);
  CHECK(s.store().applied_conf() == c1);
  CHECK(s.rev() == 3);

  // A failing command in the batch (the batch is re-run without it) with a conf change.
  Command bad = PutRequest{"missing", "", 0, false, true, false};  // ignore_value, no key
  Command c = test::put_req("c", "3");
  const ConfState c2{{1, 2, 3}, {4}};
  r = s.store().apply({{6, &bad}, {7, &c}}, 8, &c2);
  REQUIRE(r.size() == 2);
  CHECK(r[0].error().code == ErrorCode::key_not_found);
  CHECK(r[1].ok());
  CHECK(s.store().applied_index() == 8);
  CHECK(s.store().applied_conf() == c2);

  // The old overload: the last command index, configuration unchanged.
  Command d = test::put_req("d", "4");
  REQUIRE(s.store().apply({{9, &d}})[0].ok());
  CHECK(s.store().applied_index() == 9);
  CHECK(s.store().applied_conf() == c2);

  s.reopen();
  CHECK(s.store().applied_index() == 9);
  CHECK(s.store().applied_conf() == c2);
  CHECK(s.get("c") == "3");
  CHECK(s.get("d") == "4");
  CHECK(s.rev() == 5);
}

TEST_CASE("applied: a state row without a configuration (older format) still decodes",
          "[applied]") {
  std::string old;
  wt::put_varint(old, 7);
  wt::put_varint(old, 3);
  wt::put_varint(old, 42);
  wt::State st;
  st.conf.voters = {9};
  REQUIRE(wt::decode_state(old, &st));
  CHECK(st.revision == 7);
  CHECK(st.compact_revision == 3);
  CHECK(st.applied_index == 42);
  CHECK(st.conf == ConfState{});
  st.conf = ConfState{{1, 5}, {7}};
  wt::State back;
  REQUIRE(wt::decode_state(wt::encode_state(st), &back));
  CHECK(back.conf == st.conf);
  CHECK(back.applied_index == 42);
  CHECK_FALSE(wt::decode_state(wt::encode_state(st) + "x", &back));
}

// Unsynced applies lost to kill -9 are lost as whole batches: after reopen the state, the
// applied index and the applied configuration all describe the same batch.
TEST_CASE("applied: state, index and configuration agree after kill -9", "[applied][crash]") {
  test::TempDir dir;
  auto conf_at = [](uint64_t i) { return ConfState{{1, 2, 3 + i % 4}, {}}; };
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto e = open_engine(test::test_options(dir.path));
    if (!e) ::_exit(2);
    MvccStore& store = e.value()->store();
    for (uint64_t i = 1;; i++) {
      // Entry 2i-1 is a put of "n" = i, entry 2i a conf change.
      Command put = test::put_req("n", std::to_string(i));
      ConfState conf = conf_at(i);
      auto r = store.apply({{2 * i - 1, &put}}, 2 * i, &conf);
      if (r.size() != 1 || !r[0].ok()) ::_exit(3);
      if (i % 64 == 0 && ::write(fds[1], &i, sizeof i) != sizeof i) ::_exit(4);
    }
  }
  ::close(fds[1]);
  uint64_t acked = 0, got = 0;
  while (acked < 2000 && ::read(fds[0], &got, sizeof got) == sizeof got)
    acked = got;
  REQUIRE(acked >= 2000);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  ::close(fds[0]);

  auto e = open_engine(test::test_options(dir.path));
  REQUIRE(e.ok());
  MvccStore& store = e.value()->store();
  const uint64_t applied = store.applied_index();
  INFO("applied " << applied);
  if (applied == 0) {
    CHECK(store.applied_conf() == ConfState{});
    return;
  }
  REQUIRE(applied % 2 == 0);
  const uint64_t i = applied / 2;
  CHECK(store.applied_conf() == conf_at(i));
  CHECK(store.current_revision() == static_cast<int64_t>(i) + 1);
  auto rd = store.reader();
  RangeRequest req;
  req.key = "n";
  auto resp = rd->range(req, 1 << 20);
  REQUIRE(resp.ok());
  REQUIRE(resp->kvs.size() == 1);
  CHECK(resp->kvs[0].value == std::to_string(i));
}

}  // namespace
}  // namespace keel::storage
