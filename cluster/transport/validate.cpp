#include "cluster/transport/validate.hpp"

#include <limits>
#include <string>

namespace keel::transport {
namespace {

using raft::EntryType;
using raft::MessageType;

Error invalid(const raft::Message& m, const std::string& what) {
  return make_error(ErrorCode::invalid_argument, std::string("invalid ") + raft::to_string(m.type) +
                                                     " from " + std::to_string(m.from) + ": " +
                                                     what);
}

bool ids_ok(const std::vector<raft::NodeId>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == raft::kNoNode) return false;
    if (i > 0 && ids[i - 1] >= ids[i]) return false;
  }
  return true;
}

}  // namespace

Status validate_conf(const raft::ConfState& conf, const char* what) {
  auto fail = [&](const char* why) {
    return make_error(ErrorCode::invalid_argument, std::string(what) + ": " + why);
  };
  if (conf.voters.empty()) return fail("configuration has no voter");
  if (!ids_ok(conf.voters)) return fail("voters not sorted, duplicated or 0");
  if (!ids_ok(conf.learners)) return fail("learners not sorted, duplicated or 0");
  for (raft::NodeId l : conf.learners) {
    if (conf.is_voter(l))
      return fail(("node " + std::to_string(l) + " is both voter and learner").c_str());
  }
  return ok_status();
}

Status validate(const raft::Message& m, raft::NodeId self) {
  const auto type = static_cast<uint8_t>(m.type);
  if (type > static_cast<uint8_t>(MessageType::timeout_now)) {
    return make_error(ErrorCode::invalid_argument, "invalid message type " + std::to_string(type) +
                                                       " from " + std::to_string(m.from));
  }
  if (m.to != self) {
    return invalid(
        m, "to " + std::to_string(m.to) + " is not this member (" + std::to_string(self) + ")");
  }
  if (m.from == raft::kNoNode) return invalid(m, "from is 0");
  if (m.from == self) return invalid(m, "from is this member");

  const bool termless = m.type == MessageType::prop || m.type == MessageType::read_index;
  if (termless && m.term != 0) return invalid(m, "term must be 0 on a forwarded request");
  if (!termless && m.term == 0) return invalid(m, "term is 0");

  if (!m.entries.empty() && m.type != MessageType::app && m.type != MessageType::prop)
    return invalid(m, "entries on a message that carries none");
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const raft::Entry& e = m.entries[i];
    if (static_cast<uint8_t>(e.type) > static_cast<uint8_t>(EntryType::conf_change))
      return invalid(m, "entry " + std::to_string(i) + ": type out of range");
  }
  if (m.type == MessageType::app) {
    if (m.log_term > m.term) return invalid(m, "log_term above term");
    if (m.index > std::numeric_limits<uint64_t>::max() - m.entries.size())
      return invalid(m, "index + entries overflows");
    for (size_t i = 0; i < m.entries.size(); ++i) {
      const raft::Entry& e = m.entries[i];
      const std::string at =
          "entry " + std::to_string(i) + " (index " + std::to_string(e.index) + ")";
      if (e.index != m.index + 1 + i)
        return invalid(
            m, at + ": not contiguous (expected index " + std::to_string(m.index + 1 + i) + ")");
      if (e.term == 0) return invalid(m, at + ": term 0");
      if (e.term > m.term) return invalid(m, at + ": term above the message term");
      if (i == 0 ? e.term < m.log_term : e.term < m.entries[i - 1].term)
        return invalid(m, at + ": terms decrease");
      if (e.type == EntryType::conf_change) {
        raft::ConfChange cc;
        raft::ConfState result;
        bool has_result = false;
        if (!raft::decode_conf_change(e.data, &cc, &result, &has_result) || !has_result)
          return invalid(m, at + ": malformed conf_change entry");
        auto st = validate_conf(result, "conf_change entry");
        if (!st) return invalid(m, at + ": " + st.error().message);
      }
    }
  }
  if (m.type == MessageType::vote || m.type == MessageType::pre_vote) {
    if (m.log_term > m.term) return invalid(m, "log_term above term");
  }
  if (m.type == MessageType::read_index && m.context.empty()) return invalid(m, "empty context");

  if (m.type == MessageType::snap) {
    if (!m.snapshot) return invalid(m, "snapshot missing");
    const raft::SnapshotMeta& meta = m.snapshot->meta;
    if (meta.index == 0) return invalid(m, "snapshot index 0");
    if (meta.term == 0) return invalid(m, "snapshot term 0");
    if (meta.term > m.term) return invalid(m, "snapshot term above the message term");
    auto st = validate_conf(meta.conf, "snapshot");
    if (!st) return invalid(m, st.error().message);
  } else if (m.snapshot) {
    return invalid(m, "snapshot on a message that is not snap");
  }
  return ok_status();
}

}  // namespace keel::transport
