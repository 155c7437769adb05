// Robustness against a misbehaving peer: inputs no correct member sends are dropped by the core
// (counted in RawNode::dropped(), nothing else happens) instead of reaching an assertion, and the
// member keeps working with the others. transport::validate() rejects the stateless cases before
// step(); these tests feed the core directly, as a buggy peer behind a lax validator would.
#include <catch2/catch.hpp>

#include "tests/unit/raft/harness.hpp"

using namespace keel::raft;
using keel::raft::test::Cluster;

namespace {

// Everything a dropped message must leave as it was.
struct Fingerprint {
  uint64_t term;
  NodeId vote;
  NodeId lead;
  Role role;
  uint64_t commit;
  uint64_t last;
  std::optional<uint64_t> last_term;
  ConfState conf;
  bool has_ready;
  uint64_t match;  // leader: the sender's progress
  uint64_t next;
  bool operator==(const Fingerprint&) const = default;
};

Fingerprint fingerprint(const RawNode& r, NodeId peer = kNoNode) {
  const Progress* pr = r.progress(peer);
  return Fingerprint{r.term(),
                     r.vote(),
                     r.leader(),
                     r.role(),
                     r.commit_index(),
                     r.last_index(),
                     r.log_term(r.last_index()),
                     r.conf_state(),
                     r.has_ready(),
                     pr ? pr->match : 0,
                     pr ? pr->next : 0};
}

Message msg(MessageType t, NodeId from, NodeId to, uint64_t term) {
  Message m;
  m.type = t;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// An append from `from` to `to` that would be accepted: anchored at to's last entry.
Message append_at_tail(Cluster& c, NodeId from, NodeId to, std::vector<std::string> datas) {
  RawNode& r = c.raft(to);
  Message m = msg(MessageType::app, from, to, r.term());
  m.index = r.last_index();
  m.log_term = *r.log_term(m.index);
  m.commit = r.commit_index();
  for (size_t i = 0; i < datas.size(); ++i)
    m.entries.push_back(Entry{m.index + 1 + i, r.term(), EntryType::normal, datas[i]});
  return m;
}

std::shared_ptr<const Snapshot> snapshot(uint64_t index, uint64_t term, ConfState conf) {
  auto s = std::make_shared<Snapshot>();
  s->meta.index = index;
  s->meta.term = term;
  s->meta.conf = std::move(conf);
  s->data = "state";
  return s;
}

// A healthy three-voter cluster led by 1 with one committed write.
Cluster healthy() {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.raft(1).role() == Role::leader);
  REQUIRE(c.raft(1).propose("before").ok());
  c.stabilize();
  return c;
}

// Delivers m to its addressee and proves it was dropped: counted once under `counter`, and the
// member's state (and, for a leader, the sender's progress) is untouched, with nothing to send.
void expect_dropped(Cluster& c, Message m, uint64_t DroppedCounts::*counter) {
  c.stabilize();
  RawNode& r = c.raft(m.to);
  const NodeId peer = m.from;
  const Fingerprint before = fingerprint(r, peer);
  const DroppedCounts counts = r.dropped();
  c.deliver(std::move(m));
  CHECK(fingerprint(r, peer) == before);
  CHECK(r.dropped().*counter == counts.*counter + 1);
  CHECK(r.dropped().total() == counts.total() + 1);
}

// The cluster still commits a new write on every member.
void expect_still_commits(Cluster& c, const std::string& data) {
  c.heal();
  if (c.leader() == kNoNode) c.tick_all(40);
  const NodeId l = c.leader();
  REQUIRE(l != kNoNode);
  REQUIRE(c.raft(l).propose(data).ok());
  c.stabilize();
  for (NodeId id : c.ids()) {
    INFO("member " << id);
    REQUIRE(!c.member(id).applied.empty());
    CHECK(c.member(id).applied.back().data == data);
  }
}

}  // namespace

// ---- two leaders in one term ----------------------------------------------------------------

