#include <wiredtiger.h>

#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {
using test::all_keys;
using test::Store;

Result<CommandResult> compact(Store& s, int64_t rev) {
  return s.apply(CompactRequest{rev});
}

// Rows physically present in a table, read with WiredTiger directly (the engine is closed).
int64_t count_rows(const std::string& dir, const char* table) {
  WT_CONNECTION* conn = nullptr;
  REQUIRE(wiredtiger_open(dir.c_str(), nullptr, "log=(enabled=true)", &conn) == 0);
  WT_SESSION* session = nullptr;
  REQUIRE(conn->open_session(conn, nullptr, nullptr, &session) == 0);
  WT_CURSOR* c = nullptr;
  REQUIRE(session->open_cursor(session, table, nullptr, nullptr, &c) == 0);
  int64_t n = 0;
  while (c->next(c) == 0)
    n++;
  conn->close(conn, nullptr);
  return n;
}

TEST_CASE("compaction: edges", "[compaction]") {
  Store s;
  // compact 0 on a new store: at or below the compact revision (0).
  CHECK(compact(s, 0).error().code == ErrorCode::compacted);
  auto fut = compact(s, 2);
  REQUIRE_FALSE(fut.ok());
  CHECK(fut.error().code == ErrorCode::future_revision);
  CHECK(fut.error().current_revision == 1);
  REQUIRE(compact(s, 1).ok());
  CHECK(s.store().compact_revision() == 1);
  auto again = compact(s, 1);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().code == ErrorCode::compacted);
  CHECK(again.error().compact_revision == 1);

  s.put("a", "1");  // 2
  s.put("a", "2");  // 3
  s.put("b", "1");  // 4
  s.del("b");       // 5
  s.put("c", "1");  // 6
  s.put("a", "3");  // 7
  auto cr = compact(s, 5);
  REQUIRE(cr.ok());
  CHECK(std::get<CompactResponse>(cr.value()).revision == 7);
  CHECK(s.rev() == 7);  // compaction does not advance the revision
  CHECK(compact(s, 4).error().code == ErrorCode::compacted);
  // Reads below the compact revision fail at once; at it they work.
  auto below = s.try_range(all_keys(4));
  REQUIRE_FALSE(below.ok());
  CHECK(below.error().code == ErrorCode::compacted);
  CHECK(below.error().compact_revision == 5);
  s.store().wait_compaction_idle();
  CHECK(s.store().compaction_idle());
  auto at = s.range(all_keys(5));
  REQUIRE(at.kvs.size() == 1);  // a@3; b was deleted at 5
  CHECK(at.kvs[0] == KeyValue{"a", "2", 2, 3, 2, 0});
  CHECK(s.range(all_keys(6)).kvs.size() == 2);
  CHECK(s.range("a", "", 7).kvs.at(0).version == 3);

  // Physically left: a@3 (the newest version <= 5), c@6, a@7; b's tombstone and b@4 and
  // a@2 are gone.
  s.close();
  CHECK(count_rows(s.dir.path, "table:history") == 3);
  CHECK(count_rows(s.dir.path, "table:index") == 3);
  s.open();

  // Compact at the current revision.
  REQUIRE(compact(s, 7).ok());
  s.store().wait_compaction_idle();
  CHECK(s.range(all_keys(7)).kvs.size() == 2);
  CHECK(compact(s, 8).error().code == ErrorCode::future_revision);
  s.close();
  CHECK(count_rows(s.dir.path, "table:history") == 2);
  CHECK(count_rows(s.dir.path, "table:index") == 2);
  s.open();
  CHECK(s.store().compact_revision() == 7);
  CHECK(s.try_range(all_keys(6)).error().code == ErrorCode::compacted);
  CHECK(s.range(all_keys(7)).kvs.size() == 2);
}

TEST_CASE("compaction: random workload - kept versions + history after restart", "[compaction]") {
  EngineOptions o = test::test_options("");
  o.compaction_batch_rows = 7;  // many chunks
  Store s(o);
  test::Model m;
  test::random_workload(s, m, 200, 11);
  int64_t c1 = m.rev() / 3;
  REQUIRE(compact(s, c1).ok());
  test::random_workload(s, m, 50, 12);
  int64_t c2 = m.rev() / 2;
  REQUIRE(compact(s, c2).ok());  // may arrive while the first is still running
  s.store().wait_compaction_idle();
  for (int64_t r = 1; r < c2; r++)
    CHECK(s.try_range(all_keys(r)).error().code == ErrorCode::compacted);
  test::check_all_revisions(s, m, c2);
  // Events after the compact revision are all there, with prev_kv.
  int64_t events = 0;
  auto last = s.rd->events(c2 + 1, 0, std::string(1, '\0'), std::string(1, '\0'), true, SIZE_MAX,
                           [&](const Event& e) {
                             events++;
                             auto before = m.at[static_cast<size_t>(e.kv.mod_revision - 1)];
                             auto it = before.find(e.kv.key);
                             if (it == before.end()) {
                               CHECK_FALSE(e.prev_kv.has_value());
                             } else {
                               REQUIRE(e.prev_kv.has_value());
                               CHECK(*e.prev_kv == it->second);
                             }
                             return true;
                           });
  REQUIRE(last.ok());
  CHECK(*last == m.rev());
  CHECK(events > 0);
  s.reopen();
  test::check_all_revisions(s, m, c2);
  test::random_workload(s, m, 30, 13);
  test::check_all_revisions(s, m, c2);
}

