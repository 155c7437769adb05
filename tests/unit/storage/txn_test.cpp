#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {
using test::Store;

Compare cmp(CompareTarget t, CompareResult r, std::string key, int64_t number,
            std::string value = "", std::string end = "") {
  return Compare{r, t, std::move(key), std::move(end), number, std::move(value)};
}

bool succeeds(Store& s, const Compare& c) {
  TxnRequest t;
  t.compare.push_back(c);
  return s.txn(t).succeeded;
}

TEST_CASE("txn: every compare target and result + on existing and missing keys", "[txn]") {
  Store s;
  s.put("k", "m");           // rev 2
  s.put("k", "m", 0);        // rev 3: version 2
  s.put("other", "x", 0);    // rev 4
  s.put("leased", "l", 42);  // rev 5
  using T = CompareTarget;
  using R = CompareResult;
  struct Case {
    T target;
    int64_t number;
    std::string value;
    bool eq, ne, lt, gt;  // against "k": version 2, create 2, mod 3, lease 0, value "m"
  } cases[] = {
      {T::version, 2, "", true, false, false, false}, {T::version, 3, "", false, true, true, false},
      {T::version, 1, "", false, true, false, true},  {T::create, 2, "", true, false, false, false},
      {T::create, 5, "", false, true, true, false},   {T::mod, 3, "", true, false, false, false},
      {T::mod, 2, "", false, true, false, true},      {T::lease, 0, "", true, false, false, false},
      {T::lease, 1, "", false, true, true, false},    {T::value, 0, "m", true, false, false, false},
      {T::value, 0, "n", false, true, true, false},   {T::value, 0, "a", false, true, false, true},
  };
  for (const auto& c : cases) {
    INFO("target " << int(c.target) << " number " << c.number << " value " << c.value);
    CHECK(succeeds(s, cmp(c.target, R::equal, "k", c.number, c.value)) == c.eq);
    CHECK(succeeds(s, cmp(c.target, R::not_equal, "k", c.number, c.value)) == c.ne);
    CHECK(succeeds(s, cmp(c.target, R::less, "k", c.number, c.value)) == c.lt);
    CHECK(succeeds(s, cmp(c.target, R::greater, "k", c.number, c.value)) == c.gt);
  }
  CHECK(succeeds(s, cmp(T::lease, R::equal, "leased", 42)));
  // A missing key: zeros for numbers; a value compare is always false.
  for (T t : {T::version, T::create, T::mod, T::lease}) {
    CHECK(succeeds(s, cmp(t, R::equal, "missing", 0)));
    CHECK_FALSE(succeeds(s, cmp(t, R::not_equal, "missing", 0)));
    CHECK(succeeds(s, cmp(t, R::less, "missing", 1)));
    CHECK_FALSE(succeeds(s, cmp(t, R::greater, "missing", 0)));
  }
  for (R r : {R::equal, R::not_equal, R::less, R::greater}) {
    CHECK_FALSE(succeeds(s, cmp(T::value, r, "missing", 0, "")));
  }
  // Compares do not write.
  CHECK(s.rev() == 5);
}

TEST_CASE("txn: compares over a range hold only if they hold for every key", "[txn]") {
  Store s;
  s.put("r/a", "1");
  s.put("r/b", "1");
  s.put("r/b", "2");
  const std::string end = "r0";
  using T = CompareTarget;
  using R = CompareResult;
  CHECK(succeeds(s, cmp(T::version, R::greater, "r/", 0, "", end)));
  CHECK_FALSE(succeeds(s, cmp(T::version, R::equal, "r/", 1, "", end)));
  CHECK(succeeds(s, cmp(T::value, R::greater, "r/", 0, "0", end)));
  CHECK_FALSE(succeeds(s, cmp(T::value, R::equal, "r/", 0, "1", end)));
  CHECK(succeeds(s, cmp(T::create, R::less, "r/", 0, "", std::string(1, '\0'))) == false);
  CHECK(succeeds(s, cmp(T::mod, R::less, "r/", 10, "", std::string(1, '\0'))));
  // An empty range compares as a missing key.
  CHECK(succeeds(s, cmp(T::version, R::equal, "x/", 0, "", "x0")));
  CHECK_FALSE(succeeds(s, cmp(T::value, R::equal, "x/", 0, "", "x0")));
}

