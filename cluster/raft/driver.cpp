#include "cluster/raft/driver.hpp"

namespace keel::raft {
namespace {

// True if rd holds the first entry of the member's current term: its leadership began after the
// previous Ready, so its term and vote are not durable yet, even though its soft state may look
// unchanged (a single voter that steps down and wins again between two Readys). Conservative
// when the entry before the batch is compacted.
bool starts_term(const RawNode& raw, const Ready& rd) {
  const uint64_t term = raw.term();
  for (size_t i = 0; i < rd.entries.size(); ++i) {
    if (rd.entries[i].term != term) continue;
    if (i > 0) return true;  // the batch crosses into the term
    const uint64_t index = rd.entries[i].index;
    if (index <= 1) return true;
    const auto prev = raw.log_term(index - 1);
    return !prev || *prev != term;
  }
  return false;
}

}  // namespace

bool drive_ready(RawNode& raw, ReadyHandler& handler, const DriveOptions& options) {
  for (int cycle = 0; cycle < options.max_cycles && raw.has_ready(); ++cycle) {
    Ready rd = raw.ready();
    // Leader now and at the previous Ready, in the same term: its term and vote were persisted
    // by an earlier Ready. No soft-state change is not enough (see starts_term).
    const bool early = options.leader_sends_first && raw.role() == Role::leader && !rd.soft_state &&
                       !rd.snapshot && !starts_term(raw, rd);
    if (early && !handler.send(rd.messages)) return false;
    const bool wrote = rd.snapshot || !rd.entries.empty() || rd.hard_state;
    if (wrote && !handler.persist(rd)) return false;
    if (!early && !handler.send(rd.messages)) return false;
    if (!handler.apply(rd)) return false;
    raw.advance(rd);
    if (!handler.advanced()) return false;
  }
  return true;
}

}  // namespace keel::raft
