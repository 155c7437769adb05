#include "cluster/raft/driver.hpp"

namespace keel::raft {

bool drive_ready(RawNode& raw, ReadyHandler& handler, const DriveOptions& options) {
  for (int cycle = 0; cycle < options.max_cycles && raw.has_ready(); ++cycle) {
    Ready rd = raw.ready();
    // Leader now and at the previous Ready (no soft-state change): its term and vote were
    // persisted by an earlier Ready, since any term change ends leadership.
    const bool early =
        options.leader_sends_first && raw.role() == Role::leader && !rd.soft_state;
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