TEST_CASE("compaction: interrupted work resumes after reopen", "[compaction]") {
  EngineOptions o = test::test_options("");
  o.compaction_batch_rows = 1;
  Store s(o);
  test::Model m;
  test::random_workload(s, m, 300, 21);
  int64_t c = m.rev() - 5;
  REQUIRE(compact(s, c).ok());
  s.reopen();  // closes while the compactor is (likely) mid-way
  s.store().wait_compaction_idle();
  CHECK(s.store().compact_revision() == c);
  test::check_all_revisions(s, m, c);
}

std::vector<Event> collect(Store& s, int64_t from, int64_t to, const std::string& key,
                           const std::string& end, bool prev, size_t max_bytes, int64_t* last) {
  std::vector<Event> out;
  auto r = s.rd->events(from, to, key, end, prev, max_bytes, [&](const Event& e) {
    out.push_back(e);
    return true;
  });
  REQUIRE(r.ok());
  *last = *r;
  return out;
}

TEST_CASE("events: ordering + filtering + prev_kv + max_bytes + stop + compacted", "[events]") {
  Store s;
  s.put("a", "1");   // 2
  s.put("b", "1");   // 3
  s.put("a", "22");  // 4
  s.del("a");        // 5
  s.put("a", "3");   // 6
  TxnRequest t;      // 7: two events
  t.success.push_back(test::put_req("c", "x"));
  t.success.push_back(test::put_req("b", "2"));
  s.txn(t);
  int64_t last = 0;
  auto all = collect(s, 1, 0, std::string(1, '\0'), std::string(1, '\0'), true, SIZE_MAX, &last);
  CHECK(last == 7);
  REQUIRE(all.size() == 7);
  CHECK(all[0] == Event{EventType::put, KeyValue{"a", "1", 2, 2, 1, 0}, std::nullopt});
  CHECK(all[2].prev_kv == KeyValue{"a", "1", 2, 2, 1, 0});
  CHECK(all[3].type == EventType::del);
  CHECK(all[3].kv.key == "a");
  CHECK(all[3].kv.mod_revision == 5);
  CHECK(all[3].prev_kv->value == "22");
  CHECK_FALSE(all[4].prev_kv.has_value());  // recreated after a delete
  CHECK(all[5].kv.key == "c");
  CHECK(all[6].kv.key == "b");
  CHECK(all[6].prev_kv->value == "1");

  // Key filter; without prev_kv.
  auto only_a = collect(s, 1, 0, "a", "", false, SIZE_MAX, &last);
  CHECK(only_a.size() == 4);
  CHECK_FALSE(only_a[1].prev_kv.has_value());
  CHECK(last == 7);
  // A window of revisions.
  auto window = collect(s, 3, 4, "a", "c", false, SIZE_MAX, &last);
  CHECK(window.size() == 2);
  CHECK(last == 4);
  // Nothing new: the result is the current revision.
  CHECK(collect(s, 8, 0, "a", "", false, SIZE_MAX, &last).empty());
  CHECK(last == 7);

  // max_bytes stops at the end of the revision where it was reached, never inside one.
  auto small = collect(s, 7, 0, std::string(1, '\0'), std::string(1, '\0'), false, 1, &last);
  CHECK(small.size() == 2);
  CHECK(last == 7);
  auto first = collect(s, 2, 0, std::string(1, '\0'), std::string(1, '\0'), false, 1, &last);
  CHECK(first.size() == 1);
  CHECK(last == 2);
  // Replay page by page gives the same stream.
  std::vector<Event> paged;
  for (int64_t from = 1; from <= 7;) {
    auto page = collect(s, from, 0, std::string(1, '\0'), std::string(1, '\0'), true, 3, &last);
    paged.insert(paged.end(), page.begin(), page.end());
    REQUIRE(last >= from);
    from = last + 1;
  }
  CHECK(paged == all);

  // visit returning false stops at once; the result says which revision is complete.
  int n = 0;
  auto stop = s.rd->events(7, 0, std::string(1, '\0'), std::string(1, '\0'), false, SIZE_MAX,
                           [&](const Event&) { return ++n < 1; });
  CHECK(*stop == 6);  // revision 7 has a second event not visited
  n = 0;
  auto stop2 = s.rd->events(7, 0, "c", "", false, SIZE_MAX, [&](const Event&) { return ++n < 1; });
  CHECK(*stop2 == 7);  // the only matching event of 7 was visited

  REQUIRE(compact(s, 4).ok());
  auto c = s.rd->events(3, 0, "a", "", false, SIZE_MAX, [](const Event&) { return true; });
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == ErrorCode::compacted);
  CHECK(c.error().compact_revision == 4);
  // From the compact revision itself is served, as etcd does (clients resume there).
  CHECK(s.rd->events(4, 0, "a", "", false, SIZE_MAX, [](const Event&) { return true; }).ok());
  s.store().wait_compaction_idle();
  auto after = collect(s, 5, 0, std::string(1, '\0'), std::string(1, '\0'), true, SIZE_MAX, &last);
  CHECK(after.size() == 4);
  CHECK(after[0].prev_kv->value == "22");  // the newest version <= 4 survives compaction
}

}  // namespace
}  // namespace keel::storage
