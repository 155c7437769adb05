#include "cluster/raft/types.hpp"

#include <algorithm>

namespace keel::raft {
namespace {

bool has(const std::vector<NodeId>& v, NodeId id) {
  return std::binary_search(v.begin(), v.end(), id);
}
void insert_sorted(std::vector<NodeId>* v, NodeId id) {
  v->insert(std::lower_bound(v->begin(), v->end(), id), id);
}
void erase_id(std::vector<NodeId>* v, NodeId id) {
  auto it = std::lower_bound(v->begin(), v->end(), id);
  if (it != v->end() && *it == id) v->erase(it);
}

void put_u64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
bool get_u64(const std::string& in, size_t* pos, uint64_t* v) {
  if (*pos > in.size() || in.size() - *pos < 8) return false;
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i)
    r |= static_cast<uint64_t>(static_cast<unsigned char>(in[*pos + i])) << (8 * i);
  *pos += 8;
  *v = r;
  return true;
}
void put_ids(std::string* out, const std::vector<NodeId>& ids) {
  put_u64(out, ids.size());
  for (NodeId id : ids)
    put_u64(out, id);
}
bool get_ids(const std::string& in, size_t* pos, std::vector<NodeId>* ids) {
  uint64_t n = 0;
  if (!get_u64(in, pos, &n) || n > (in.size() - *pos) / 8) return false;
  ids->clear();
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t id = 0;
    if (!get_u64(in, pos, &id)) return false;
    ids->push_back(id);
  }
  return std::is_sorted(ids->begin(), ids->end());
}

}  // namespace

bool ConfState::is_voter(NodeId id) const {
  return has(voters, id);
}
bool ConfState::is_learner(NodeId id) const {
  return has(learners, id);
}

bool conf_well_formed(const ConfState& conf) {
  auto ids_ok = [](const std::vector<NodeId>& ids) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == kNoNode || (i > 0 && ids[i - 1] >= ids[i])) return false;
    }
    return true;
  };
  if (conf.voters.empty() || !ids_ok(conf.voters) || !ids_ok(conf.learners)) return false;
  for (NodeId l : conf.learners) {
    if (conf.is_voter(l)) return false;
  }
  return true;
}

std::optional<ConfState> apply_conf_change(const ConfState& conf, const ConfChange& cc) {
  if (cc.node == kNoNode) return std::nullopt;
  ConfState next = conf;
  switch (cc.type) {
    case ConfChangeType::add_voter:
      if (conf.is_voter(cc.node)) return std::nullopt;
      erase_id(&next.learners, cc.node);
      insert_sorted(&next.voters, cc.node);
      break;
    case ConfChangeType::add_learner:
      if (conf.is_learner(cc.node)) return std::nullopt;
      erase_id(&next.voters, cc.node);
      insert_sorted(&next.learners, cc.node);
      break;
    case ConfChangeType::remove_node:
      if (!conf.contains(cc.node)) return std::nullopt;
      erase_id(&next.voters, cc.node);
      erase_id(&next.learners, cc.node);
      break;
  }
  if (next.voters.empty()) return std::nullopt;
  return next;
}

std::string encode_conf_change(const ConfChange& cc, const ConfState* result,
                               const std::string& context) {
  std::string out;
  out.push_back(static_cast<char>(cc.type));
  put_u64(&out, cc.node);
  out.push_back(result ? 1 : 0);
  if (result) {
    put_ids(&out, result->voters);
    put_ids(&out, result->learners);
  }
  put_u64(&out, context.size());
  out.append(context);
  return out;
}

bool decode_conf_change(const std::string& data, ConfChange* cc, ConfState* result,
                        bool* has_result, std::string* context) {
  if (data.size() < 10) return false;
  const auto type = static_cast<uint8_t>(data[0]);
  if (type > static_cast<uint8_t>(ConfChangeType::remove_node)) return false;
  cc->type = static_cast<ConfChangeType>(type);
  size_t pos = 1;
  if (!get_u64(data, &pos, &cc->node)) return false;
  *has_result = data[pos++] != 0;
  if (*has_result) {
    if (!get_ids(data, &pos, &result->voters) || !get_ids(data, &pos, &result->learners))
      return false;
  }
  uint64_t len = 0;
  if (!get_u64(data, &pos, &len) || len != data.size() - pos) return false;
  if (context) *context = data.substr(pos);
  return true;
}

const char* to_string(MessageType t) {
  switch (t) {
    case MessageType::app:
      return "app";
    case MessageType::app_resp:
      return "app_resp";
    case MessageType::vote:
      return "vote";
    case MessageType::vote_resp:
      return "vote_resp";
    case MessageType::pre_vote:
      return "pre_vote";
    case MessageType::pre_vote_resp:
      return "pre_vote_resp";
    case MessageType::heartbeat:
      return "heartbeat";
    case MessageType::heartbeat_resp:
      return "heartbeat_resp";
    case MessageType::snap:
      return "snap";
    case MessageType::prop:
      return "prop";
    case MessageType::read_index:
      return "read_index";
    case MessageType::read_index_resp:
      return "read_index_resp";
    case MessageType::transfer_leader:
      return "transfer_leader";
    case MessageType::timeout_now:
      return "timeout_now";
  }
  return "?";
}

const char* to_string(Role r) {
  switch (r) {
    case Role::follower:
      return "follower";
    case Role::pre_candidate:
      return "pre_candidate";
    case Role::candidate:
      return "candidate";
    case Role::leader:
      return "leader";
  }
  return "?";
}

}  // namespace keel::raft
