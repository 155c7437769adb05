#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

ErrorCode code_of(const Command& c, const Limits& limits = Limits{}) {
  auto st = validate(c, limits);
  return st.ok() ? ErrorCode::ok : st.error().code;
}
std::string message_of(const Command& c, const Limits& limits = Limits{}) {
  auto st = validate(c, limits);
  return st.ok() ? "" : st.error().message;
}
ErrorCode range_code(const RangeRequest& r, const Limits& limits = Limits{}) {
  auto st = validate(r, limits);
  return st.ok() ? ErrorCode::ok : st.error().code;
}
PutRequest put(std::string k, std::string v = "v") {
  PutRequest p;
  p.key = std::move(k);
  p.value = std::move(v);
  return p;
}
RangeRequest range(std::string k, std::string end = "") {
  RangeRequest r;
  r.key = std::move(k);
  r.range_end = std::move(end);
  return r;
}
TxnRequest txn_success(std::vector<RequestOp> ops) {
  TxnRequest t;
  t.success = std::move(ops);
  return t;
}

TEST_CASE("validate: keys and values", "[validate]") {
  CHECK(code_of(put("k")) == ErrorCode::ok);
  CHECK(code_of(put("")) == ErrorCode::empty_key);
  CHECK(code_of(put(std::string(4096, 'k'))) == ErrorCode::ok);
  CHECK(code_of(put(std::string(4097, 'k'))) == ErrorCode::key_too_large);
  CHECK(message_of(put(std::string(5000, 'k'))) ==
        "put: key is 5000 bytes; limit is 4096 (limits.max_key_bytes)");
  Limits small;
  small.max_value_bytes = 10;
  CHECK(code_of(put("k", std::string(10, 'v')), small) == ErrorCode::ok);
  CHECK(code_of(put("k", std::string(11, 'v')), small) == ErrorCode::value_too_large);
  CHECK(message_of(put("k", std::string(11, 'v')), small).find("limits.max_value_bytes") !=
        std::string::npos);
}

TEST_CASE("validate: request size", "[validate]") {
  Limits l;
  l.max_request_bytes = 100;
  CHECK(code_of(put("k", std::string(50, 'v')), l) == ErrorCode::ok);
  CHECK(code_of(put("k", std::string(200, 'v')), l) == ErrorCode::request_too_large);
  CHECK(message_of(put("k", std::string(200, 'v')), l).find("limits.max_request_bytes") !=
        std::string::npos);
}

TEST_CASE("validate: put flags and leases", "[validate]") {
  PutRequest p = put("k", "");
  p.ignore_value = true;
  CHECK(code_of(p) == ErrorCode::ok);
  p.value = "x";
  CHECK(code_of(p) == ErrorCode::invalid_argument);
  CHECK(message_of(p).find("ignore_value") != std::string::npos);
  PutRequest q = put("k");
  q.ignore_lease = true;
  CHECK(code_of(q) == ErrorCode::ok);
  q.lease = 5;
  CHECK(code_of(q) == ErrorCode::invalid_argument);
  PutRequest n = put("k");
  n.lease = -1;
  CHECK(code_of(n) == ErrorCode::invalid_argument);
  CHECK(message_of(n).find("lease") != std::string::npos);
}

TEST_CASE("validate: ranges", "[validate]") {
  CHECK(range_code(range("b")) == ErrorCode::ok);
  CHECK(range_code(range("b", "c")) == ErrorCode::ok);
  CHECK(range_code(range("b", "b")) == ErrorCode::ok);  // empty, as etcd
  CHECK(range_code(range("b", "a")) == ErrorCode::range_end_before_key);
  CHECK(range_code(range("b", std::string(1, '\0'))) == ErrorCode::ok);
  CHECK(range_code(range(std::string(1, '\0'), std::string(1, '\0'))) == ErrorCode::ok);
  CHECK(range_code(range("")) == ErrorCode::empty_key);
  CHECK(range_code(range("a", std::string(4097, 'z'))) == ErrorCode::key_too_large);
  auto r = range("a");
  r.revision = -1;
  CHECK(range_code(r) == ErrorCode::invalid_argument);
  r = range("a");
  r.limit = -1;
  CHECK(range_code(r) == ErrorCode::invalid_argument);
  for (int f = 0; f < 4; f++) {
    r = range("a");
    (f == 0   ? r.min_mod_revision
     : f == 1 ? r.max_mod_revision
     : f == 2 ? r.min_create_revision
              : r.max_create_revision) = -3;
    CHECK(range_code(r) == ErrorCode::invalid_argument);
  }
  r = range("a");
  r.sort_order = static_cast<SortOrder>(9);
  CHECK(range_code(r) == ErrorCode::invalid_argument);
  r = range("a");
  r.sort_target = static_cast<SortTarget>(9);
  CHECK(range_code(r) == ErrorCode::invalid_argument);
  CHECK(code_of(DeleteRangeRequest{"b", "a", false}) == ErrorCode::range_end_before_key);
  CHECK(code_of(DeleteRangeRequest{"", "", false}) == ErrorCode::empty_key);
  CHECK(code_of(DeleteRangeRequest{"a", std::string(1, '\0'), false}) == ErrorCode::ok);
}

