#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {
using test::Store;

LogEntry entry(uint64_t index, uint64_t term, std::string data = "") {
  if (data.empty()) data = "e" + std::to_string(index) + "t" + std::to_string(term);
  return LogEntry{index, term, std::move(data)};
}

std::vector<LogEntry> entries(LogStore& log, uint64_t lo, uint64_t hi,
                              size_t max_bytes = SIZE_MAX) {
  auto r = log.entries(lo, hi, max_bytes);
  if (!r) FAIL(r.error().message);
  return std::move(r).value();
}

TEST_CASE("log: append + read + truncate-and-append + hard state + compact + reopen", "[log]") {
  Store s;
  LogStore& log = s.engine->log();
  CHECK(log.first_index() == 1);
  CHECK(log.last_index() == 0);
  CHECK(log.hard_state() == HardState{});
  CHECK(entries(log, 1, 1).empty());

  std::vector<LogEntry> first;
  for (uint64_t i = 1; i <= 10; i++)
    first.push_back(entry(i, 1));
  HardState hs{1, 3, 0};
  REQUIRE(log.append(first, &hs).ok());
  CHECK(log.last_index() == 10);
  CHECK(log.hard_state() == hs);
  CHECK(entries(log, 1, 11) == first);
  CHECK(entries(log, 4, 6) == std::vector<LogEntry>{first[3], first[4]});
  // max_bytes: at least one entry, then as many as fit.
  CHECK(entries(log, 1, 11, 0).size() == 1);
  CHECK(entries(log, 1, 11, 10).size() == 2);  // "e1t1" + "e2t1" = 8 bytes, a third is 12
  CHECK(s.engine->stats().log_syncs == 1);
  CHECK(s.engine->stats().log_entries == 10);

  // Out of bounds.
  CHECK(log.entries(1, 12).error().code == ErrorCode::invalid_argument);
  CHECK_FALSE(log.append({entry(12, 1)}).ok());  // a gap

  // Truncate-and-append from 7 with a new term.
  REQUIRE(log.append({entry(7, 2), entry(8, 2)}).ok());
  CHECK(log.last_index() == 8);
  auto tail = entries(log, 6, 9);
  CHECK(tail == std::vector<LogEntry>{first[5], entry(7, 2), entry(8, 2)});

  // Hard state alone.
  HardState hs2{2, 0, 5};
  REQUIRE(log.append({}, &hs2).ok());
  CHECK(log.hard_state() == hs2);

  // Compaction of the prefix.
  REQUIRE(log.compact_prefix(5).ok());
  CHECK(log.first_index() == 5);
  CHECK(log.entries(4, 6).error().code == ErrorCode::compacted);
  CHECK(entries(log, 5, 9).size() == 4);
  CHECK_FALSE(log.append({entry(4, 2)}).ok());  // below the first index

  s.reopen();
  LogStore& again = s.engine->log();
  CHECK(again.first_index() == 5);
  CHECK(again.last_index() == 8);
  CHECK(again.hard_state() == hs2);
  CHECK(entries(again, 5, 9) ==
        std::vector<LogEntry>{first[4], first[5], entry(7, 2), entry(8, 2)});
  // Compacting past the end empties the log (as a snapshot install does).
  REQUIRE(again.compact_prefix(20).ok());
  CHECK(again.first_index() == 20);
  CHECK(again.last_index() == 19);
  REQUIRE(again.append({entry(20, 3)}).ok());
  s.reopen();
  CHECK(s.engine->log().first_index() == 20);
  CHECK(s.engine->log().last_index() == 20);
}

// A child process appends with sync and acknowledges each index over a pipe; it is killed
// with SIGKILL mid-stream. Every acknowledged entry must be there after reopen.
TEST_CASE("log: acknowledged appends survive kill -9", "[log][crash]") {
  test::TempDir dir;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto e = open_engine(test::test_options(dir.path));
    if (!e) ::_exit(2);
    LogStore& log = e.value()->log();
    for (uint64_t i = 1;; i++) {
      HardState hs{1, 1, i};
      if (!log.append({entry(i, 1, std::string(100, static_cast<char>('a' + i % 26)))}, &hs)) {
        ::_exit(3);
      }
      if (::write(fds[1], &i, sizeof i) != sizeof i) ::_exit(4);
    }
  }
  ::close(fds[1]);
  uint64_t acked = 0, got = 0;
  while (acked < 300 && ::read(fds[0], &got, sizeof got) == sizeof got)
    acked = got;
  REQUIRE(acked >= 300);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  while (::read(fds[0], &got, sizeof got) == sizeof got)
    acked = got;  // acks in the pipe
  ::close(fds[0]);

  auto e = open_engine(test::test_options(dir.path));
  REQUIRE(e.ok());
  LogStore& log = e.value()->log();
  CHECK(log.last_index() >= acked);
  CHECK(log.hard_state().commit >= acked);
  auto all = log.entries(1, acked + 1);
  REQUIRE(all.ok());
  REQUIRE(all->size() == acked);
  for (uint64_t i = 1; i <= acked; i++) {
    CHECK(all.value()[i - 1] == entry(i, 1, std::string(100, static_cast<char>('a' + i % 26))));
  }
}

}  // namespace
}  // namespace keel::storage
