// Every decoder of the node's peer and log formats (cluster/node/wire.hpp) on random and
// mutated input: a malformed entry or app message from another member is a value (false),
// never a crash. Deterministic (seeded); run under ASan + UBSan in CI.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "cluster/node/wire.hpp"
#include "cluster/raft/rand.hpp"

using namespace keel;
namespace w = keel::node::wire;

namespace {

// Valid encodings of every format, to be mutated.
std::vector<std::string> seeds() {
  node::Member m{7, "m7", "127.0.0.1:2380", true};
  node::NodeStatus st;
  st.name = "m1";
  st.role = "leader";
  st.members = {m, {8, "m8", "[::1]:1", false}};
  std::vector<std::string> out = {
      w::encode_entry({1, 2, 3}, "command bytes"),
      w::encode_member_context({1, 2, 3}, m),
      w::encode_members(st.members),
      w::encode_removed_notice(9),
      w::encode_status_request(4),
      w::encode_status_response(4, st),
      w::encode_snapshot_chunk(5, 6, true, std::string(40, 'x')),
      w::encode_snapshot_ack({5, 6, false, "reason"}),
      w::encode_relay_subscribe({"l1", "127.0.0.1:1", 9}),
      w::encode_relay_accept({3, 4}),
      w::encode_relay_redirect({{m}, "full"}),
      w::encode_relay_ack({10, true, {{1, "l1", "a:1", 2, 10}}}),
      w::encode_relay_propose({1, "a:1", w::encode_entry({1, 2, 3}, "cmd")}),
      w::encode_relay_propose_ack({1, ErrorCode::unavailable, 4, "no leader"}),
      w::encode_relay_read({2, "a:1"}),
      w::encode_relay_read_ack({2, ErrorCode::ok, 77, ""}),
  };
  w::RelayEntries re;
  re.leader = 1;
  re.term = 2;
  re.prev_index = 5;
  re.prev_term = 2;
  re.path = {1};
  re.entries = {{6, 2, raft::EntryType::normal, "abc"}, {7, 3, raft::EntryType::conf_change, ""}};
  out.push_back(w::encode_relay_entries(re));
  st.learners = {{1, "l1", "a:1", 2, 10}};
  st.upstream_path = {2, 3};
  out.push_back(w::encode_status_response(5, st));
  return out;
}

// Runs every decoder on `in`; what they return does not matter, only that they return.
void decode_all(const std::string& in) {
  w::Origin o;
  std::string_view cmd;
  uint64_t u = 0;
  (void)w::decode_entry(in, &o, &cmd, &u);
  node::Member m;
  (void)w::decode_member_context(in, &o, &m);
  std::vector<node::Member> ms;
  (void)w::decode_members(in, &ms);
  (void)w::decode_removed_notice(in, &u);
  (void)w::decode_status_request(in, &u);
  node::NodeStatus st;
  (void)w::decode_status_response(in, &u, &st);
  w::SnapshotChunk c;
  (void)w::decode_snapshot_chunk(in, &c);
  w::SnapshotAck a;
  (void)w::decode_snapshot_ack(in, &a);
  w::RelaySubscribe rs;
  (void)w::decode_relay_subscribe(in, &rs);
  std::vector<uint64_t> path;
  (void)w::decode_relay_accept(in, &path);
  w::RelayRedirect rr;
  (void)w::decode_relay_redirect(in, &rr);
  w::RelayEntries re;
  (void)w::decode_relay_entries(in, &re);
  w::RelayAck ra;
  (void)w::decode_relay_ack(in, &ra);
  w::RelayPropose rp;
  (void)w::decode_relay_propose(in, &rp);
  w::RelayProposeAck rpa;
  (void)w::decode_relay_propose_ack(in, &rpa);
  w::RelayRead rd;
  (void)w::decode_relay_read(in, &rd);
  w::RelayReadAck rda;
  (void)w::decode_relay_read_ack(in, &rda);
  (void)w::app_kind(in);
  std::string copy = in;
  (void)w::stamp_entry(&copy, u);
}

}  // namespace

TEST_CASE("node wire decoders survive 200k random and mutated inputs", "[node][wire][fuzz]") {
  raft::Rng rng(20261202);
  const auto base = seeds();
  int decoded_ok = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string in;
    if (rng.below(4) == 0) {
      in.resize(rng.below(64));
      for (auto& ch : in)
        ch = static_cast<char>(rng.below(256));
    } else {
      in = base[rng.below(base.size())];
      const int edits = 1 + static_cast<int>(rng.below(4));
      for (int e = 0; e < edits && !in.empty(); ++e) {
        switch (rng.below(4)) {
          case 0:  // flip a byte
            in[rng.below(in.size())] = static_cast<char>(rng.below(256));
            break;
          case 1:  // truncate
            in.resize(rng.below(in.size()));
            break;
          case 2:  // grow
            in.append(rng.below(16), static_cast<char>(rng.below(256)));
            break;
          default:  // a huge length field
            if (in.size() > 9) {
              size_t at = 1 + rng.below(in.size() - 9);
              for (int k = 0; k < 8; ++k)
                in[at + k] = '\xff';
            }
        }
      }
    }
    decode_all(in);
    w::Origin o;
    std::string_view cmd;
    decoded_ok += w::decode_entry(in, &o, &cmd) ? 1 : 0;
  }
  // The mutations leave some inputs valid: the decoders were exercised on both paths.
  CHECK(decoded_ok > 0);
  CHECK(decoded_ok < 200000);
}
