#include <catch2/catch.hpp>
#include <sstream>

#include "agent/txn_text.hpp"

using namespace keel;
using namespace keel::storage;

namespace {
Result<TxnRequest> parse(const std::string& text) {
  std::istringstream in(text);
  return agent::parse_txn(in);
}
}  // namespace

TEST_CASE("etcdctl's txn format: compares, success ops, failure ops", "[txn-text]") {
  auto t = parse(
      "mod(\"key1\") > \"0\"\n"
      "value(\"key2\") = \"x y\"\n"
      "\n"
      "put key1 \"overwrote\"\n"
      "del key2 --prev-kv\n"
      "\n"
      "put key1 created\n"
      "get key --prefix\n");
  REQUIRE(t.ok());
  REQUIRE(t->compare.size() == 2);
  CHECK(t->compare[0].target == CompareTarget::mod);
  CHECK(t->compare[0].result == CompareResult::greater);
  CHECK(t->compare[0].key == "key1");
  CHECK(t->compare[0].number == 0);
  CHECK(t->compare[1].target == CompareTarget::value);
  CHECK(t->compare[1].value == "x y");
  REQUIRE(t->success.size() == 2);
  CHECK(std::get<PutRequest>(t->success[0]).value == "overwrote");
  CHECK(std::get<DeleteRangeRequest>(t->success[1]).prev_kv);
  REQUIRE(t->failure.size() == 2);
  CHECK(std::get<PutRequest>(t->failure[0]).value == "created");
  const auto& get = std::get<RangeRequest>(t->failure[1]);
  CHECK(get.key == "key");
  CHECK(get.range_end == prefix_end("key"));
}

TEST_CASE("every compare target and operator, and range compares", "[txn-text]") {
  auto t = parse(
      "version(\"a\") = \"3\"\n"
      "create(\"a\") != \"4\"\n"
      "c(\"a\") < 5\n"
      "m(\"a\", \"b\") > \"6\"\n"
      "lease(\"a\") = \"0x10\"\n"
      "val(\"a\") != \"v\"\n"
      "\n\n");
  REQUIRE(t.ok());
  REQUIRE(t->compare.size() == 6);
  CHECK(t->compare[0].target == CompareTarget::version);
  CHECK(t->compare[0].number == 3);
  CHECK(t->compare[1].target == CompareTarget::create);
  CHECK(t->compare[1].result == CompareResult::not_equal);
  CHECK(t->compare[2].result == CompareResult::less);
  CHECK(t->compare[3].range_end == "b");
  CHECK(t->compare[4].target == CompareTarget::lease);
  CHECK(t->compare[4].number == 16);
  CHECK(t->compare[5].target == CompareTarget::value);
  CHECK(t->success.empty());
  CHECK(t->failure.empty());
}

TEST_CASE("quoting and escapes", "[txn-text]") {
  auto tokens = agent::tokenize_txn_line(R"(put "a\"b" 'c d' "\x41\n")");
  REQUIRE(tokens.ok());
  REQUIRE(tokens->size() == 4);
  CHECK((*tokens)[1] == "a\"b");
  CHECK((*tokens)[2] == "c d");
  CHECK((*tokens)[3] == "A\n");
}

TEST_CASE("malformed text is an invalid_argument naming the line", "[txn-text]") {
  for (const char* text :
       {"mod(\"k\") >> \"1\"\n", "foo(\"k\") = \"1\"\n", "mod(\"k\") > \"x\"\n", "\nput onlykey\n",
        "\nfrob k\n", "\nput \"unterminated v\n", "value(\"k\") =\n"}) {
    INFO(text);
    auto t = parse(text);
    REQUIRE_FALSE(t.ok());
    CHECK(t.error().code == ErrorCode::invalid_argument);
  }
}
