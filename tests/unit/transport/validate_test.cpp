// validate(): every malformed input that could reach a KEEL_RAFT_ASSERT in the core (or that no
// correct member sends) is rejected with a message naming what is wrong.
#include <catch2/catch.hpp>

#include "cluster/transport/validate.hpp"
#include "tests/unit/transport/helpers.hpp"

using namespace keel::transport;
using namespace keel::transport::test;
using keel::raft::ConfState;
using keel::raft::EntryType;

namespace {

std::string rejects(const Message& m, NodeId self = 2) {
  auto st = validate(m, self);
  if (st.ok()) return "(accepted)";
  return st.error().message;
}

bool mentions(const std::string& msg, const std::string& what) {
  return msg.find(what) != std::string::npos;
}

#define REQUIRE_REJECTS(m, what)         \
  do {                                   \
    const std::string msg_ = rejects(m); \
    INFO(msg_);                          \
    REQUIRE(mentions(msg_, what));       \
  } while (0)

}  // namespace

TEST_CASE("validate: well-formed messages of every type pass", "[transport][validate]") {
  for (auto type : all_types()) {
    INFO(keel::raft::to_string(type));
    auto st = validate(make_message(type, 1, 2), 2);
    INFO((st.ok() ? std::string() : st.error().message));
    REQUIRE(st.ok());
  }
  // An append with no entries (a probe) and one starting at index 1.
  Message probe = make_message(MessageType::app, 1, 2);
  probe.entries.clear();
  REQUIRE(validate(probe, 2).ok());
  Message first = make_message(MessageType::app, 1, 2);
  first.index = 0;
  first.log_term = 0;
  for (size_t i = 0; i < first.entries.size(); ++i)
    first.entries[i].index = 1 + i;
  REQUIRE(validate(first, 2).ok());
}

TEST_CASE("validate: addressing", "[transport][validate]") {
  Message m = make_message(MessageType::heartbeat, 1, 3);
  REQUIRE_REJECTS(m, "to 3 is not this member (2)");
  m = make_message(MessageType::heartbeat, 0, 2);
  REQUIRE_REJECTS(m, "from is 0");
  m = make_message(MessageType::heartbeat, 2, 2);
  REQUIRE_REJECTS(m, "from is this member");
  m = make_message(MessageType::heartbeat, 1, 2);
  m.type = static_cast<MessageType>(14);
  REQUIRE_REJECTS(m, "invalid message type 14");
  m.type = static_cast<MessageType>(255);
  REQUIRE_REJECTS(m, "invalid message type 255");
}

TEST_CASE("validate: terms", "[transport][validate]") {
  for (auto type : all_types()) {
    Message m = make_message(type, 1, 2);
    INFO(keel::raft::to_string(type));
    if (type == MessageType::prop || type == MessageType::read_index) {
      m.term = 3;
      REQUIRE_REJECTS(m, "term must be 0 on a forwarded request");
    } else {
      m.term = 0;
      REQUIRE_REJECTS(m, "term is 0");
    }
  }
  Message v = make_message(MessageType::vote, 1, 2);
  v.log_term = v.term + 1;
  REQUIRE_REJECTS(v, "log_term above term");
  Message pv = make_message(MessageType::pre_vote, 1, 2);
  pv.log_term = pv.term + 1;
  REQUIRE_REJECTS(pv, "log_term above term");
  Message a = make_message(MessageType::app, 1, 2);
  a.log_term = a.term + 1;
  REQUIRE_REJECTS(a, "log_term above term");
}