TEST_CASE("robustness: a leader drops an append from another leader of its own term",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message m = append_at_tail(c, 2, 1, {"forged"});
  expect_dropped(c, m, &DroppedCounts::same_term_leader);
  REQUIRE(c.raft(1).role() == Role::leader);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a leader drops a heartbeat from another leader of its own term",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message m = msg(MessageType::heartbeat, 3, 1, c.raft(1).term());
  m.commit = c.raft(1).commit_index();
  expect_dropped(c, m, &DroppedCounts::same_term_leader);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a leader drops a snapshot from another leader of its own term",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message m = msg(MessageType::snap, 2, 1, c.raft(1).term());
  m.snapshot = snapshot(c.raft(1).last_index() + 5, c.raft(1).term(), ConfState{{1, 2, 3}, {}});
  expect_dropped(c, m, &DroppedCounts::same_term_leader);
  expect_still_commits(c, "after");
}

// ---- commit indexes and acknowledgements beyond the log -------------------------------------

TEST_CASE("robustness: a follower drops a heartbeat whose commit is beyond its log",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message m = msg(MessageType::heartbeat, 1, 2, c.raft(2).term());
  m.commit = c.raft(2).last_index() + 3;
  expect_dropped(c, m, &DroppedCounts::commit_beyond_log);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: an append commits no further than the entries it carries",
          "[raft][robustness]") {
  // Not a drop: a correct leader's commit may be ahead of a size-limited batch (etcd's
  // maybeAppend commits min(commit, last new index)). A commit beyond is clamped.
  Cluster c = healthy();
  c.isolate(3);
  REQUIRE(c.raft(1).propose("x1").ok());
  REQUIRE(c.raft(1).propose("x2").ok());
  c.stabilize();
  c.heal();
  const uint64_t behind = c.raft(3).last_index();
  REQUIRE(c.raft(1).commit_index() == behind + 2);
  std::vector<Entry> ents;
  c.storage(1).entries(behind + 1, behind + 2, ~uint64_t{0}, &ents);
  Message m = msg(MessageType::app, 1, 3, c.raft(1).term());
  m.index = behind;
  m.log_term = *c.raft(1).log_term(behind);
  m.commit = c.raft(1).commit_index() + 7;  // beyond even the leader's log
  m.entries = ents;
  c.deliver(m);
  REQUIRE(c.raft(3).last_index() == behind + 1);
  REQUIRE(c.raft(3).commit_index() == behind + 1);
  REQUIRE(c.raft(3).dropped().total() == 0);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a leader drops an append response beyond its last index",
          "[raft][robustness]") {
  Cluster c = healthy();
  const uint64_t last = c.raft(1).last_index();
  SECTION("an acknowledgement") {
    Message m = msg(MessageType::app_resp, 2, 1, c.raft(1).term());
    m.index = last + 100;
    expect_dropped(c, m, &DroppedCounts::ack_beyond_log);
  }
  SECTION("a rejection") {
    Message m = msg(MessageType::app_resp, 2, 1, c.raft(1).term());
    m.index = last + 100;
    m.reject = true;
    m.reject_hint = last + 50;
    expect_dropped(c, m, &DroppedCounts::ack_beyond_log);
  }
  expect_still_commits(c, "after");
}

// ---- malformed appends ----------------------------------------------------------------------

