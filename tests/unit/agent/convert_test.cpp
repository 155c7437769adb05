// Requests and responses survive the trip through Cap'n Proto unchanged.
#include <capnp/message.h>

#include <catch2/catch.hpp>

#include "agent/convert.hpp"

using namespace keel;
using namespace keel::storage;

TEST_CASE("txn requests round-trip through the RPC schema", "[convert]") {
  TxnRequest t;
  Compare c;
  c.result = CompareResult::greater;
  c.target = CompareTarget::lease;
  c.key = std::string("k\0ey", 4);
  c.range_end = "z";
  c.number = 42;
  t.compare.push_back(c);
  RangeRequest r;
  r.key = "a";
  r.range_end = std::string(1, '\0');
  r.revision = 7;
  r.limit = 3;
  r.sort_order = SortOrder::descend;
  r.sort_target = SortTarget::mod;
  r.keys_only = true;
  r.min_mod_revision = 1;
  r.max_create_revision = 9;
  t.success.emplace_back(r);
  PutRequest p;
  p.key = "k";
  p.value = std::string("\0\xff", 2);
  p.prev_kv = true;
  t.success.emplace_back(p);
  DeleteRangeRequest d;
  d.key = "x";
  d.range_end = "y";
  d.prev_kv = true;
  t.failure.emplace_back(d);

  capnp::MallocMessageBuilder m;
  auto b = m.initRoot<rpc::TxnRequest>();
  agent::to_rpc(t, b);
  auto back = agent::from_rpc(b.asReader());
  REQUIRE(back.ok());
  CHECK(*back == t);
}

TEST_CASE("responses round-trip through the RPC schema", "[convert]") {
  KeyValue kv{"k", "v", 2, 5, 3, 0};
  TxnResponse t;
  t.revision = 9;
  t.succeeded = true;
  RangeResponse rr;
  rr.revision = 9;
  rr.kvs = {kv};
  rr.more = true;
  rr.count = 12;
  rr.continue_key = "k\x01";
  t.responses.emplace_back(rr);
  PutResponse pr;
  pr.revision = 9;
  pr.prev_kv = kv;
  t.responses.emplace_back(pr);
  DeleteRangeResponse dr;
  dr.revision = 9;
  dr.deleted = 1;
  dr.prev_kvs = {kv};
  t.responses.emplace_back(dr);

  capnp::MallocMessageBuilder m;
  auto b = m.initRoot<rpc::TxnResponse>();
  agent::to_rpc(t, b);
  auto back = agent::from_rpc(b.asReader());
  CHECK(back.revision == 9);
  CHECK(back.succeeded);
  REQUIRE(back.responses.size() == 3);
  const auto& r0 = std::get<RangeResponse>(back.responses[0]);
  CHECK(r0.kvs == rr.kvs);
  CHECK(r0.more);
  CHECK(r0.count == 12);
  CHECK(r0.continue_key == rr.continue_key);
  CHECK(std::get<PutResponse>(back.responses[1]).prev_kv == kv);
  CHECK(std::get<DeleteRangeResponse>(back.responses[2]).prev_kvs == dr.prev_kvs);
}

TEST_CASE("every error code maps to the schema and back", "[convert]") {
  for (int c = 0; c <= static_cast<int>(ErrorCode::internal); ++c) {
    auto code = static_cast<ErrorCode>(c);
    CHECK(agent::from_rpc(agent::to_rpc(code)) == code);
  }
}