TEST_CASE("validate: append entries", "[transport][validate]") {
  const Message good = make_message(MessageType::app, 1, 2);
  Message m = good;
  m.entries[1].index += 1;
  REQUIRE_REJECTS(m, "entry 1 (index 13): not contiguous (expected index 12)");
  m = good;
  m.entries[0].index = m.index;  // overlaps the previous entry
  REQUIRE_REJECTS(m, "entry 0 (index 10): not contiguous");
  m = good;
  m.entries[2].term = m.term + 1;
  REQUIRE_REJECTS(m, "entry 2 (index 13): term above the message term");
  m = good;
  m.entries[2].term = 5;
  REQUIRE_REJECTS(m, "entry 2 (index 13): terms decrease");
  m = good;
  m.entries[0].term = m.log_term - 1;
  REQUIRE_REJECTS(m, "entry 0 (index 11): terms decrease");
  m = good;
  m.entries[1].term = 0;
  REQUIRE_REJECTS(m, "entry 1 (index 12): term 0");
  m = good;
  m.entries[1].type = static_cast<EntryType>(2);
  REQUIRE_REJECTS(m, "entry 1: type out of range");
  m = good;
  m.index = UINT64_MAX - 1;
  REQUIRE_REJECTS(m, "index + entries overflows");
  m = good;
  m.entries[3].data = "garbage";
  REQUIRE_REJECTS(m, "entry 3 (index 14): malformed conf_change entry");
  m = good;
  m.entries[3].data =
      keel::raft::encode_conf_change({keel::raft::ConfChangeType::add_voter, 4}, nullptr);
  REQUIRE_REJECTS(m, "malformed conf_change entry");  // no resulting configuration
  ConfState dup{{1, 2}, {2}};
  m.entries[3].data =
      keel::raft::encode_conf_change({keel::raft::ConfChangeType::add_learner, 2}, &dup);
  REQUIRE_REJECTS(m, "node 2 is both voter and learner");
  ConfState none{{}, {4}};
  m.entries[3].data =
      keel::raft::encode_conf_change({keel::raft::ConfChangeType::remove_node, 1}, &none);
  REQUIRE_REJECTS(m, "configuration has no voter");
  ConfState twice{{1, 1, 2}, {}};
  m.entries[3].data =
      keel::raft::encode_conf_change({keel::raft::ConfChangeType::add_voter, 2}, &twice);
  REQUIRE_REJECTS(m, "voters not sorted, duplicated or 0");

  // Entries only travel on app and prop.
  Message hb = make_message(MessageType::heartbeat, 1, 2);
  hb.entries.push_back(good.entries[0]);
  REQUIRE_REJECTS(hb, "entries on a message that carries none");
  Message prop = make_message(MessageType::prop, 1, 2);
  prop.entries[0].type = static_cast<EntryType>(9);
  REQUIRE_REJECTS(prop, "entry 0: type out of range");
}

TEST_CASE("validate: snapshots", "[transport][validate]") {
  const Message good = make_message(MessageType::snap, 1, 2);
  Message m = good;
  m.snapshot.reset();
  REQUIRE_REJECTS(m, "snapshot missing");
  auto with_meta = [&](auto change) {
    Message x = good;
    auto s = std::make_shared<keel::raft::Snapshot>(*good.snapshot);
    change(*s);
    x.snapshot = s;
    return x;
  };
  REQUIRE_REJECTS(with_meta([](auto& s) { s.meta.index = 0; }), "snapshot index 0");
  REQUIRE_REJECTS(with_meta([](auto& s) { s.meta.term = 0; }), "snapshot term 0");
  REQUIRE_REJECTS(with_meta([](auto& s) { s.meta.term = 8; }),
                  "snapshot term above the message term");
  REQUIRE_REJECTS(with_meta([](auto& s) { s.meta.conf.voters.clear(); }),
                  "snapshot: configuration has no voter");
  REQUIRE_REJECTS(with_meta([](auto& s) {
                    s.meta.conf.voters = {3, 1};
                  }),
                  "snapshot: voters not sorted");
  REQUIRE_REJECTS(with_meta([](auto& s) {
                    s.meta.conf.voters = {0, 1};
                  }),
                  "snapshot: voters not sorted, duplicated or 0");
  REQUIRE_REJECTS(with_meta([](auto& s) {
                    s.meta.conf.learners = {5, 4};
                  }),
                  "snapshot: learners not sorted");
  REQUIRE_REJECTS(with_meta([](auto& s) { s.meta.conf.learners = {3}; }),
                  "snapshot: node 3 is both voter and learner");

  Message hb = make_message(MessageType::heartbeat, 1, 2);
  hb.snapshot = good.snapshot;
  REQUIRE_REJECTS(hb, "snapshot on a message that is not snap");
}

TEST_CASE("validate: read_index needs a context", "[transport][validate]") {
  Message m = make_message(MessageType::read_index, 1, 2);
  m.context.clear();
  REQUIRE_REJECTS(m, "read_index from 1: empty context");
}
