// §6 / thesis §4: single-server membership changes, learners, leadership transfer, snapshots,
// ReadIndex.
#include <catch2/catch.hpp>

#include "tests/unit/raft/harness.hpp"

using namespace keel::raft;
using keel::raft::test::Cluster;
using keel::raft::test::datas;

namespace {

ConfChange change(ConfChangeType t, NodeId n) {
  return ConfChange{t, n};
}

}  // namespace

TEST_CASE("6: add a learner catch it up promote it to voter", "[raft][6][learner]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).propose("before").ok());
  c.stabilize();
  c.add(4, ConfState{});
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_learner, 4)).ok());
  c.tick_all(3);
  REQUIRE(c.raft(4).conf_state().is_learner(4));
  REQUIRE(datas(c.member(4).applied) == std::vector<std::string>{"before"});
  REQUIRE(c.raft(1).conf_state().voters.size() == 3);
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_voter, 4)).ok());
  c.stabilize();
  REQUIRE(c.raft(1).conf_state().voters == std::vector<NodeId>{1, 2, 3, 4});
  REQUIRE(c.member(2).applied_conf.voters == std::vector<NodeId>{1, 2, 3, 4});
}

TEST_CASE("6: one membership change at a time", "[raft][6]") {
  Cluster c(3, 1);
  c.elect(1);
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_voter, 4)).ok());
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::remove_node, 3)).status ==
          ProposeStatus::conf_change_pending);
  c.stabilize();
  REQUIRE(c.raft(1).conf_state().voters == std::vector<NodeId>{1, 2, 3, 4});
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::remove_node, 3)).ok());
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_voter, 1)).status ==
          ProposeStatus::conf_change_pending);
  c.stabilize();
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_voter, 1)).status ==
          ProposeStatus::invalid);
}

TEST_CASE("6: a new leader must commit in its term before changing the configuration",
          "[raft][6]") {
  Cluster d(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  d.raft(1).campaign();
  for (auto& m : d.take())
    d.deliver(m);
  for (auto& m : d.take())
    if (m.type == MessageType::vote_resp) d.deliver(m);
  REQUIRE(d.raft(1).role() == Role::leader);
  d.take();  // the no-op's appends are lost
  REQUIRE(d.raft(1).propose_conf_change(change(ConfChangeType::add_learner, 9)).status ==
          ProposeStatus::conf_change_pending);
  d.tick_all(2);
  REQUIRE(d.raft(1).propose_conf_change(change(ConfChangeType::add_learner, 9)).ok());
}

TEST_CASE("6: removing a follower shrinks the quorum", "[raft][6]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::remove_node, 3)).ok());
  c.stabilize();
  c.isolate(3);
  REQUIRE(c.raft(1).propose("two-of-two").ok());
  c.stabilize();
  REQUIRE(datas(c.member(2).applied) == std::vector<std::string>{"two-of-two"});
}

TEST_CASE("6: the leader removes itself steps down and hands over", "[raft][6]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::remove_node, 1)).ok());
  // Until the change commits the removed leader still leads, but accepts no more proposals.
  REQUIRE(c.raft(1).role() == Role::leader);
  REQUIRE(c.raft(1).propose("x").status == ProposeStatus::dropped);
  c.stabilize();
  REQUIRE(c.raft(1).role() == Role::follower);
  c.tick_all(30);
  const NodeId l = c.leader();
  REQUIRE((l == 2 || l == 3));
  REQUIRE(c.raft(l).conf_state().voters == std::vector<NodeId>{2, 3});
  REQUIRE(c.raft(l).propose("after").ok());
  c.stabilize();
  REQUIRE(datas(c.member(2).applied).back() == "after");
  // The removed member never campaigns again.
  c.tick_all(50);
  REQUIRE(c.raft(1).role() == Role::follower);
}

TEST_CASE("6: an uncommitted configuration entry is reverted when truncated", "[raft][6]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(1);
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_learner, 7)).ok());
  REQUIRE(c.raft(1).conf_state().is_learner(7));
  c.flush(1);
  for (int i = 0; i < 40 && (c.leader() == 1 || c.leader() == kNoNode); ++i)
    c.tick_all();
  REQUIRE(c.leader() != 1);
  REQUIRE(c.raft(c.leader()).propose("overwrite").ok());
  c.heal();
  c.tick_all(3);
  REQUIRE_FALSE(c.raft(1).conf_state().contains(7));
}