TEST_CASE("txn: branches + one revision + sub-revisions + reads see own writes", "[txn]") {
  Store s;
  s.put("a", "1");  // rev 2
  s.put("d", "x");  // rev 3
  TxnRequest t;
  t.compare.push_back(cmp(CompareTarget::value, CompareResult::equal, "a", 0, "1"));
  RangeRequest read_b;
  read_b.key = "b";
  t.success.push_back(read_b);
  t.success.push_back(test::put_req("b", "new"));
  t.success.push_back(read_b);
  t.success.push_back(DeleteRangeRequest{"d", "", true});
  RangeRequest old_read;  // an explicit older revision does not see the txn's writes
  old_read.key = "b";
  old_read.revision = 3;
  t.success.push_back(old_read);
  t.success.push_back(test::put_req("c", "cc"));
  t.failure.push_back(test::put_req("failed", "yes"));
  auto r = s.txn(t);
  CHECK(r.succeeded);
  CHECK(r.revision == 4);
  CHECK(s.rev() == 4);
  REQUIRE(r.responses.size() == 6);
  CHECK(std::get<RangeResponse>(r.responses[0]).kvs.empty());
  auto seen = std::get<RangeResponse>(r.responses[2]);
  REQUIRE(seen.kvs.size() == 1);
  CHECK(seen.kvs[0] == KeyValue{"b", "new", 4, 4, 1, 0});
  CHECK(std::get<PutResponse>(r.responses[1]).revision == 4);
  auto del = std::get<DeleteRangeResponse>(r.responses[3]);
  CHECK(del.deleted == 1);
  CHECK(del.prev_kvs.at(0).value == "x");
  CHECK(std::get<RangeResponse>(r.responses[4]).kvs.empty());
  CHECK(s.get("c") == "cc");
  CHECK(s.get("failed") == "<none>");

  // Events of the txn come in the order it wrote them, all at revision 4.
  std::vector<std::string> order;
  auto last = s.rd->events(4, 4, std::string(1, '\0'), std::string(1, '\0'), false, SIZE_MAX,
                           [&](const Event& e) {
                             CHECK(e.kv.mod_revision == 4);
                             order.push_back(e.kv.key);
                             return true;
                           });
  REQUIRE(last.ok());
  CHECK(*last == 4);
  CHECK(order == std::vector<std::string>{"b", "d", "c"});

  // The failure branch.
  t.compare[0].value = "nope";
  auto f = s.txn(t);
  CHECK_FALSE(f.succeeded);
  CHECK(f.revision == 5);
  CHECK(s.get("failed") == "yes");

  // A txn that only reads (or deletes nothing) does not advance the revision.
  TxnRequest ro;
  ro.success.push_back(read_b);
  ro.success.push_back(DeleteRangeRequest{"nothing", "", false});
  auto ror = s.txn(ro);
  CHECK(ror.revision == 5);
  CHECK(std::get<DeleteRangeResponse>(ror.responses[1]).revision == 5);
  CHECK(s.rev() == 5);
}

TEST_CASE("txn: a failing txn changes nothing", "[txn]") {
  EngineOptions o = test::test_options("");
  o.txn_range_max_bytes = 100;
  Store s(o);
  for (int i = 0; i < 10; i++)
    s.put("k" + std::to_string(i), std::string(50, 'v'));
  int64_t before = s.rev();

  // Duplicate keys are rejected by apply() too.
  TxnRequest dup;
  dup.success.push_back(test::put_req("x", "1"));
  dup.success.push_back(test::put_req("x", "2"));
  auto r = s.apply(dup);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::duplicate_key);

  // ignore_value on a missing key.
  TxnRequest miss;
  miss.success.push_back(test::put_req("y", "1"));
  PutRequest iv = test::put_req("missing", "");
  iv.ignore_value = true;
  miss.success.push_back(iv);
  CHECK(s.apply(miss).error().code == ErrorCode::key_not_found);

  // A range at a future revision.
  TxnRequest fut;
  fut.success.push_back(test::put_req("y", "1"));
  RangeRequest rr;
  rr.key = "k0";
  rr.revision = before + 1;
  fut.success.push_back(rr);
  CHECK(s.apply(fut).error().code == ErrorCode::future_revision);

  // An error found only after the txn wrote (a sorted read too large for the txn page):
  // the batch is re-run without it, the neighbours in the batch still apply.
  TxnRequest late;
  late.success.push_back(test::put_req("z", "1"));
  RangeRequest sorted;
  sorted.key = "k";
  sorted.range_end = "l";
  sorted.sort_target = SortTarget::value;
  late.success.push_back(sorted);
  Command before_cmd = test::put_req("p", "1");
  Command late_cmd = late;
  Command after_cmd = test::put_req("q", "1");
  auto results = s.store().apply({{100, &before_cmd}, {101, &late_cmd}, {102, &after_cmd}});
  CHECK(results[0].ok());
  REQUIRE_FALSE(results[1].ok());
  CHECK(results[1].error().code == ErrorCode::invalid_argument);
  CHECK(results[2].ok());
  CHECK(s.get("z") == "<none>");
  CHECK(s.get("p") == "1");
  CHECK(s.get("q") == "1");
  CHECK(s.rev() == before + 2);
  CHECK(s.store().applied_index() == 102);
  CHECK(s.get("x") == "<none>");
  CHECK(s.get("y") == "<none>");
}

}  // namespace
}  // namespace keel::storage
