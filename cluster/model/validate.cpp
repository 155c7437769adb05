// Structural checks of requests against the limits. The store relies on them: apply()
// re-checks every command with unlimited sizes, so e.g. a txn branch never writes a key
// twice and every enum is in range.
#include <algorithm>
#include <set>

#include "cluster/model/kv_types.hpp"

namespace keel::storage {
namespace {

Error error(ErrorCode code, const std::string& where, const std::string& message) {
  return make_error(code, where.empty() ? message : where + ": " + message);
}

std::optional<Error> check_key(const std::string& where, const char* field, const std::string& key,
                               const Limits& limits) {
  if (key.empty()) return error(ErrorCode::empty_key, where, std::string(field) + " is empty");
  if (key.size() > limits.max_key_bytes) {
    return error(ErrorCode::key_too_large, where,
                 std::string(field) + " is " + std::to_string(key.size()) + " bytes; limit is " +
                     std::to_string(limits.max_key_bytes) + " (limits.max_key_bytes)");
  }
  return std::nullopt;
}

// key must already be checked. "\0" means every key >= key; otherwise range_end must not
// sort before key (range_end == key is an empty range, as in etcd).
std::optional<Error> check_range_end(const std::string& where, const std::string& key,
                                     const std::string& range_end, const Limits& limits) {
  if (range_end.empty() || range_end == std::string(1, '\0')) return std::nullopt;
  if (range_end.size() > limits.max_key_bytes) {
    return error(ErrorCode::key_too_large, where,
                 "range_end is " + std::to_string(range_end.size()) + " bytes; limit is " +
                     std::to_string(limits.max_key_bytes) + " (limits.max_key_bytes)");
  }
  if (range_end < key) {
    return error(ErrorCode::range_end_before_key, where,
                 "range_end sorts before key (use \"\\0\" for every key >= key)");
  }
  return std::nullopt;
}

std::optional<Error> check_non_negative(const std::string& where, const char* field,
                                        int64_t value) {
  if (value < 0) {
    return error(ErrorCode::invalid_argument, where,
                 std::string(field) + " is " + std::to_string(value) + "; it must be >= 0");
  }
  return std::nullopt;
}

std::optional<Error> check_value(const std::string& where, const char* field,
                                 const std::string& value, const Limits& limits) {
  if (value.size() > limits.max_value_bytes) {
    return error(ErrorCode::value_too_large, where,
                 std::string(field) + " is " + std::to_string(value.size()) + " bytes; limit is " +
                     std::to_string(limits.max_value_bytes) + " (limits.max_value_bytes)");
  }
  return std::nullopt;
}

#define KEEL_CHECK(expr)              \
  do {                                \
    if (auto e_ = (expr)) return *e_; \
  } while (0)

std::optional<Error> check_range(const std::string& where, const RangeRequest& r,
                                 const Limits& limits) {
  KEEL_CHECK(check_key(where, "key", r.key, limits));
  KEEL_CHECK(check_range_end(where, r.key, r.range_end, limits));
  KEEL_CHECK(check_non_negative(where, "revision", r.revision));
  KEEL_CHECK(check_non_negative(where, "limit", r.limit));
  KEEL_CHECK(check_non_negative(where, "min_mod_revision", r.min_mod_revision));
  KEEL_CHECK(check_non_negative(where, "max_mod_revision", r.max_mod_revision));
  KEEL_CHECK(check_non_negative(where, "min_create_revision", r.min_create_revision));
  KEEL_CHECK(check_non_negative(where, "max_create_revision", r.max_create_revision));
  if (static_cast<uint8_t>(r.sort_order) > static_cast<uint8_t>(SortOrder::descend)) {
    return error(ErrorCode::invalid_argument, where, "sort_order has an unknown value");
  }
  if (static_cast<uint8_t>(r.sort_target) > static_cast<uint8_t>(SortTarget::value)) {
    return error(ErrorCode::invalid_argument, where, "sort_target has an unknown value");
  }
  return std::nullopt;
}

std::optional<Error> check_put(const std::string& where, const PutRequest& r,
                               const Limits& limits) {
  KEEL_CHECK(check_key(where, "key", r.key, limits));
  KEEL_CHECK(check_value(where, "value", r.value, limits));
  KEEL_CHECK(check_non_negative(where, "lease", r.lease));
  if (r.ignore_value && !r.value.empty()) {
    return error(ErrorCode::invalid_argument, where,
                 "value must be empty when ignore_value is set");
  }
  if (r.ignore_lease && r.lease != 0) {
    return error(ErrorCode::invalid_argument, where, "lease must be 0 when ignore_lease is set");
  }
  return std::nullopt;
}

std::optional<Error> check_delete(const std::string& where, const DeleteRangeRequest& r,
                                  const Limits& limits) {
  KEEL_CHECK(check_key(where, "key", r.key, limits));
  return check_range_end(where, r.key, r.range_end, limits);
}

std::optional<Error> check_compare(const std::string& where, const Compare& c,
                                   const Limits& limits) {
  KEEL_CHECK(check_key(where, "key", c.key, limits));
  KEEL_CHECK(check_range_end(where, c.key, c.range_end, limits));
  KEEL_CHECK(check_value(where, "value", c.value, limits));
  if (static_cast<uint8_t>(c.result) > static_cast<uint8_t>(CompareResult::greater)) {
    return error(ErrorCode::invalid_argument, where, "result has an unknown value");
  }
  if (static_cast<uint8_t>(c.target) > static_cast<uint8_t>(CompareTarget::lease)) {
    return error(ErrorCode::invalid_argument, where, "target has an unknown value");
  }
  return std::nullopt;
}

bool in_range(const std::string& key, const std::string& start, const std::string& end) {
  if (end.empty()) return key == start;
  if (end == std::string(1, '\0')) return key >= start;
  return key >= start && key < end;
}

// etcd's "duplicate key given in txn request": within one branch, a key may be put at most
// once and may not be both put and deleted. Overlapping deletes are allowed (the later one
// finds the keys already gone).
std::optional<Error> check_branch(const char* branch, const std::vector<RequestOp>& ops,
                                  const Limits& limits) {
  std::set<std::string> puts;
  std::vector<const DeleteRangeRequest*> deletes;
  for (size_t i = 0; i < ops.size(); i++) {
    std::string where = std::string("txn ") + branch + "[" + std::to_string(i) + "]";
    if (auto* r = std::get_if<RangeRequest>(&ops[i])) {
      KEEL_CHECK(check_range(where, *r, limits));
    } else if (auto* put = std::get_if<PutRequest>(&ops[i])) {
      KEEL_CHECK(check_put(where, *put, limits));
      if (!puts.insert(put->key).second) {
        return error(ErrorCode::duplicate_key, where,
                     "duplicate key given in txn request (the branch puts this key twice)");
      }
    } else {
      auto& del = std::get<DeleteRangeRequest>(ops[i]);
      KEEL_CHECK(check_delete(where, del, limits));
      deletes.push_back(&del);
    }
  }
  for (const auto* del : deletes) {
    auto it = puts.lower_bound(del->key);
    if (it != puts.end() && in_range(*it, del->key, del->range_end)) {
      return error(ErrorCode::duplicate_key, std::string("txn ") + branch,
                   "duplicate key given in txn request (a put and a delete_range of the same "
                   "branch both write one key)");
    }
  }
  return std::nullopt;
}

std::optional<Error> check_positive(const std::string& where, const char* field, int64_t value) {
  if (value <= 0) {
    return error(ErrorCode::invalid_argument, where,
                 std::string(field) + " is " + std::to_string(value) + "; it must be > 0");
  }
  return std::nullopt;
}

std::optional<Error> check_lock_name(const std::string& where, const char* field,
                                     const std::string& name, const Limits& limits) {
  if (name.empty())
    return error(ErrorCode::invalid_argument, where, std::string(field) + " is empty");
  if (name.size() > limits.max_lock_name_bytes) {
    return error(ErrorCode::invalid_argument, where,
                 std::string(field) + " is " + std::to_string(name.size()) + " bytes; limit is " +
                     std::to_string(limits.max_lock_name_bytes) + " (limits.max_lock_name_bytes)");
  }
  return std::nullopt;
}

std::optional<Error> check_primitive(const Command& command, const Limits& limits) {
  if (auto* g = std::get_if<LeaseGrantRequest>(&command)) {
    KEEL_CHECK(check_positive("lease grant", "id", g->id));
    return check_positive("lease grant", "ttl_ms", g->ttl_ms);
  }
  if (auto* r = std::get_if<LeaseRevokeRequest>(&command)) {
    return check_positive("lease revoke", "id", r->id);
  }
  if (auto* n = std::get_if<LeaseRenewRequest>(&command)) {
    if (n->ids.size() > limits.max_renew_ids) {
      return error(ErrorCode::invalid_argument, "lease renew",
                   "ids holds " + std::to_string(n->ids.size()) + " leases; limit is " +
                       std::to_string(limits.max_renew_ids) + " (limits.max_renew_ids)");
    }
    for (int64_t id : n->ids)
      KEEL_CHECK(check_positive("lease renew", "id", id));
    return std::nullopt;
  }
  if (auto* l = std::get_if<LockRequest>(&command)) {
    KEEL_CHECK(check_lock_name("lock", "name", l->name, limits));
    KEEL_CHECK(check_positive("lock", "lease", l->lease));
    return check_non_negative("lock", "delay_ms", l->delay_ms);
  }
  if (auto* u = std::get_if<UnlockRequest>(&command)) {
    KEEL_CHECK(check_lock_name("unlock", "name", u->name, limits));
    return check_positive("unlock", "lease", u->lease);
  }
  auto check_holder = [&](const char* where, const std::string& id) -> std::optional<Error> {
    if (id.empty()) return error(ErrorCode::invalid_argument, where, "holder_id is empty");
    if (id.size() > limits.max_holder_id_bytes) {
      return error(ErrorCode::invalid_argument, where,
                   "holder_id is " + std::to_string(id.size()) + " bytes; limit is " +
                       std::to_string(limits.max_holder_id_bytes) +
                       " (limits.max_holder_id_bytes)");
    }
    return std::nullopt;
  };
  if (auto* a = std::get_if<SemAcquireRequest>(&command)) {
    KEEL_CHECK(check_lock_name("semaphore acquire", "name", a->name, limits));
    KEEL_CHECK(check_positive("semaphore acquire", "lease", a->lease));
    KEEL_CHECK(check_positive("semaphore acquire", "max", a->max));
    if (static_cast<uint64_t>(a->max) > limits.max_semaphore_slots) {
      return error(ErrorCode::invalid_argument, "semaphore acquire",
                   "max is " + std::to_string(a->max) + "; limit is " +
                       std::to_string(limits.max_semaphore_slots) +
                       " (limits.max_semaphore_slots)");
    }
    KEEL_CHECK(check_holder("semaphore acquire", a->holder_id));
    return check_value("semaphore acquire", "metadata", a->metadata, limits);
  }
  const auto& r = std::get<SemReleaseRequest>(command);
  KEEL_CHECK(check_lock_name("semaphore release", "name", r.name, limits));
  KEEL_CHECK(check_non_negative("semaphore release", "lease", r.lease));
  return check_holder("semaphore release", r.holder_id);
}

std::optional<Error> check_command(const Command& command, const Limits& limits) {
  if (is_primitive(command)) return check_primitive(command, limits);
  if (auto* put = std::get_if<PutRequest>(&command)) return check_put("put", *put, limits);
  if (auto* del = std::get_if<DeleteRangeRequest>(&command)) {
    return check_delete("delete_range", *del, limits);
  }
  if (auto* compact = std::get_if<CompactRequest>(&command)) {
    return check_non_negative("compact", "revision", compact->revision);
  }
  const auto& txn = std::get<TxnRequest>(command);
  size_t ops = txn.success.size() + txn.failure.size();
  if (ops > limits.max_txn_ops) {
    return error(ErrorCode::too_many_ops, "txn",
                 "success and failure hold " + std::to_string(ops) + " ops; limit is " +
                     std::to_string(limits.max_txn_ops) + " (limits.max_txn_ops)");
  }
  if (txn.compare.size() > limits.max_txn_ops) {
    return error(ErrorCode::too_many_ops, "txn",
                 "compare holds " + std::to_string(txn.compare.size()) + " compares; limit is " +
                     std::to_string(limits.max_txn_ops) + " (limits.max_txn_ops)");
  }
  for (size_t i = 0; i < txn.compare.size(); i++) {
    KEEL_CHECK(check_compare("txn compare[" + std::to_string(i) + "]", txn.compare[i], limits));
  }
  if (txn.fences.size() > limits.max_txn_ops) {
    return error(ErrorCode::too_many_ops, "txn",
                 "fences holds " + std::to_string(txn.fences.size()) + " fences; limit is " +
                     std::to_string(limits.max_txn_ops) + " (limits.max_txn_ops)");
  }
  for (size_t i = 0; i < txn.fences.size(); i++) {
    const std::string where = "txn fence[" + std::to_string(i) + "]";
    KEEL_CHECK(check_lock_name(where, "lock", txn.fences[i].lock, limits));
    KEEL_CHECK(check_positive(where, "token", txn.fences[i].token));
  }
  KEEL_CHECK(check_branch("success", txn.success, limits));
  return check_branch("failure", txn.failure, limits);
}

}  // namespace

Status validate(const Command& command, const Limits& limits) {
  if (auto e = check_command(command, limits)) return *e;
  if (limits.max_request_bytes != SIZE_MAX) {
    size_t size_bytes = encode_command(command).size();
    if (size_bytes > limits.max_request_bytes) {
      return make_error(ErrorCode::request_too_large, "request is " + std::to_string(size_bytes) +
                                                          " bytes; limit is " +
                                                          std::to_string(limits.max_request_bytes) +
                                                          " (limits.max_request_bytes)");
    }
  }
  return ok_status();
}

Status validate(const RangeRequest& request, const Limits& limits) {
  if (auto e = check_range("range", request, limits)) return *e;
  return ok_status();
}

}  // namespace keel::storage