TEST_CASE("learner: never campaigns never counts towards a quorum", "[raft][learner]") {
  Cluster c(3, 2);
  c.tick_all(50);
  REQUIRE(c.leader() != kNoNode);
  REQUIRE(c.leader() <= 3);
  const NodeId l = c.leader();
  // Cut two voters: the learners alone must not commit anything.
  for (NodeId v : {1, 2, 3})
    if (v != l) c.isolate(v);
  REQUIRE(c.raft(l).propose("needs-a-voter").ok());
  c.stabilize();
  REQUIRE(c.member(4).applied.empty());
  c.heal();
  c.tick_all(2);
  REQUIRE(datas(c.member(4).applied) == std::vector<std::string>{"needs-a-voter"});
  REQUIRE(datas(c.member(5).applied) == std::vector<std::string>{"needs-a-voter"});
  // Learners do not receive ReadIndex heartbeats.
  c.take();
  REQUIRE(c.raft(l).read_index("ctx") == ReadResult::ok);
  for (auto& m : c.take())
    REQUIRE(m.to <= 3);
}

TEST_CASE("learner: many learners stay cheap for the leader", "[raft][learner]") {
  Cluster c(3, 40);
  c.elect(1);
  REQUIRE(c.raft(1).propose("fanout").ok());
  c.stabilize();
  for (NodeId id = 4; id <= 43; ++id) {
    REQUIRE(c.member(id).applied.size() == 1);
    // Idle learners hold no in-flight bookkeeping.
    REQUIRE(c.raft(1).progress(id)->inflights.count() == 0);
  }
}

TEST_CASE("transfer: to an up-to-date voter via timeout_now", "[raft][transfer]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).transfer_leadership(3) == TransferResult::ok);
  c.stabilize();
  REQUIRE(c.leader() == 3);
  REQUIRE(c.raft(1).role() == Role::follower);
  REQUIRE(c.raft(1).transfer_leadership(9) == TransferResult::forwarded);
  REQUIRE(c.raft(3).transfer_leadership(9) == TransferResult::invalid);
}

TEST_CASE("transfer: a lagging target is caught up first - proposals wait", "[raft][transfer]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(3);
  for (int i = 0; i < 5; ++i)
    REQUIRE(c.raft(1).propose("p").ok());
  c.stabilize();
  c.heal();
  REQUIRE(c.raft(1).transfer_leadership(3) == TransferResult::ok);
  REQUIRE(c.raft(1).propose("during").status == ProposeStatus::dropped);
  c.stabilize();
  REQUIRE(c.leader() == 3);
  REQUIRE(c.member(3).applied.size() == 5);
}

TEST_CASE("transfer: an unreachable target aborts after an election timeout", "[raft][transfer]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(3);
  REQUIRE(c.raft(1).transfer_leadership(3) == TransferResult::ok);
  c.tick_all(12);
  REQUIRE(c.raft(1).transferee() == kNoNode);
  REQUIRE(c.raft(1).propose("after").ok());
}

TEST_CASE("readindex: released on the leader after a quorum round", "[raft][readindex]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).propose("w").ok());
  c.stabilize();
  REQUIRE(c.raft(1).read_index("r1") == ReadResult::ok);
  REQUIRE(c.member(1).reads.empty());
  c.stabilize();
  REQUIRE(c.member(1).reads.size() == 1);
  REQUIRE(c.member(1).reads[0].context == "r1");
  REQUIRE(c.member(1).reads[0].index == c.raft(1).commit_index());
}

