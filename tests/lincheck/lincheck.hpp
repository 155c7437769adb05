#pragma once
// keel_lincheck: a linearizability checker for key-value histories (standard library only).
//
// The algorithm is Wing & Gong's, with Lowe's memoisation, as in Porcupine ("just-in-time
// linearization"): a depth-first search over the history's events in real-time order that
// linearizes one pending call at a time, backtracks when a return is reached whose call could not
// be linearized, and never revisits a (set of linearized operations, model state) pair it has
// already explored. Keys are independent registers, so the history is checked one key at a time
// (P-compositionality: a history is linearizable iff each key's sub-history is).
//
// The model is a register per key: put(v), get() -> value | absent, cas(expected, new) -> ok |
// fail (expected may be "absent"), delete(). Operation a precedes operation b iff a.ret < b.call;
// otherwise they are concurrent (equal times overlap). An operation without a reply (timeout,
// crash: ret == kNoReply) may have taken effect at any point after its call, or never; its output
// is not constrained.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace keel::lincheck {

inline constexpr uint64_t kNoReply = UINT64_MAX;  // return time of an operation with no reply

enum class OpKind : uint8_t { put, get, cas, del };
const char* to_string(OpKind kind);

struct Operation {
  uint64_t client = 0;
  std::string key;
  OpKind kind = OpKind::get;
  std::string value;                    // put: the value written; cas: the new value
  std::optional<std::string> expected;  // cas: the value expected (nullopt: key absent)
  std::optional<std::string> output;    // get: the value read (nullopt: absent)
  bool ok = true;                       // cas: it swapped
  uint64_t call = 0;                    // any monotonic clock; call <= ret
  uint64_t ret = kNoReply;              // kNoReply: no reply, outcome unknown
  bool replied() const { return ret != kNoReply; }
};

// Builders (ret defaults to "no reply").
Operation put(uint64_t client, std::string key, std::string value, uint64_t call,
              uint64_t ret = kNoReply);
Operation get(uint64_t client, std::string key, std::optional<std::string> output, uint64_t call,
              uint64_t ret = kNoReply);
Operation cas(uint64_t client, std::string key, std::optional<std::string> expected,
              std::string value, bool ok, uint64_t call, uint64_t ret = kNoReply);
Operation del(uint64_t client, std::string key, uint64_t call, uint64_t ret = kNoReply);

// "client 3 cas(a, b) -> ok [10, 14]": for failure messages.
std::string describe(const Operation& op);

enum class Outcome : uint8_t {
  ok,         // linearizable
  violation,  // not linearizable: see key, ops, description
  unknown,    // the step budget ran out before an answer
};
const char* to_string(Outcome outcome);

struct CheckResult {
  Outcome outcome = Outcome::ok;
  std::string key;  // violation: the key whose sub-history is not linearizable; unknown: the
                    // key being checked when the budget ran out
  // violation: indices into the history of the offending operations: the operation that cannot
  // take effect anywhere, then the last write of the longest linearizable prefix found before it
  // (if any), then the operations concurrent with it that were still pending there.
  std::vector<size_t> ops;
  std::string description;  // violation: those operations and the state, one line each
  uint64_t steps = 0;       // search steps spent (all keys)
  bool ok() const { return outcome == Outcome::ok; }
};

// Checks the whole history. budget_steps bounds the search (all keys together); running out
// yields Outcome::unknown unless some key already showed a violation. Throws
// std::invalid_argument for an operation whose call is after its return.
CheckResult check(const std::vector<Operation>& history, uint64_t budget_steps = 100'000'000);

}  // namespace keel::lincheck