TEST_CASE("validate: compact", "[validate]") {
  CHECK(code_of(CompactRequest{5}) == ErrorCode::ok);
  CHECK(code_of(CompactRequest{-1}) == ErrorCode::invalid_argument);
}

TEST_CASE("validate: txn op count", "[validate]") {
  Limits l;
  l.max_txn_ops = 4;
  TxnRequest t;
  for (int i = 0; i < 2; i++)
    t.success.push_back(put("s" + std::to_string(i)));
  for (int i = 0; i < 2; i++)
    t.failure.push_back(put("f" + std::to_string(i)));
  CHECK(code_of(t, l) == ErrorCode::ok);
  t.failure.push_back(range("x"));
  CHECK(code_of(t, l) == ErrorCode::too_many_ops);
  CHECK(message_of(t, l).find("limits.max_txn_ops") != std::string::npos);
  TxnRequest c;
  for (int i = 0; i < 5; i++)
    c.compare.push_back(Compare{CompareResult::equal, CompareTarget::version, "k", "", 0, ""});
  CHECK(code_of(c, l) == ErrorCode::too_many_ops);
}

TEST_CASE("validate: duplicate keys in a txn branch", "[validate]") {
  CHECK(code_of(txn_success({put("a"), put("b")})) == ErrorCode::ok);
  CHECK(code_of(txn_success({put("a"), put("a")})) == ErrorCode::duplicate_key);
  CHECK(message_of(txn_success({put("a"), put("a")})).find("duplicate key given in txn request") !=
        std::string::npos);
  CHECK(code_of(txn_success({put("b"), DeleteRangeRequest{"a", "c", false}})) ==
        ErrorCode::duplicate_key);
  CHECK(code_of(txn_success({DeleteRangeRequest{"b", "", false}, put("b")})) ==
        ErrorCode::duplicate_key);
  CHECK(code_of(txn_success({DeleteRangeRequest{"a", std::string(1, '\0'), false}, put("z")})) ==
        ErrorCode::duplicate_key);
  CHECK(code_of(txn_success({put("c"), DeleteRangeRequest{"a", "c", false}})) == ErrorCode::ok);
  // Overlapping deletes are allowed, as are reads of written keys.
  CHECK(code_of(txn_success({DeleteRangeRequest{"a", "c", false},
                             DeleteRangeRequest{"b", "d", false}})) == ErrorCode::ok);
  CHECK(code_of(txn_success({put("a"), range("a")})) == ErrorCode::ok);
  // The two branches are independent.
  TxnRequest t;
  t.success.push_back(put("a"));
  t.failure.push_back(put("a"));
  CHECK(code_of(t) == ErrorCode::ok);
}

TEST_CASE("validate: txn ops and compares are checked", "[validate]") {
  CHECK(code_of(txn_success({put("")})) == ErrorCode::empty_key);
  CHECK(message_of(txn_success({put("a"), put("")})).find("txn success[1]") != std::string::npos);
  CHECK(code_of(txn_success({range("b", "a")})) == ErrorCode::range_end_before_key);
  TxnRequest t;
  t.compare.push_back(Compare{CompareResult::equal, CompareTarget::value, "b", "a", 0, ""});
  CHECK(code_of(t) == ErrorCode::range_end_before_key);
  t.compare[0].range_end = "";
  CHECK(code_of(t) == ErrorCode::ok);
  t.compare[0].target = static_cast<CompareTarget>(8);
  CHECK(code_of(t) == ErrorCode::invalid_argument);
  t.compare[0].target = CompareTarget::value;
  t.compare[0].result = static_cast<CompareResult>(8);
  CHECK(code_of(t) == ErrorCode::invalid_argument);
  t.compare[0].result = CompareResult::equal;
  t.compare[0].key = "";
  CHECK(code_of(t) == ErrorCode::empty_key);
}

TEST_CASE("prefix_end and error names", "[validate]") {
  CHECK(prefix_end("abc") == "abd");
  CHECK(prefix_end(std::string("a\xff", 2)) == "b");
  CHECK(prefix_end(std::string("\xff\xff", 2)) == std::string(1, '\0'));
  CHECK(prefix_end("") == std::string(1, '\0'));
  CHECK(std::string(error_code_name(ErrorCode::compacted)) == "compacted");
  CHECK(std::string(error_code_name(ErrorCode::key_not_found)) == "key_not_found");
  CHECK(std::string(error_code_name(ErrorCode::internal)) == "internal");
}

}  // namespace
}  // namespace keel::storage
