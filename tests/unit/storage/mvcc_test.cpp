#include <sys/stat.h>

#include <algorithm>
#include <fstream>

#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {
using test::all_keys;
using test::Store;

TEST_CASE("mvcc: revisions + versions + tombstones and recreation", "[mvcc]") {
  Store s;
  CHECK(s.rev() == 1);
  CHECK(s.store().compact_revision() == 0);
  CHECK(s.store().applied_index() == 0);

  CHECK(s.put("a", "1").revision == 2);
  auto kv = s.range("a").kvs.at(0);
  CHECK(kv == KeyValue{"a", "1", 2, 2, 1, 0});
  CHECK(s.put("a", "2", 7).revision == 3);
  CHECK(s.range("a").kvs.at(0) == KeyValue{"a", "2", 2, 3, 2, 7});

  auto d = s.del("a", "", true);
  CHECK(d.revision == 4);
  CHECK(d.deleted == 1);
  REQUIRE(d.prev_kvs.size() == 1);
  CHECK(d.prev_kvs[0].value == "2");
  CHECK(s.range("a").kvs.empty());
  CHECK(s.range("a").count == 0);

  // Deleting nothing does not advance the revision.
  auto none = s.del("a");
  CHECK(none.deleted == 0);
  CHECK(none.revision == 4);
  CHECK(s.rev() == 4);

  CHECK(s.put("a", "3").revision == 5);
  CHECK(s.range("a").kvs.at(0) == KeyValue{"a", "3", 5, 5, 1, 0});
  // Old revisions still read as they were.
  CHECK(s.get("a", 1) == "<none>");
  CHECK(s.range("a", "", 2).kvs.at(0) == KeyValue{"a", "1", 2, 2, 1, 0});
  CHECK(s.range("a", "", 3).kvs.at(0) == KeyValue{"a", "2", 2, 3, 2, 7});
  CHECK(s.get("a", 4) == "<none>");
  CHECK(s.range("a", "", 5).kvs.at(0) == KeyValue{"a", "3", 5, 5, 1, 0});

  auto fut = s.try_range(test::all_keys(6));
  REQUIRE_FALSE(fut.ok());
  CHECK(fut.error().code == ErrorCode::future_revision);
  CHECK(fut.error().current_revision == 5);
}

TEST_CASE("mvcc: put prev_kv + ignore_value and ignore_lease", "[mvcc]") {
  Store s;
  PutRequest p = test::put_req("k", "v1", 3);
  p.prev_kv = true;
  auto r = s.apply(p);
  REQUIRE(r.ok());
  CHECK_FALSE(std::get<PutResponse>(r.value()).prev_kv.has_value());
  p.value = "v2";
  r = s.apply(p);
  CHECK(std::get<PutResponse>(r.value()).prev_kv->value == "v1");

  PutRequest iv = test::put_req("k", "", 9);
  iv.ignore_value = true;
  REQUIRE(s.apply(iv).ok());
  CHECK(s.range("k").kvs.at(0) == KeyValue{"k", "v2", 2, 4, 3, 9});
  PutRequest il = test::put_req("k", "v3");
  il.ignore_lease = true;
  REQUIRE(s.apply(il).ok());
  CHECK(s.range("k").kvs.at(0) == KeyValue{"k", "v3", 2, 5, 4, 9});

  int64_t before = s.rev();
  iv.key = "missing";
  auto miss = s.apply(iv);
  REQUIRE_FALSE(miss.ok());
  CHECK(miss.error().code == ErrorCode::key_not_found);
  il.key = "missing";
  CHECK(s.apply(il).error().code == ErrorCode::key_not_found);
  CHECK(s.rev() == before);
  CHECK(s.range("missing").kvs.empty());
}

