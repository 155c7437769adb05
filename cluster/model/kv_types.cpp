#include "cluster/model/kv_types.hpp"

namespace keel {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::ok:
      return "ok";
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::empty_key:
      return "empty_key";
    case ErrorCode::key_too_large:
      return "key_too_large";
    case ErrorCode::value_too_large:
      return "value_too_large";
    case ErrorCode::request_too_large:
      return "request_too_large";
    case ErrorCode::too_many_ops:
      return "too_many_ops";
    case ErrorCode::duplicate_key:
      return "duplicate_key";
    case ErrorCode::range_end_before_key:
      return "range_end_before_key";
    case ErrorCode::compacted:
      return "compacted";
    case ErrorCode::future_revision:
      return "future_revision";
    case ErrorCode::lease_not_found:
      return "lease_not_found";
    case ErrorCode::too_many_watchers:
      return "too_many_watchers";
    case ErrorCode::not_leader:
      return "not_leader";
    case ErrorCode::timeout:
      return "timeout";
    case ErrorCode::shutting_down:
      return "shutting_down";
    case ErrorCode::permission_denied:
      return "permission_denied";
    case ErrorCode::internal:
      return "internal";
    case ErrorCode::key_not_found:
      return "key_not_found";
    case ErrorCode::unavailable:
      return "unavailable";
    case ErrorCode::overloaded:
      return "overloaded";
    case ErrorCode::outcome_unknown:
      return "outcome_unknown";
    case ErrorCode::removed:
      return "removed";
    case ErrorCode::fenced:
      return "fenced";
    case ErrorCode::lock_not_held:
      return "lock_not_held";
    case ErrorCode::ttl_out_of_range:
      return "ttl_out_of_range";
    case ErrorCode::too_many_leases:
      return "too_many_leases";
    case ErrorCode::lease_exists:
      return "lease_exists";
    case ErrorCode::semaphore_max_mismatch:
      return "semaphore_max_mismatch";
  }
  return "unknown";
}

}  // namespace keel

namespace keel::storage {

// etcd's rule: increment the last byte that is not 0xff and drop what follows; a prefix of
// only 0xff bytes (or empty) has no end, which is spelled "\0" (every key >= prefix).
std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

}  // namespace keel::storage
