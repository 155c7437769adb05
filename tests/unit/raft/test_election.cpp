// §5.2 leader election, §5.4.1 election restriction, pre-vote (thesis §9.6), check-quorum
// (thesis §6.2) and a leader partitioned away that comes back.
#include <catch2/catch.hpp>

#include "tests/unit/raft/harness.hpp"

using namespace keel::raft;
using keel::raft::test::Cluster;
using keel::raft::test::seed_log;

namespace {}  // namespace

TEST_CASE("5.2: a follower that hears nothing campaigns and wins a majority", "[raft][5.2]") {
  Cluster c(3);
  for (int i = 0; i < 25 && c.leader() == kNoNode; ++i)
    c.tick_all();
  const NodeId l = c.leader();
  REQUIRE(l != kNoNode);
  for (NodeId id : c.ids()) {
    REQUIRE(c.raft(id).term() == c.raft(l).term());
    REQUIRE(c.raft(id).leader() == l);
  }
}

TEST_CASE("5.2: election timeouts are randomized in between e and 2e", "[raft][5.2]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  // Member 1 alone: count ticks until it campaigns, over many restarts with different seeds.
  std::set<int> seen;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    MemoryStorage st(ConfState{{1, 2, 3}, {}});
    Config cfg;
    cfg.id = 1;
    cfg.storage = &st;
    cfg.seed = seed;
    cfg.pre_vote = false;
    RawNode n(cfg);
    int ticks = 0;
    while (n.role() == Role::follower && ticks < 100) {
      n.tick();
      ++ticks;
    }
    REQUIRE(ticks >= cfg.election_tick);
    REQUIRE(ticks < 2 * cfg.election_tick);
    seen.insert(ticks);
  }
  REQUIRE(seen.size() > 3);
}

TEST_CASE("5.2: one vote per term - a candidate with a higher term makes others step down",
          "[raft][5.2]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  c.raft(1).campaign();  // term 1, votes for itself
  auto msgs = c.take();
  REQUIRE(msgs.size() == 2);
  // Member 2 votes for 1; a competing request from 3 in the same term is refused.
  c.deliver(msgs[0]);
  Message from3;
  from3.type = MessageType::vote;
  from3.from = 3;
  from3.to = 2;
  from3.term = 1;
  from3.index = 0;
  from3.log_term = 0;
  c.deliver(from3);
  auto resp = c.take();
  REQUIRE(resp.size() == 2);
  REQUIRE(resp[0].type == MessageType::vote_resp);
  REQUIRE_FALSE(resp[0].reject);
  REQUIRE(resp[1].to == 3);
  REQUIRE(resp[1].reject);
  REQUIRE(c.raft(2).vote() == 1);
}

TEST_CASE("5.4.1: a candidate with a less up-to-date log cannot win", "[raft][5.4.1]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  seed_log(c, 1, {1}, 1);
  seed_log(c, 2, {1, 1}, 1);
  seed_log(c, 3, {1, 1}, 1);
  c.elect(1);
  REQUIRE(c.raft(1).role() != Role::leader);
  c.elect(2);
  REQUIRE(c.raft(2).role() == Role::leader);
  // The stale member catches up from the new leader.
  c.stabilize();
  REQUIRE(c.raft(1).last_index() == c.raft(2).last_index());
}

TEST_CASE("5.4.1: a higher last term beats a longer log", "[raft][5.4.1]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  seed_log(c, 1, {1, 1, 1}, 2);
  seed_log(c, 2, {1, 2}, 2);
  seed_log(c, 3, {1, 1, 1}, 2);
  c.elect(2);
  REQUIRE(c.raft(2).role() == Role::leader);
  c.stabilize();
  REQUIRE(c.raft(1).log_term(2) == 2u);
  REQUIRE(c.raft(3).log_term(3) == c.raft(2).term());  // entry 3 replaced by the no-op
}