TEST_CASE("mvcc: range forms: single + key to end + from-key + prefix + escaped zero bytes",
          "[mvcc]") {
  Store s;
  for (std::string k : {"a", "ab", "abc", "b", "ba", "c"})
    s.put(k, "v" + k);
  s.put(std::string("a\0", 2), "zero");
  s.put(std::string("a\0\0", 3), "zerozero");
  auto keys = [](const RangeResponse& r) {
    std::vector<std::string> out;
    for (auto& kv : r.kvs)
      out.push_back(kv.key);
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(keys(s.range("ab")) == V{"ab"});
  CHECK(keys(s.range("a", "b")) ==
        V{"a", std::string("a\0", 2), std::string("a\0\0", 3), "ab", "abc"});
  CHECK(keys(s.range("b", std::string(1, '\0'))) == V{"b", "ba", "c"});
  CHECK(keys(s.range("ab", test::prefix_end_str("ab"))) == V{"ab", "abc"});
  CHECK(s.range(all_keys()).count == 8);
  CHECK(keys(s.range("b", "b")).empty());
  // The same reads at an older revision go through the index.
  s.put("zz", "later");
  int64_t old = s.rev() - 1;
  CHECK(keys(s.range("a", "b", old)) ==
        V{"a", std::string("a\0", 2), std::string("a\0\0", 3), "ab", "abc"});
  CHECK(keys(s.range("b", std::string(1, '\0'), old)) == V{"b", "ba", "c"});
  CHECK(keys(s.range(std::string("a\0", 2), "", old)) == V{std::string("a\0", 2)});
  CHECK(s.range(all_keys(old)).count == 8);
}

// kvs for sort tests: version, create and mod revision and value all differ in order.
void sort_fixture(Store& s) {
  s.put("c", "1");  // rev 2
  s.put("a", "3");  // 3
  s.put("b", "2");  // 4
  s.put("c", "5");  // 5: c version 2
  s.put("c", "4");  // 6: c version 3
  s.put("b", "0");  // 7: b version 2
  s.put("d", "9");  // 8
}

TEST_CASE("mvcc: sort by every target and order + with limit", "[mvcc]") {
  Store s;
  sort_fixture(s);
  auto keys = [&](SortTarget t, SortOrder o, int64_t limit, int64_t rev) {
    RangeRequest r = all_keys(rev);
    r.sort_target = t;
    r.sort_order = o;
    r.limit = limit;
    auto resp = s.range(r);
    std::string out;
    for (auto& kv : resp.kvs)
      out += kv.key;
    CHECK(resp.count == 4);
    CHECK(resp.more == (limit > 0 && limit < 4));
    return out;
  };
  for (int64_t rev : {int64_t{0}, int64_t{8}}) {
    // Expected full orders; ties broken by key ascending.
    struct Case {
      SortTarget t;
      SortOrder o;
      std::string want;
    } cases[] = {
        {SortTarget::key, SortOrder::none, "abcd"},
        {SortTarget::key, SortOrder::ascend, "abcd"},
        {SortTarget::key, SortOrder::descend, "dcba"},
        {SortTarget::version, SortOrder::ascend, "adbc"},
        {SortTarget::version, SortOrder::none, "adbc"},  // etcd: none -> ascend
        {SortTarget::version, SortOrder::descend, "cbad"},
        {SortTarget::create, SortOrder::ascend, "cabd"},
        {SortTarget::create, SortOrder::descend, "dbac"},
        {SortTarget::mod, SortOrder::ascend, "acbd"},
        {SortTarget::mod, SortOrder::descend, "dbca"},
        {SortTarget::value, SortOrder::ascend, "bacd"},
        {SortTarget::value, SortOrder::descend, "dcab"},
    };
    for (const auto& c : cases) {
      INFO("target " << int(c.t) << " order " << int(c.o) << " rev " << rev);
      CHECK(keys(c.t, c.o, 0, rev) == c.want);
      CHECK(keys(c.t, c.o, 2, rev) == c.want.substr(0, 2));
      CHECK(keys(c.t, c.o, 4, rev) == c.want);
      CHECK(keys(c.t, c.o, 9, rev) == c.want);
    }
  }
}

TEST_CASE("mvcc: keys_only + count_only and revision filters", "[mvcc]") {
  Store s;
  sort_fixture(s);
  RangeRequest r = all_keys();
  r.keys_only = true;
  auto k = s.range(r);
  REQUIRE(k.kvs.size() == 4);
  for (auto& kv : k.kvs)
    CHECK(kv.value.empty());
  CHECK(k.kvs[2].mod_revision == 6);

  r = all_keys();
  r.count_only = true;
  auto c = s.range(r);
  CHECK(c.kvs.empty());
  CHECK(c.count == 4);

  auto filtered = [&](int64_t min_mod, int64_t max_mod, int64_t min_create, int64_t max_create,
                      int64_t limit = 0) {
    RangeRequest q = all_keys();
    q.min_mod_revision = min_mod;
    q.max_mod_revision = max_mod;
    q.min_create_revision = min_create;
    q.max_create_revision = max_create;
    q.limit = limit;
    auto resp = s.range(q);
    CHECK(resp.count == 4);  // filters do not change the count
    std::string out;
    for (auto& kv : resp.kvs)
      out += kv.key;
    return out;
  };
  CHECK(filtered(6, 0, 0, 0) == "bcd");
  CHECK(filtered(0, 6, 0, 0) == "ac");
  CHECK(filtered(0, 0, 3, 0) == "abd");
  CHECK(filtered(0, 0, 0, 3) == "ac");
  CHECK(filtered(4, 7, 2, 4) == "bc");
  CHECK(filtered(6, 0, 0, 0, 1) == "b");
}

TEST_CASE("mvcc: paging with continue_key keeps memory bounded", "[mvcc]") {
  Store s;
  const int n = 3000;
  std::string value(500, 'v');
  for (int i = 0; i < n; i += 100) {
    TxnRequest t;  // 100 puts per command to keep the test fast
    for (int j = i; j < i + 100; j++) {
      char key[16];
      std::snprintf(key, sizeof key, "key%06d", j);
      t.success.push_back(test::put_req(key, value));
    }
    s.txn(t);
  }
  const size_t page_bytes = 64 * 1024;
  for (int64_t rev : {s.rev(), s.rev() - 1}) {
    RangeRequest r;
    r.key = "key";
    r.range_end = test::prefix_end_str("key");
    r.revision = rev;
    int seen = 0, pages = 0;
    std::string last;
    for (;;) {
      auto resp = s.rd->range(r, page_bytes, pages > 0);
      REQUIRE(resp.ok());
      size_t bytes = 0;
      for (auto& kv : resp->kvs) {
        CHECK(kv.key > last);
        last = kv.key;
        bytes += kv.key.size() + kv.value.size();
        seen++;
      }
      CHECK(bytes <= page_bytes);
      if (pages == 0) CHECK(resp->count == (rev == s.rev() ? n : n - 100));
      pages++;
      if (!resp->more) {
        CHECK(resp->continue_key.empty());
        break;
      }
      REQUIRE_FALSE(resp->continue_key.empty());
      r.key = resp->continue_key;
      r.revision = resp->revision;
    }
    CHECK(seen == (rev == s.rev() ? n : n - 100));
    CHECK(pages > 20);
  }
  // Sorted by something else, too large: an error that asks for a limit.
  RangeRequest sorted;
  sorted.key = "key";
  sorted.range_end = test::prefix_end_str("key");
  sorted.sort_target = SortTarget::mod;
  sorted.sort_order = SortOrder::descend;
  auto big = s.rd->range(sorted, page_bytes);
  REQUIRE_FALSE(big.ok());
  CHECK(big.error().code == ErrorCode::invalid_argument);
  CHECK(big.error().message.find("use a limit") != std::string::npos);
  sorted.limit = 10;
  auto top = s.rd->range(sorted, page_bytes);
  REQUIRE(top.ok());
  CHECK(top->kvs.size() == 10);
  CHECK(top->more);
  CHECK(top->kvs[0].mod_revision == s.rev());
  // A limit in key order: more without continue_key.
  RangeRequest lim;
  lim.key = "key";
  lim.range_end = test::prefix_end_str("key");
  lim.limit = 5;
  auto five = s.rd->range(lim, page_bytes);
  CHECK(five->kvs.size() == 5);
  CHECK(five->more);
  CHECK(five->continue_key.empty());
  CHECK(five->count == n);
}

TEST_CASE("mvcc: a single pair larger than the page is still returned", "[mvcc]") {
  Store s;
  s.put("a", std::string(1000, 'x'));
  s.put("b", "y");
  auto r = s.rd->range(all_keys(), 10);
  REQUIRE(r.ok());
  CHECK(r->kvs.size() == 1);
  CHECK(r->more);
  CHECK(r->continue_key == "b");
}

TEST_CASE("mvcc: random workload reads right at every revision + also after reopen", "[mvcc]") {
  Store s;
  test::Model m;
  test::random_workload(s, m, 300, 7);
  test::check_all_revisions(s, m, 1);
  s.reopen();
  CHECK(s.rev() == m.rev());
  test::check_all_revisions(s, m, 1);
}

TEST_CASE("mvcc: applied_index is stored with the state and survives reopen", "[mvcc]") {
  Store s;
  Command put1 = test::put_req("a", "1");
  Command put2 = test::put_req("b", "2");
  Command bad = test::put_req("", "x");
  auto results = s.store().apply({{5, &put1}, {0, &bad}, {6, &put2}});
  REQUIRE(results.size() == 3);
  CHECK(results[0].ok());
  CHECK(results[1].error().code == ErrorCode::empty_key);
  CHECK(results[2].ok());
  CHECK(s.store().applied_index() == 6);
  CHECK(s.rev() == 3);
  // Index 0 entries do not move it.
  s.store().apply({{0, &put1}});
  CHECK(s.store().applied_index() == 6);
  CHECK(s.engine->stats().applied_batches == 2);
  s.reopen();
  CHECK(s.store().applied_index() == 6);
  CHECK(s.rev() == 4);
  CHECK(s.get("a") == "1");
  CHECK(s.get("b") == "2");
}

TEST_CASE("engine: open errors name the directory", "[mvcc]") {
  test::TempDir dir;
  {
    auto e1 = open_engine(test::test_options(dir.path));
    REQUIRE(e1.ok());
    auto e2 = open_engine(test::test_options(dir.path));
    REQUIRE_FALSE(e2.ok());
    CHECK(e2.error().code == ErrorCode::internal);
    CHECK(e2.error().message.find(dir.path) != std::string::npos);
    CHECK(e2.error().message.find("in use by another process") != std::string::npos);
  }
  std::string file = dir.path + "/plainfile";
  std::ofstream(file) << "x";
  auto e3 = open_engine(test::test_options(file + "/sub"));
  REQUIRE_FALSE(e3.ok());
  CHECK(e3.error().message.find(file) != std::string::npos);
  auto e4 = open_engine(test::test_options(file));
  REQUIRE_FALSE(e4.ok());
  CHECK(e4.error().message.find("not a directory") != std::string::npos);
}

}  // namespace
}  // namespace keel::storage
