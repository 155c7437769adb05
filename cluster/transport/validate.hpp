#pragma once
// Stateless checks of a Raft message received from a peer, before it reaches RawNode::step().
// The core KEEL_RAFT_ASSERTs on inputs that a correct peer never sends (raft.cpp); a peer must
// never be able to crash a member, so anything that could reach one of those assertions, or
// that no correct member sends, is rejected here with a message naming what is wrong.
//
// Checked (and why):
//   - to == self (step: "message addressed to another member");
//   - from != 0 and from != self;
//   - type in range;
//   - term == 0 exactly for prop and read_index (a term-0 app/heartbeat/snap skips the term
//     checks and reaches a leader: "two leaders in one term"; a term-0 vote would be answered
//     with term 0: "vote messages carry an explicit term");
//   - entries only on app and prop; app entries contiguous from index + 1 ("malformed
//     append"), terms non-decreasing and <= term, index + count does not overflow;
//   - entry type in range; an app's conf_change entry decodes with its resulting configuration
//     ("malformed configuration entry in the log") and that configuration is well formed;
//   - snapshot present iff type == snap (handle_snapshot dereferences it), with index > 0,
//     0 < meta.term <= term and a well-formed configuration (voters non-empty; both id lists
//     sorted, without duplicates or 0, and disjoint: the core binary-searches them);
//   - log_term <= term where it names a log position (app, vote, pre_vote);
//   - read_index carries a non-empty context.
//
// Not checkable without the member's state (the core must stay robust to these, or trust its
// authenticated peers): a second leader in the same term, an app conflicting with committed
// entries, a heartbeat commit beyond the follower's log, an app_resp index beyond the leader's
// log.
#include "cluster/model/result.hpp"
#include "cluster/raft/types.hpp"

namespace keel::transport {

Status validate(const raft::Message& m, raft::NodeId self);

// A configuration as the core expects it (see above). `what` prefixes the error message.
Status validate_conf(const raft::ConfState& conf, const char* what);

}  // namespace keel::transport
