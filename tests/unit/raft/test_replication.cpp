// §5.3 log replication, §5.4.2 commit rule (Figure 8), flow control, fast backtracking and the
// uncommitted-size bound.
#include <catch2/catch.hpp>

#include "tests/unit/raft/harness.hpp"

using namespace keel::raft;
using keel::raft::test::Cluster;
using keel::raft::test::datas;
using keel::raft::test::seed_log;

namespace {

Message app_resp(NodeId from, NodeId to, uint64_t term, uint64_t index) {
  Message m;
  m.type = MessageType::app_resp;
  m.from = from;
  m.to = to;
  m.term = term;
  m.index = index;
  return m;
}

}  // namespace

TEST_CASE("5.3: proposals are replicated committed and applied in order everywhere",
          "[raft][5.3]") {
  Cluster c(3);
  c.elect(1);
  for (int i = 0; i < 10; ++i)
    REQUIRE(c.raft(1).propose("v" + std::to_string(i)).ok());
  c.stabilize();
  for (NodeId id : c.ids()) {
    REQUIRE(c.member(id).applied.size() == 10);
    REQUIRE(c.member(id).applied[9].data == "v9");
    REQUIRE(c.raft(id).commit_index() == c.raft(1).last_index());
  }
}

TEST_CASE("5.3: followers forward proposals to the leader", "[raft][5.3]") {
  Cluster c(3);
  c.elect(1);
  auto r = c.raft(3).propose("via-3");
  REQUIRE(r.status == ProposeStatus::forwarded);
  c.stabilize();
  REQUIRE(datas(c.member(2).applied) == std::vector<std::string>{"via-3"});
  Cluster d(3, 0, [](Config& cfg) { cfg.forward_proposals = false; });
  d.elect(1);
  REQUIRE(d.raft(2).propose("x").status == ProposeStatus::not_leader);
}

TEST_CASE("5.3: a follower's conflicting suffix is replaced by the leader's log", "[raft][5.3]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  seed_log(c, 1, {1, 1, 2, 2}, 2);
  seed_log(c, 2, {1, 1, 3}, 3);
  seed_log(c, 3, {1, 1, 3}, 3);
  c.elect(2);
  REQUIRE(c.raft(2).role() == Role::leader);
  c.stabilize();
  REQUIRE(c.raft(1).last_index() == 4);  // e3(t3) + the no-op of term 4
  REQUIRE(c.raft(1).log_term(3) == 3u);
  REQUIRE(c.raft(1).log_term(4) == c.raft(2).term());
}

TEST_CASE("5.3: fast backtracking skips a whole term per round trip", "[raft][5.3]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.pre_vote = false; });
  // Member 3 holds 50 entries of a stale term 2; the leader's log diverges after index 1.
  std::vector<uint64_t> stale(51, 2);
  stale[0] = 1;
  seed_log(c, 3, stale, 2);
  std::vector<uint64_t> good(20, 3);
  good[0] = 1;
  seed_log(c, 1, good, 3);
  seed_log(c, 2, good, 3);
  c.elect(1);
  int rejects = 0;
  for (int round = 0; round < 100; ++round) {
    auto msgs = c.take();
    if (msgs.empty()) break;
    for (auto& m : msgs) {
      if (m.type == MessageType::app_resp && m.reject && m.from == 3) ++rejects;
      c.deliver(std::move(m));
    }
  }
  REQUIRE(c.raft(3).last_index() == c.raft(1).last_index());
  REQUIRE(c.raft(3).log_term(2) == 3u);
  REQUIRE(rejects <= 2);  // not one per mismatched entry
}

TEST_CASE("5.4.2: Figure 8 - entries of older terms never commit by counting replicas",
          "[raft][5.4.2]") {
  // Member 1 holds (1,t1) (2,t2); member 2 has the same; 3 and 4 only (1,t1); 5 has (2,t3).
  Cluster c(5, 0, [](Config& cfg) { cfg.pre_vote = false; });
  seed_log(c, 1, {1, 2}, 3);
  seed_log(c, 2, {1, 2}, 3);
  seed_log(c, 3, {1}, 3);
  seed_log(c, 4, {1}, 3);
  seed_log(c, 5, {1, 3}, 3);
  // Member 1 wins term 4 with votes from 2, 3, 4 and appends its no-op at index 3.
  c.raft(1).campaign();
  auto votes = c.take();
  for (auto& m : votes)
    if (m.to != 5) c.deliver(m);
  for (auto& m : c.take())
    if (m.to == 1) c.deliver(m);
  REQUIRE(c.raft(1).role() == Role::leader);
  const uint64_t t = c.raft(1).term();
  c.flush(1);  // persists the no-op: the leader's own match is 3
  c.take();    // drop the appends: we drive the acknowledgements by hand
  // (2, t2) is now on a majority (1, 2, 3) but must not commit: it is not of the current term.
  c.deliver(app_resp(2, 1, t, 2));
  c.deliver(app_resp(3, 1, t, 2));
  REQUIRE(c.raft(1).commit_index() == 0);
  // Why: member 5 (last term 3) could still win with votes from 2, 3, 4 and overwrite index 2.
  REQUIRE_FALSE(c.raft(2).log_term(2) == 3u);
  // Once an entry of the current term is on a majority, it and everything before it commit.
  c.deliver(app_resp(2, 1, t, 3));
  REQUIRE(c.raft(1).commit_index() == 0);
  c.deliver(app_resp(3, 1, t, 3));
  REQUIRE(c.raft(1).commit_index() == 3);
}

