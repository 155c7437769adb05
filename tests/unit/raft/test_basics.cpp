// Building blocks: the PRNG, MemoryStorage, conf-change encoding, invariants, determinism.
#include <catch2/catch.hpp>

#include "cluster/raft/rand.hpp"
#include "tests/unit/raft/harness.hpp"

using namespace keel::raft;

TEST_CASE("rand: same seed same sequence - bounded draws stay in range", "[raft][rand]") {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.next();
    REQUIRE(x == b.next());
    differs |= x != c.next();
    const uint64_t r = a.below(7);
    b.below(7);
    REQUIRE(r < 7);
    const uint64_t s = a.between(3, 5);
    b.between(3, 5);
    REQUIRE((s >= 3 && s <= 5));
  }
  REQUIRE(differs);
  int counts[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4000; ++i)
    ++counts[a.below(4)];
  for (int k : counts)
    REQUIRE((k > 800 && k < 1200));
}

TEST_CASE("storage: append replaces a suffix - compaction keeps the boundary term",
          "[raft][storage]") {
  MemoryStorage st(ConfState{{1}, {}});
  st.append({{1, 1, EntryType::normal, "a"},
             {2, 1, EntryType::normal, "b"},
             {3, 2, EntryType::normal, "c"}});
  st.append({{3, 3, EntryType::normal, "C"}, {4, 3, EntryType::normal, "d"}});
  REQUIRE(st.last_index() == 4);
  REQUIRE(st.term(3) == 3u);
  std::vector<Entry> out;
  st.entries(1, 5, 0, &out);
  REQUIRE(out.size() == 1);  // always at least one entry
  out.clear();
  st.entries(1, 5, 1000, &out);
  REQUIRE(out.size() == 4);
  st.create_snapshot(3, ConfState{{1}, {}}, "s3", 2);
  REQUIRE(st.first_index() == 3);
  REQUIRE(st.term(2) == 1u);
  REQUIRE_FALSE(st.term(1).has_value());
  REQUIRE(st.snapshot()->meta.index == 3);
  REQUIRE(st.snapshot()->meta.term == 3);
}

TEST_CASE("confchange: encoding round-trips - invalid changes are refused", "[raft][6]") {
  ConfState cs{{1, 2, 3}, {4}};
  auto next = apply_conf_change(cs, {ConfChangeType::add_voter, 4});
  REQUIRE(next);
  REQUIRE(next->voters == std::vector<NodeId>{1, 2, 3, 4});
  REQUIRE(next->learners.empty());
  REQUIRE_FALSE(apply_conf_change(cs, {ConfChangeType::add_voter, 1}));
  REQUIRE_FALSE(apply_conf_change(cs, {ConfChangeType::remove_node, 9}));
  REQUIRE_FALSE(apply_conf_change(ConfState{{1}, {}}, {ConfChangeType::remove_node, 1}));
  const std::string data = encode_conf_change({ConfChangeType::remove_node, 2}, &*next);
  ConfChange cc;
  ConfState out;
  bool has = false;
  REQUIRE(decode_conf_change(data, &cc, &out, &has));
  REQUIRE(has);
  REQUIRE(cc.type == ConfChangeType::remove_node);
  REQUIRE(cc.node == 2);
  REQUIRE(out == *next);
  REQUIRE_FALSE(decode_conf_change("x", &cc, &out, &has));
  REQUIRE_FALSE(decode_conf_change(data.substr(0, data.size() - 1), &cc, &out, &has));
}

TEST_CASE("determinism: the same inputs and seeds give the same messages", "[raft][5.2]") {
  auto run = [] {
    keel::raft::test::Cluster c(5);
    std::string trace;
    for (int i = 0; i < 60; ++i) {
      c.tick_all();
      if (c.leader() != kNoNode) (void)c.raft(c.leader()).propose("x" + std::to_string(i));
      trace += std::to_string(c.leader()) + ":" + std::to_string(c.raft(1).commit_index()) + ",";
    }
    return trace;
  };
  REQUIRE(run() == run());
}

TEST_CASE("single voter: commits alone after persisting", "[raft][5.3]") {
  keel::raft::test::Cluster c(1);
  c.elect(1);
  REQUIRE(c.raft(1).role() == Role::leader);
  REQUIRE(c.raft(1).propose("solo").ok());
  c.stabilize();
  REQUIRE(keel::raft::test::datas(c.member(1).applied) == std::vector<std::string>{"solo"});
  REQUIRE(c.raft(1).read_index("r") == ReadResult::ok);
  c.stabilize();
  REQUIRE(c.member(1).reads.size() == 1);
}