TEST_CASE("robustness: a follower drops an append whose entries are not contiguous",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message m = append_at_tail(c, 1, 2, {"a", "b"});
  SECTION("a gap between entries") {
    m.entries[1].index += 1;
  }
  SECTION("the first entry does not follow index") {
    for (Entry& e : m.entries)
      e.index += 2;
  }
  SECTION("index + entries overflows") {
    m.index = ~uint64_t{0};
    m.entries[0].index = 0;
    m.entries[1].index = 1;
  }
  expect_dropped(c, m, &DroppedCounts::append_malformed);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a follower drops an append with entry terms it cannot hold",
          "[raft][robustness]") {
  Cluster c = healthy();
  REQUIRE(c.raft(1).transfer_leadership(2) == TransferResult::ok);
  c.stabilize();
  REQUIRE(c.raft(2).role() == Role::leader);  // term 2: the log holds terms 1 and 2
  Message m = append_at_tail(c, 2, 3, {"a", "b"});
  REQUIRE(m.log_term == 2);
  SECTION("an entry term above the message term") {
    m.entries[1].term = m.term + 1;
  }
  SECTION("terms decrease") {
    m.entries[1].term = 1;
  }
  SECTION("an entry term below the previous entry's") {
    m.entries[0].term = 1;
    m.entries[1].term = 1;
  }
  SECTION("an entry of term 0") {
    m.entries[0].term = 0;
  }
  SECTION("log_term above the message term") {
    m.log_term = m.term + 1;
  }
  expect_dropped(c, m, &DroppedCounts::append_malformed);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a follower drops an append carrying a malformed configuration entry",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message m = append_at_tail(c, 1, 2, {"a"});
  m.entries[0].type = EntryType::conf_change;
  SECTION("undecodable") {
    m.entries[0].data = "garbage";
  }
  SECTION("without its resulting configuration") {
    m.entries[0].data = encode_conf_change({ConfChangeType::add_learner, 9}, nullptr);
  }
  SECTION("resulting in no voter") {
    const ConfState empty;
    m.entries[0].data = encode_conf_change({ConfChangeType::remove_node, 1}, &empty);
  }
  SECTION("a node both voter and learner") {
    const ConfState both{{1, 2, 3}, {3}};
    m.entries[0].data = encode_conf_change({ConfChangeType::add_learner, 3}, &both);
  }
  SECTION("an entry type out of range") {
    m.entries[0].type = static_cast<EntryType>(7);
    m.entries[0].data = "x";
  }
  expect_dropped(c, m, &DroppedCounts::append_malformed);
  expect_still_commits(c, "after");
}

// ---- malformed snapshots --------------------------------------------------------------------

TEST_CASE("robustness: a follower drops a snapshot with inconsistent metadata",
          "[raft][robustness]") {
  Cluster c = healthy();
  const uint64_t term = c.raft(2).term();
  const uint64_t ahead = c.raft(2).last_index() + 10;
  Message m = msg(MessageType::snap, 1, 2, term);
  SECTION("no snapshot") {}
  SECTION("index 0") {
    m.snapshot = snapshot(0, term, ConfState{{1, 2, 3}, {}});
  }
  SECTION("term 0") {
    m.snapshot = snapshot(ahead, 0, ConfState{{1, 2, 3}, {}});
  }
  SECTION("term above the message term") {
    m.snapshot = snapshot(ahead, term + 1, ConfState{{1, 2, 3}, {}});
  }
  SECTION("no voter") {
    m.snapshot = snapshot(ahead, term, ConfState{{}, {2}});
  }
  SECTION("voters unsorted") {
    m.snapshot = snapshot(ahead, term, ConfState{{3, 1, 2}, {}});
  }
  SECTION("node id 0") {
    m.snapshot = snapshot(ahead, term, ConfState{{0, 1, 2}, {}});
  }
  expect_dropped(c, m, &DroppedCounts::snapshot_malformed);
  expect_still_commits(c, "after");
}

// ---- malformed headers ----------------------------------------------------------------------

TEST_CASE("robustness: messages with a missing or unexpected term are dropped",
          "[raft][robustness]") {
  SECTION("a term-0 pre-vote at a fresh member") {
    Cluster c(3);
    Message m = msg(MessageType::pre_vote, 2, 3, 0);
    expect_dropped(c, m, &DroppedCounts::malformed);
    c.elect(1);
    expect_still_commits(c, "after");
  }
  SECTION("a term-0 heartbeat at the leader") {
    Cluster c = healthy();
    Message m = msg(MessageType::heartbeat, 2, 1, 0);
    expect_dropped(c, m, &DroppedCounts::malformed);
    expect_still_commits(c, "after");
  }
  SECTION("a term-0 append at a follower of a later term") {
    Cluster c = healthy();
    Message m = append_at_tail(c, 3, 2, {});
    m.term = 0;
    expect_dropped(c, m, &DroppedCounts::malformed);
    expect_still_commits(c, "after");
  }
  SECTION("a forwarded proposal with a term") {
    Cluster c = healthy();
    Message m = msg(MessageType::prop, 2, 1, c.raft(1).term() + 3);
    m.entries.push_back(Entry{0, 0, EntryType::normal, "p"});
    expect_dropped(c, m, &DroppedCounts::malformed);
    REQUIRE(c.raft(1).role() == Role::leader);
    expect_still_commits(c, "after");
  }
}