TEST_CASE("readindex: forwarded from a follower", "[raft][readindex]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(2).read_index("f") == ReadResult::forwarded);
  c.stabilize();
  REQUIRE(c.member(2).reads.size() == 1);
  REQUIRE(c.member(2).reads[0].index >= 1);
  REQUIRE(c.raft(3).read_index("") == ReadResult::invalid);
}

TEST_CASE("readindex: a partitioned leader never releases a read", "[raft][readindex]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(1);
  REQUIRE(c.raft(1).read_index("stale?") == ReadResult::ok);
  c.tick_all(30);
  REQUIRE(c.member(1).reads.empty());
}

TEST_CASE("readindex: a new leader waits for its first commit", "[raft][readindex]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  c.raft(1).campaign();
  for (auto& m : c.take())
    c.deliver(m);
  for (auto& m : c.take())
    if (m.type == MessageType::vote_resp) c.deliver(m);
  REQUIRE(c.raft(1).role() == Role::leader);
  REQUIRE(c.raft(1).read_index("early") == ReadResult::ok);
  c.flush(1);
  REQUIRE(c.member(1).reads.empty());
  c.stabilize();
  REQUIRE(c.member(1).reads.size() == 1);
  REQUIRE(c.member(1).reads[0].index == c.raft(1).commit_index());
}

TEST_CASE("snapshot: a member behind the compaction point receives a snapshot",
          "[raft][snapshot]") {
  Cluster c(3);
  c.elect(1);
  c.isolate(3);
  for (int i = 0; i < 20; ++i)
    REQUIRE(c.raft(1).propose("s" + std::to_string(i)).ok());
  c.stabilize();
  const uint64_t applied = c.member(1).applied_index;
  c.storage(1).create_snapshot(applied, c.member(1).applied_conf,
                               "state@" + std::to_string(applied), applied);
  REQUIRE(c.raft(1).first_index() == applied + 1);
  c.heal();
  c.tick_all(3);
  REQUIRE(c.storage(3).snapshot()->meta.index == applied);
  REQUIRE(c.storage(3).snapshot()->data == "state@" + std::to_string(applied));
  REQUIRE(c.member(3).applied_index == applied);
  REQUIRE(c.raft(1).progress(3)->state == ProgressState::replicate);
  REQUIRE(c.raft(1).propose("after-snap").ok());
  c.stabilize();
  REQUIRE(datas(c.member(3).applied) == std::vector<std::string>{"after-snap"});
}

TEST_CASE("snapshot: a new member joins through a snapshot", "[raft][snapshot][6]") {
  Cluster c(3);
  c.elect(1);
  for (int i = 0; i < 5; ++i)
    REQUIRE(c.raft(1).propose("j").ok());
  c.stabilize();
  const uint64_t applied = c.member(1).applied_index;
  c.storage(1).create_snapshot(applied, c.member(1).applied_conf, "snap", applied);
  c.add(4, ConfState{});
  REQUIRE(c.raft(1).propose_conf_change(change(ConfChangeType::add_learner, 4)).ok());
  c.tick_all(5);
  REQUIRE(c.storage(4).snapshot()->meta.index == applied);
  REQUIRE(c.raft(4).conf_state().is_learner(4));
  REQUIRE(c.raft(4).commit_index() == c.raft(1).commit_index());
}

TEST_CASE("snapshot: a restarted member restores from its snapshot and log", "[raft][snapshot]") {
  Cluster c(3);
  c.elect(1);
  for (int i = 0; i < 6; ++i)
    REQUIRE(c.raft(1).propose("r").ok());
  c.stabilize();
  const uint64_t applied = c.member(2).applied_index;
  c.storage(2).create_snapshot(applied - 2, c.member(2).applied_conf, "s", applied - 3);
  c.restart(2);
  REQUIRE(c.raft(2).first_index() == applied - 2);
  REQUIRE(c.raft(2).applied_index() == applied - 2);
  c.member(2).applied.clear();
  c.flush(2);
  REQUIRE(c.member(2).applied.size() == 2);
}
