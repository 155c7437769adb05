// drive_ready: the leader's early send (thesis §10.2.1) never sends at a term that is not durable.
#include <catch2/catch.hpp>

#include "cluster/raft/driver.hpp"
#include "tests/unit/raft/harness.hpp"

using namespace keel::raft;
using namespace keel::raft::test;

namespace {

// Persists to the member's storage and records, for every message sent, the durable term then.
class Recorder final : public ReadyHandler {
 public:
  explicit Recorder(MemoryStorage& s) : s_(s) {}
  bool persist(const Ready& rd) override {
    if (rd.snapshot) s_.apply_snapshot(rd.snapshot);
    s_.append(rd.entries);
    if (rd.hard_state) s_.set_hard_state(*rd.hard_state);
    return true;
  }
  bool send(std::vector<Message>& messages) override {
    for (const Message& m : messages)
      sent.emplace_back(m.term, s_.hard_state().term);
    return true;
  }
  bool apply(const Ready&) override { return true; }
  std::vector<std::pair<uint64_t, uint64_t>> sent;  // (message term, durable term)

 private:
  MemoryStorage& s_;
};

}  // namespace

TEST_CASE("driver: a leader re-elected in a new term between Readys persists before sending",
          "[raft][driver]") {
  // A single voter (plus a learner to send to) steps down on a higher term and wins the next
  // election within one Ready gap: its soft state (leader, lead = itself) looks unchanged, but
  // its term and vote are new and not durable. Sending first would let a crash before the write
  // re-elect it in the same term with a different log (two leaders' entries at one (index, term)).
  Cluster c(1, 1);
  c.elect(1);
  REQUIRE(c.raft(1).role() == Role::leader);
  c.stabilize();
  const uint64_t t0 = c.raft(1).term();
  Message m;
  m.type = MessageType::heartbeat_resp;
  m.from = 2;
  m.to = 1;
  m.term = t0 + 5;
  c.raft(1).step(m);
  c.raft(1).campaign();
  REQUIRE(c.raft(1).role() == Role::leader);
  REQUIRE(c.raft(1).term() > t0 + 5);

  Recorder rec(c.storage(1));
  REQUIRE(drive_ready(c.raft(1), rec, DriveOptions{true, 64}));
  REQUIRE(!rec.sent.empty());
  for (const auto& [term, durable] : rec.sent)
    CHECK(term <= durable);
}