TEST_CASE("robustness: messages from no one or from the member itself are dropped",
          "[raft][robustness]") {
  Cluster c = healthy();
  // The leader's own progress moves only for what it persisted (advance()); a forged
  // acknowledgement from itself must not count it towards a quorum for an unsynced entry.
  REQUIRE(c.raft(1).propose("unsynced").ok());
  Message m = msg(MessageType::app_resp, 1, 1, c.raft(1).term());
  m.index = c.raft(1).last_index();
  SECTION("from itself") {}
  SECTION("from 0") {
    m.from = kNoNode;
  }
  SECTION("a proposal from itself") {
    // Before a second hop travelled under the forwarder's id, a proposal could come back to its
    // origin this way; validate() has always refused it.
    m = msg(MessageType::prop, 1, 1, 0);
    m.entries.push_back(Entry{0, 0, EntryType::normal, "looped"});
  }
  const uint64_t match = c.raft(1).progress(1)->match;
  const DroppedCounts counts = c.raft(1).dropped();
  c.raft(1).step(m);
  REQUIRE(c.raft(1).progress(1)->match == match);
  REQUIRE(c.raft(1).dropped().malformed == counts.malformed + 1);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a follower passes a forwarded request on under its own id",
          "[raft][robustness]") {
  // The transport drops a whole batch (and closes the stream) when a message's from is not the
  // member at the other end of the stream, so a second hop must not keep the origin's id.
  Cluster c = healthy();
  Message p = msg(MessageType::prop, 3, 2, 0);
  p.entries.push_back(Entry{0, 0, EntryType::normal, "two-hops"});
  Message t = msg(MessageType::transfer_leader, 3, 2, c.raft(2).term());
  t.index = 3;
  Message r = msg(MessageType::read_index, 3, 2, 0);
  r.context = "third-party";
  c.raft(2).step(p);
  c.raft(2).step(t);
  c.raft(2).step(r);
  const std::vector<Message> out = c.take();
  REQUIRE(out.size() == 2);  // the read is not passed on: the answer could not reach 3
  for (const Message& m : out) {
    CHECK(m.from == 2);
    CHECK(m.to == 1);
    CHECK((m.type == MessageType::prop || m.type == MessageType::transfer_leader));
  }
  for (const Message& m : out)
    c.deliver(m);
  c.stabilize();
  REQUIRE(c.member(3).applied.back().data == "two-hops");
  REQUIRE(c.raft(3).role() == Role::leader);  // the transfer went through
  REQUIRE(c.raft(2).dropped().total() == 0);
}

TEST_CASE("robustness: a message type out of range is dropped", "[raft][robustness]") {
  Cluster c = healthy();
  Message m = msg(static_cast<MessageType>(200), 2, 3, c.raft(3).term() + 5);
  expect_dropped(c, m, &DroppedCounts::malformed);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a forwarded read or proposal that no member builds is dropped",
          "[raft][robustness]") {
  Cluster c = healthy();
  SECTION("a read without context") {
    Message m = msg(MessageType::read_index, 2, 1, 0);
    expect_dropped(c, m, &DroppedCounts::malformed);
  }
  SECTION("a proposal entry of unknown type") {
    Message m = msg(MessageType::prop, 2, 1, 0);
    m.entries.push_back(Entry{0, 0, static_cast<EntryType>(9), "p"});
    expect_dropped(c, m, &DroppedCounts::malformed);
  }
  expect_still_commits(c, "after");
}

