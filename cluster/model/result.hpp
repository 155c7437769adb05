#pragma once
// Expected outcomes as values (KJ style): Result<T> holds either a T or an Error. Bugs are
// KEEL_ASSERT failures, which stay on in release builds and abort with the location.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace keel {

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line,
                                     const char* msg) {
  std::fprintf(stderr, "keel: assertion failed: %s at %s:%d%s%s\n", expr, file, line,
               msg[0] ? ": " : "", msg);
  std::abort();
}
#define KEEL_ASSERT(cond, ...) \
  ((cond) ? (void)0 : ::keel::assert_fail(#cond, __FILE__, __LINE__, "" __VA_ARGS__))

// Stable codes: they cross the RPC edge (capnp/keel.capnp ErrorCode has the same names) and
// keelctl's exit status and messages depend on them. Add a code only if a caller reacts to it.
enum class ErrorCode : uint16_t {
  ok = 0,
  invalid_argument,      // malformed request; message names the field
  empty_key,             // key is empty
  key_too_large,         // key longer than limits.max_key_bytes
  value_too_large,       // value longer than limits.max_value_bytes
  request_too_large,     // encoded request longer than limits.max_request_bytes
  too_many_ops,          // txn with more than limits.max_txn_ops operations
  duplicate_key,         // txn writes the same key twice
  range_end_before_key,  // range_end sorts before key
  compacted,             // revision below the compact revision; Error::compact_revision is set
  future_revision,       // revision above the current revision
  lease_not_found,       // lease id unknown
  too_many_watchers,     // limits.max_watchers reached
  not_leader,            // this member cannot accept writes now
  timeout,               // deadline passed
  shutting_down,         // the agent is stopping; the request was not applied
  permission_denied,     // peer credentials do not allow this
  internal,              // storage or other failure that is not the caller's fault
  key_not_found,         // put with ignore_value/ignore_lease on a key that does not exist
  unavailable,           // no leader could be reached within the wait; retry later
  overloaded,            // a bound (named in the message) is full; retry later
  outcome_unknown,   // the write may or may not have been applied (leader lost mid-flight); read
                     // before retrying
  removed,           // this member was removed from the cluster; talk to another member
  fenced,            // a write's fencing token is not the lock's current holder's
  lock_not_held,     // unlock (or a handle call) by a lease that does not hold the lock
  ttl_out_of_range,  // lease TTL below lease.min_ttl_ms or above lease.max_ttl_ms
  too_many_leases,   // limits.max_leases_per_agent reached
  lease_exists,      // grant of a lease id that is already granted
  semaphore_max_mismatch,  // acquire with a max other than the semaphore's
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;
  int64_t compact_revision = 0;  // set with ErrorCode::compacted
  int64_t current_revision = 0;  // set with ErrorCode::future_revision
};

inline Error make_error(ErrorCode code, std::string message) {
  return Error{code, std::move(message), 0, 0};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & {
    KEEL_ASSERT(ok(), "Result::value() on an error");
    return std::get<0>(v_);
  }
  const T& value() const& {
    KEEL_ASSERT(ok(), "Result::value() on an error");
    return std::get<0>(v_);
  }
  T&& value() && {
    KEEL_ASSERT(ok(), "Result::value() on an error");
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const& {
    KEEL_ASSERT(!ok(), "Result::error() on a value");
    return std::get<1>(v_);
  }
  Error&& error() && {
    KEEL_ASSERT(!ok(), "Result::error() on a value");
    return std::get<1>(std::move(v_));
  }

 private:
  std::variant<T, Error> v_;
};

struct Unit {};
using Status = Result<Unit>;
inline Status ok_status() {
  return Unit{};
}

}  // namespace keel