TEST_CASE("prevote: a partitioned member does not inflate its term", "[raft][prevote]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.leader() == 1);
  const uint64_t term = c.raft(1).term();
  c.isolate(3);
  c.tick_all(100);  // member 3 keeps failing pre-votes
  REQUIRE(c.raft(3).term() == term);
  REQUIRE(c.raft(3).role() == Role::pre_candidate);
  c.heal();
  c.tick_all(5);
  REQUIRE(c.leader() == 1);  // rejoining did not disturb the leader
  REQUIRE(c.raft(1).term() == term);
  REQUIRE(c.raft(3).leader() == 1);
}

TEST_CASE("prevote: without pre-vote a rejoining member disrupts the leader", "[raft][prevote]") {
  Cluster c(3, 0, [](Config& cfg) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
  });
  c.elect(1);
  const uint64_t term = c.raft(1).term();
  c.isolate(3);
  c.tick_all(50);
  REQUIRE(c.raft(3).term() > term + 1);
  c.heal();
  c.tick_all(30);
  REQUIRE(c.leader() != kNoNode);
  REQUIRE(c.raft(c.leader()).term() > term);  // the contrast that motivates pre-vote
}

TEST_CASE("checkquorum: a leader cut off from a quorum steps down", "[raft][checkquorum]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(1);
  for (int i = 0; i < 25; ++i)
    c.tick(1);
  REQUIRE(c.raft(1).role() == Role::follower);
}

TEST_CASE("checkquorum: followers in a leader lease ignore vote requests", "[raft][checkquorum]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  c.elect(1);
  const uint64_t term = c.raft(1).term();
  Message v;
  v.type = MessageType::vote;
  v.from = 3;
  v.to = 2;
  v.term = term + 5;
  v.index = c.raft(1).last_index();
  v.log_term = term;
  c.deliver(v);
  REQUIRE(c.raft(2).term() == term);
  REQUIRE(c.raft(2).leader() == 1);
}

TEST_CASE("partition: a leader partitioned away comes back and follows the new leader",
          "[raft][5.2][partition]") {
  Cluster c(5);
  c.elect(1);
  REQUIRE(c.raft(1).propose("committed").ok());
  c.stabilize();
  c.isolate(1);
  // The old leader keeps accepting proposals it can never commit.
  REQUIRE(c.raft(1).propose("lost").ok());
  c.flush(1);
  for (int i = 0; i < 40 && (c.leader() == 1 || c.leader() == kNoNode); ++i)
    c.tick_all();
  const NodeId l = c.leader();
  REQUIRE(l != 1);
  REQUIRE(l != kNoNode);
  REQUIRE(c.raft(l).propose("new").ok());
  c.stabilize();
  c.heal();
  c.tick_all(5);
  REQUIRE(c.raft(1).role() == Role::follower);
  REQUIRE(c.raft(1).leader() == l);
  for (NodeId id : c.ids()) {
    auto d = keel::raft::test::datas(c.member(id).applied);
    REQUIRE(d == std::vector<std::string>{"committed", "new"});
  }
}

TEST_CASE("partition: a minority leader cannot commit - the majority side can",
          "[raft][5.3][partition]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(1);
  REQUIRE(c.raft(1).propose("x").ok());
  c.tick_all(3);
  REQUIRE(c.member(1).applied.empty());
}

TEST_CASE("5.2: a stale candidate learns the current term from a rejected vote", "[raft][5.2]") {
  // Found by the simulator (soak seed 30360, pre-vote off): a candidate whose configuration
  // (uncommitted entry) lists only a member that is at a higher term kept asking in its old term
  // and was ignored forever. Figure 2: the reply carries currentTerm.
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  c.storage(3).set_hard_state(HardState{7, kNoNode, 0});
  c.restart(3);
  c.raft(1).campaign();  // term 1
  auto msgs = c.take();
  for (auto& m : msgs)
    if (m.to == 3) c.deliver(m);
  for (auto& m : c.take())
    if (m.to == 1) c.deliver(m);
  REQUIRE(c.raft(1).term() == 7);
  REQUIRE(c.raft(1).role() == Role::follower);
  c.elect(1);
  REQUIRE(c.raft(1).role() == Role::leader);
  REQUIRE(c.raft(1).term() == 8);
}