// ---- non-members ----------------------------------------------------------------------------

TEST_CASE("robustness: votes from non-voters never elect a candidate", "[raft][robustness]") {
  Cluster c(3, 1);
  c.cut(1, 2);
  c.cut(1, 3);
  c.raft(1).campaign();  // pre-vote: asks 2 and 3, which never hear it
  c.stabilize();
  REQUIRE(c.raft(1).role() == Role::pre_candidate);
  const uint64_t future = c.raft(1).term() + 1;
  for (NodeId from : {NodeId{4}, NodeId{8}, NodeId{9}}) {  // a learner and two strangers
    Message m = msg(MessageType::pre_vote_resp, from, 1, future);
    c.deliver(m);
  }
  REQUIRE(c.raft(1).role() == Role::pre_candidate);
  REQUIRE(c.raft(1).dropped().from_non_member == 3);
  c.heal();
  c.elect(1);
  REQUIRE(c.raft(1).role() == Role::leader);
  expect_still_commits(c, "after");
}

TEST_CASE("robustness: a leader ignores responses from ids it has no progress for",
          "[raft][robustness]") {
  Cluster c = healthy();
  Message a = msg(MessageType::app_resp, 9, 1, c.raft(1).term());
  a.index = c.raft(1).last_index();
  Message h = msg(MessageType::heartbeat_resp, 9, 1, c.raft(1).term());
  expect_dropped(c, a, &DroppedCounts::from_non_member);
  expect_dropped(c, h, &DroppedCounts::from_non_member);
  expect_still_commits(c, "after");
}

// ---- removed members ------------------------------------------------------------------------

TEST_CASE("robustness: a removed member cannot be added back", "[raft][robustness][6]") {
  Cluster c(3, 1);
  c.elect(1);
  REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::remove_node, 4}).ok());
  c.stabilize();
  REQUIRE(!c.raft(1).conf_state().contains(4));
  SECTION("proposed on the leader") {
    REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::add_learner, 4}).status ==
            ProposeStatus::invalid);
    REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::add_voter, 4}).status ==
            ProposeStatus::invalid);
  }
  SECTION("forwarded by a follower") {
    // Seed 68061 of the simulator: a promotion forwarded while the removal committed.
    REQUIRE(c.raft(2).propose_conf_change({ConfChangeType::add_voter, 4}).status ==
            ProposeStatus::forwarded);
    c.stabilize();
    REQUIRE(!c.raft(1).conf_state().contains(4));
  }
  SECTION("long after the removal, once the history is trimmed") {
    for (int i = 0; i < 30; ++i) {
      REQUIRE(c.raft(1).propose("w" + std::to_string(i)).ok());
      c.stabilize();
    }
    REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::add_learner, 5}).ok());
    c.stabilize();
    REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::remove_node, 5}).ok());
    c.stabilize();
    REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::add_learner, 4}).status ==
            ProposeStatus::invalid);
    REQUIRE(c.raft(1).propose_conf_change({ConfChangeType::add_learner, 5}).status ==
            ProposeStatus::invalid);
  }
  SECTION("on a new leader that saw the removal as a follower") {
    c.isolate(1);
    c.tick_all(40);
    const NodeId l = c.leader();
    REQUIRE((l == 2 || l == 3));
    REQUIRE(c.raft(l).propose_conf_change({ConfChangeType::add_voter, 4}).status ==
            ProposeStatus::invalid);
  }
  // A fresh id and a demotion/promotion of current members are still fine.
  c.heal();
  c.tick_all(40);
  const NodeId l = c.leader();
  REQUIRE(l != kNoNode);
  c.add(6, ConfState{});
  REQUIRE(c.raft(l).propose_conf_change({ConfChangeType::add_learner, 6}).ok());
  c.stabilize();
  REQUIRE(c.raft(l).propose_conf_change({ConfChangeType::add_voter, 6}).ok());
  c.stabilize();
  REQUIRE(c.raft(l).conf_state().is_voter(6));
}