TEST_CASE("5.4.2: Figure 8 end to end - an uncommitted old-term entry is overwritten",
          "[raft][5.4.2]") {
  Cluster c(5, 0, [](Config& cfg) { cfg.pre_vote = false; });
  seed_log(c, 1, {1, 2}, 4);
  seed_log(c, 2, {1, 2}, 4);
  seed_log(c, 3, {1, 2}, 4);
  seed_log(c, 4, {1}, 4);
  seed_log(c, 5, {1, 3}, 4);
  // Member 5's last term (3) beats (2, t2): it wins with 4 and one of the t2 holders.
  c.elect(5);
  REQUIRE(c.raft(5).role() == Role::leader);
  c.stabilize();
  for (NodeId id : c.ids())
    REQUIRE(c.raft(id).log_term(2) == 3u);
}

TEST_CASE("flow: probe state sends one append at a time replicate pipelines up to the limit",
          "[raft][5.3][flow]") {
  Cluster c(3, 0, [](Config& cfg) {
    cfg.max_inflight_msgs = 3;
    cfg.max_size_per_msg = 1;  // one entry per message
  });
  c.elect(1);
  REQUIRE(c.raft(1).progress(2)->state == ProgressState::replicate);
  c.drop_type(MessageType::app_resp);
  for (int i = 0; i < 10; ++i)
    REQUIRE(c.raft(1).propose("p").ok());
  auto msgs = c.take();
  int to2 = 0;
  for (auto& m : msgs)
    if (m.type == MessageType::app && m.to == 2) ++to2;
  REQUIRE(to2 == 3);
  REQUIRE(c.raft(1).progress(2)->inflights.full());
  c.allow_all_types();
  for (auto& m : msgs)
    c.deliver(std::move(m));
  c.stabilize();
  REQUIRE(c.member(2).applied.size() == 10);
}

TEST_CASE("flow: a lost append is recovered through heartbeats", "[raft][5.3][flow]") {
  Cluster c(3);
  c.elect(1);
  c.drop_type(MessageType::app);
  REQUIRE(c.raft(1).propose("lost-once").ok());
  c.stabilize();
  c.allow_all_types();
  c.tick_all(3);
  for (NodeId id : c.ids())
    REQUIRE(datas(c.member(id).applied) == std::vector<std::string>{"lost-once"});
}

TEST_CASE("flow: the uncommitted bound drops proposals with a typed result", "[raft][5.3][flow]") {
  Cluster c(3, 0, [](Config& cfg) { cfg.max_uncommitted_entries_size = 100; });
  c.elect(1);
  c.isolate(1);
  int ok = 0;
  ProposeStatus last = ProposeStatus::ok;
  for (int i = 0; i < 50; ++i) {
    auto r = c.raft(1).propose(std::string(10, 'x'));
    if (r.ok()) ++ok;
    last = r.status;
  }
  REQUIRE(ok == 10);
  REQUIRE(last == ProposeStatus::dropped);
  c.heal();
  c.tick_all(2);
  REQUIRE(c.raft(1).uncommitted_bytes() == 0);
  REQUIRE(c.raft(1).propose("again").ok());
}

TEST_CASE("batching: many proposals travel in few messages and one Ready", "[raft][5.3][flow]") {
  Cluster c(3);
  c.elect(1);
  for (int i = 0; i < 1000; ++i)
    REQUIRE(c.raft(1).propose("b").ok());
  auto msgs = c.take();
  int apps = 0;
  size_t entries = 0;
  for (auto& m : msgs) {
    if (m.type == MessageType::app) {
      ++apps;
      entries += m.entries.size();
    }
  }
  REQUIRE(apps == 2);
  REQUIRE(entries == 2000);
  for (auto& m : msgs)
    c.deliver(std::move(m));
  c.stabilize();
  REQUIRE(c.member(3).applied.size() == 1000);
}

TEST_CASE("durability: a restarted member keeps its log term and vote", "[raft][5.3]") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).propose("durable").ok());
  c.stabilize();
  const uint64_t term = c.raft(2).term();
  const uint64_t last = c.raft(2).last_index();
  c.restart(2);
  REQUIRE(c.raft(2).term() == term);
  REQUIRE(c.raft(2).last_index() == last);
  c.member(2).applied.clear();
  c.flush(2);  // re-applies the committed log after the restart
  REQUIRE(datas(c.member(2).applied) == std::vector<std::string>{"durable"});
}
