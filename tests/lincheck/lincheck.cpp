#include "tests/lincheck/lincheck.hpp"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace keel::lincheck {

const char* to_string(OpKind kind) {
  switch (kind) {
    case OpKind::put:
      return "put";
    case OpKind::get:
      return "get";
    case OpKind::cas:
      return "cas";
    case OpKind::del:
      return "delete";
  }
  return "?";
}

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::ok:
      return "ok";
    case Outcome::violation:
      return "violation";
    case Outcome::unknown:
      return "unknown";
  }
  return "?";
}

Operation put(uint64_t client, std::string key, std::string value, uint64_t call, uint64_t ret) {
  Operation op;
  op.client = client;
  op.key = std::move(key);
  op.kind = OpKind::put;
  op.value = std::move(value);
  op.call = call;
  op.ret = ret;
  return op;
}

Operation get(uint64_t client, std::string key, std::optional<std::string> output, uint64_t call,
              uint64_t ret) {
  Operation op;
  op.client = client;
  op.key = std::move(key);
  op.kind = OpKind::get;
  op.output = std::move(output);
  op.call = call;
  op.ret = ret;
  return op;
}

Operation cas(uint64_t client, std::string key, std::optional<std::string> expected,
              std::string value, bool ok, uint64_t call, uint64_t ret) {
  Operation op;
  op.client = client;
  op.key = std::move(key);
  op.kind = OpKind::cas;
  op.expected = std::move(expected);
  op.value = std::move(value);
  op.ok = ok;
  op.call = call;
  op.ret = ret;
  return op;
}

Operation del(uint64_t client, std::string key, uint64_t call, uint64_t ret) {
  Operation op;
  op.client = client;
  op.key = std::move(key);
  op.kind = OpKind::del;
  op.call = call;
  op.ret = ret;
  return op;
}

namespace {

std::string show(const std::optional<std::string>& v) {
  return v ? "\"" + *v + "\"" : std::string("absent");
}

}  // namespace

std::string describe(const Operation& op) {
  std::string s = "client " + std::to_string(op.client) + " " + to_string(op.kind) + "(";
  switch (op.kind) {
    case OpKind::put:
      s += show(op.value) + ")";
      break;
    case OpKind::get:
      s += ")";
      if (op.replied()) s += " -> " + show(op.output);
      break;
    case OpKind::cas:
      s += show(op.expected) + ", " + show(op.value) + ")";
      if (op.replied()) s += op.ok ? " -> ok" : " -> fail";
      break;
    case OpKind::del:
      s += ")";
      break;
  }
  s += " [" + std::to_string(op.call) + ", " +
       (op.replied() ? std::to_string(op.ret) : std::string("no reply")) + "]";
  return s;
}

namespace {

using State = uint32_t;  // interned value of the register; 0 = absent

// One operation of one key, values interned.
struct Op {
  OpKind kind;
  State value;     // put, cas: the value written
  State expected;  // cas
  State output;    // get
  bool ok;         // cas
  bool replied;
  size_t index;  // into the caller's history
  size_t bit;    // in the set of linearized operations with (replied) or without a reply
};

// The register model's transition; false when the operation's output is impossible in `s`.
bool step(State s, const Op& op, State* next) {
  switch (op.kind) {
    case OpKind::put:
      *next = op.value;
      return true;
    case OpKind::del:
      *next = 0;
      return true;
    case OpKind::get:
      *next = s;
      return !op.replied || op.output == s;
    case OpKind::cas:
      if (s == op.expected) {
        *next = op.value;
        return !op.replied || op.ok;
      }
      *next = s;
      return !op.replied || !op.ok;
  }
  return false;
}

// A call or return event in the doubly linked list of Lowe's algorithm; nodes[0] is the head.
struct Node {
  size_t op = 0;
  bool call = false;
  size_t match = 0;  // call: its return node (0 if none: no reply)
  size_t prev = 0, next = 0;
};
constexpr size_t kEnd = SIZE_MAX;

// The memo key: the set of linearized operations that have a reply, and the state. The set of
// linearized no-reply operations is kept beside it (see run()).
struct CacheKey {
  std::vector<uint64_t> bits;
  State state;
  uint64_t hash;
  bool operator==(const CacheKey& o) const {
    return hash == o.hash && state == o.state && bits == o.bits;
  }
};
struct CacheHash {
  size_t operator()(const CacheKey& k) const { return static_cast<size_t>(k.hash); }
};

// a is a subset of b.
bool subset(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] & ~b[i]) return false;
  return true;
}

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct KeyResult {
  Outcome outcome = Outcome::ok;
  std::vector<size_t> ops;  // indices into the caller's history
  std::string description;
};

class KeyChecker {
 public:
  KeyChecker(const std::vector<Operation>& history, const std::vector<size_t>& indices)
      : history_(history) {
    // Values no operation compares against (no get returned them, no cas expected them) behave
    // alike in every state, so they share one state: fewer distinct configurations.
    std::unordered_map<std::string, State> interned;
    for (size_t i : indices) {
      const Operation& o = history[i];
      if (o.kind == OpKind::get && o.replied() && o.output) interned.emplace(*o.output, 0);
      if (o.kind == OpKind::cas && o.expected) interned.emplace(*o.expected, 0);
    }
    names_.push_back("");                      // state 0: absent
    names_.push_back("(a value never read)");  // state 1: every value nobody observes
    auto intern = [&](const std::optional<std::string>& v) -> State {
      if (!v) return 0;
      auto it = interned.find(*v);
      if (it == interned.end()) return 1;
      if (it->second == 0) {
        it->second = static_cast<State>(names_.size());
        names_.push_back(*v);
      }
      return it->second;
    };
    for (size_t i : indices) {
      const Operation& o = history[i];
      // A get without a reply constrains nothing and changes nothing.
      if (o.kind == OpKind::get && !o.replied()) continue;
      Op op{o.kind, 0, 0, 0, o.ok, o.replied(), i, o.replied() ? finite_++ : no_reply_++};
      if (o.kind == OpKind::put || o.kind == OpKind::cas) op.value = intern(o.value);
      if (o.kind == OpKind::cas) op.expected = intern(o.expected);
      if (o.kind == OpKind::get) op.output = intern(o.output);
      ops_.push_back(op);
    }
  }

  KeyResult run(uint64_t* budget, uint64_t* steps);

 private:
  void lift(size_t n) {
    Node& c = nodes_[n];
    unlink(n);
    if (c.match) unlink(c.match);
  }
  void unlift(size_t n) {
    Node& c = nodes_[n];
    if (c.match) relink(c.match);
    relink(n);
  }
  void unlink(size_t n) {
    Node& x = nodes_[n];
    nodes_[x.prev].next = x.next;
    if (x.next != kEnd) nodes_[x.next].prev = x.prev;
  }
  void relink(size_t n) {
    Node& x = nodes_[n];
    nodes_[x.prev].next = n;
    if (x.next != kEnd) nodes_[x.next].prev = n;
  }
  std::string state_name(State s) const {
    if (s == 0) return "absent";
    if (s == 1) return names_[1];
    return "\"" + names_[s] + "\"";
  }
  // linearized: (call node, state before it) in linearization order.
  KeyResult violation(const std::vector<std::pair<size_t, State>>& linearized, size_t blocked,
                      State best_state) const;

  const std::vector<Operation>& history_;
  std::vector<std::string> names_;
  std::vector<Op> ops_;
  size_t finite_ = 0, no_reply_ = 0;
  std::vector<Node> nodes_;
};

// Lowe's iterative WGL: `entry` walks the list from its head; a call whose operation can take
// effect in the current state (and leads to an unexplored configuration) is linearized and lifted
// out of the list, and the walk restarts; reaching a return means its call could not be
// linearized before it, so the last linearization is undone and the walk resumes after it.
//
// Operations without a reply are optional (never taking effect is the same as taking effect
// after everything else, since their outputs are unconstrained), which gives a dominance rule:
// a configuration with a set N of linearized no-reply operations can do everything one with a
// subset of N can do minus nothing, so having explored (F, state, N') prunes (F, state, N) for
// every N superset of N'. To meet the smaller sets first, each window is walked twice: first
// trying only the calls that have a reply, then the no-reply ones. Without this, k pending lost
// writes cost 2^k configurations per point of the history.
KeyResult KeyChecker::run(uint64_t* budget, uint64_t* steps) {
  const size_t n = ops_.size();
  // Events in real-time order; at equal times calls come first (the operations overlap).
  struct Event {
    uint64_t time;
    bool ret;
    size_t op;
  };
  std::vector<Event> events;
  events.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const Operation& o = history_[ops_[i].index];
    events.push_back({o.call, false, i});
    if (ops_[i].replied) events.push_back({o.ret, true, i});
  }
  std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.time != b.time) return a.time < b.time;
    return !a.ret && b.ret;
  });
  // The list holds the events of operations with a reply; the calls of no-reply operations
  // (which have no return) are kept apart, in order, in `lost_calls`. Node numbers follow the
  // event order, so "called before this return" is "lower node number".
  nodes_.assign(events.size() + 1, Node{});
  std::vector<size_t> call_node(n, 0);
  std::vector<size_t> lost_calls;
  size_t last = 0;
  for (size_t e = 0; e < events.size(); ++e) {
    const size_t id = e + 1;
    Node& x = nodes_[id];
    x.op = events[e].op;
    x.call = !events[e].ret;
    if (!ops_[x.op].replied) {
      lost_calls.push_back(id);
      continue;
    }
    x.prev = last;
    x.next = kEnd;
    nodes_[last].next = id;
    last = id;
    if (x.call) {
      call_node[x.op] = id;
    } else {
      nodes_[call_node[x.op]].match = id;
    }
  }
  if (last == 0) nodes_[0].next = kEnd;
  std::vector<bool> lost_done(lost_calls.size(), false);

  std::vector<uint64_t> zobrist(finite_);
  for (size_t i = 0; i < finite_; ++i)
    zobrist[i] = splitmix(i * 2 + 1);
  auto key_hash = [](uint64_t bits_hash, State s) { return splitmix(bits_hash ^ (s * 0x9e37ULL)); };
  // (linearized with a reply, state) -> the sets of linearized no-reply operations explored.
  std::unordered_map<CacheKey, std::vector<std::vector<uint64_t>>, CacheHash> cache;
  CacheKey cur{std::vector<uint64_t>((finite_ + 63) / 64, 0), 0, 0};
  std::vector<uint64_t> lost((no_reply_ + 63) / 64, 0);  // linearized no-reply operations
  auto visit = [&]() {  // false if (cur, lost) is dominated by an explored configuration
    auto& seen = cache[cur];
    for (const auto& s : seen)
      if (subset(s, lost)) return false;
    seen.push_back(lost);
    return true;
  };

  struct Frame {
    size_t node;     // the linearized call
    State before;    // the state before it
    size_t pos;      // no-reply: its position in lost_calls
    size_t barrier;  // no-reply: the return that bounded the window
  };
  std::vector<Frame> stack;
  std::vector<Frame> best_stack;
  size_t best_blocked = 0;
  State best_state = 0;
  bool have_best = false;
  State state = 0;
  uint64_t bits_hash = 0;
  size_t entry = nodes_[0].next;  // pass 1: the walk over the list
  bool lost_pass = false;         // pass 2: the no-reply calls before `barrier`
  size_t pos = 0, barrier = 0;
  while (nodes_[0].next != kEnd) {
    if (*budget == 0) return KeyResult{Outcome::unknown, {}, {}};
    --*budget;
    ++*steps;
    State next;
    if (!lost_pass) {
      const Node& c = nodes_[entry];
      if (c.call) {
        const Op& op = ops_[c.op];
        if (step(state, op, &next)) {
          cur.bits[op.bit / 64] ^= uint64_t{1} << (op.bit % 64);
          const uint64_t h = bits_hash ^ zobrist[op.bit];
          cur.state = next;
          cur.hash = key_hash(h, next);
          if (visit()) {
            stack.push_back({entry, state, 0, 0});
            state = next;
            bits_hash = h;
            lift(entry);
            entry = nodes_[0].next;
            continue;
          }
          cur.bits[op.bit / 64] ^= uint64_t{1} << (op.bit % 64);
        }
        entry = c.next;
        continue;
      }
      // A return whose call is not linearized: now the no-reply calls of the same window.
      lost_pass = true;
      pos = 0;
      barrier = entry;
      continue;
    }
    if (pos < lost_calls.size() && lost_calls[pos] < barrier) {
      const size_t node = lost_calls[pos];
      const Op& op = ops_[nodes_[node].op];
      if (!lost_done[pos] && step(state, op, &next)) {
        lost[op.bit / 64] ^= uint64_t{1} << (op.bit % 64);
        cur.state = next;
        cur.hash = key_hash(bits_hash, next);
        if (visit()) {
          stack.push_back({node, state, pos, barrier});
          state = next;
          lost_done[pos] = true;
          entry = nodes_[0].next;
          lost_pass = false;
          continue;
        }
        lost[op.bit / 64] ^= uint64_t{1} << (op.bit % 64);
      }
      ++pos;
      continue;
    }
    // Nothing in the window can be linearized: undo the last linearization.
    if (!have_best || stack.size() > best_stack.size()) {
      have_best = true;
      best_stack = stack;
      best_blocked = nodes_[barrier].op;
      best_state = state;
    }
    if (stack.empty()) {
      std::vector<std::pair<size_t, State>> order;
      for (const Frame& f : best_stack)
        order.emplace_back(f.node, f.before);
      return violation(order, best_blocked, best_state);
    }
    const Frame f = stack.back();
    stack.pop_back();
    const Op& op = ops_[nodes_[f.node].op];
    state = f.before;
    if (op.replied) {
      cur.bits[op.bit / 64] ^= uint64_t{1} << (op.bit % 64);
      bits_hash ^= zobrist[op.bit];
      unlift(f.node);
      entry = nodes_[f.node].next;
      lost_pass = false;
    } else {
      lost[op.bit / 64] ^= uint64_t{1} << (op.bit % 64);
      lost_done[f.pos] = false;
      pos = f.pos + 1;
      barrier = f.barrier;
      lost_pass = true;
    }
  }
  return KeyResult{};
}

KeyResult KeyChecker::violation(const std::vector<std::pair<size_t, State>>& best_stack,
                                size_t blocked, State best_state) const {
  KeyResult r;
  r.outcome = Outcome::violation;
  const Op& b = ops_[blocked];
  r.ops.push_back(b.index);
  r.description = "cannot take effect: " + describe(history_[b.index]) + "\n";
  r.description += "longest linearizable prefix: " + std::to_string(best_stack.size()) +
                   " operations, leaving the value " + state_name(best_state) + "\n";
  // The write that left that state.
  std::vector<bool> linearized(ops_.size(), false);
  for (const auto& [node, before] : best_stack)
    linearized[nodes_[node].op] = true;
  for (auto it = best_stack.rbegin(); it != best_stack.rend(); ++it) {
    const Op& w = ops_[nodes_[it->first].op];
    if (w.kind == OpKind::get || (w.kind == OpKind::cas && it->second != w.expected)) continue;
    r.ops.push_back(w.index);
    r.description += "last write linearized: " + describe(history_[w.index]) + "\n";
    break;
  }
  // Operations still pending and concurrent with the blocked one (they were tried first).
  const Operation& bo = history_[b.index];
  size_t shown = 0;
  for (size_t i = 0; i < ops_.size(); ++i) {
    if (i == blocked || linearized[i]) continue;
    const Operation& o = history_[ops_[i].index];
    if (o.call > bo.ret || (o.replied() && o.ret < bo.call)) continue;
    if (++shown > 8) {
      r.description += "... more concurrent operations\n";
      break;
    }
    r.ops.push_back(ops_[i].index);
    r.description += "concurrent, pending: " + describe(o) + "\n";
  }
  return r;
}

}  // namespace

CheckResult check(const std::vector<Operation>& history, uint64_t budget_steps) {
  std::map<std::string, std::vector<size_t>> by_key;  // ordered: deterministic key order
  for (size_t i = 0; i < history.size(); ++i) {
    const Operation& o = history[i];
    if (o.replied() && o.ret < o.call) {
      throw std::invalid_argument("lincheck: operation returns before its call: " + describe(o));
    }
    by_key[o.key].push_back(i);
  }
  CheckResult result;
  uint64_t budget = budget_steps;
  std::string unknown_key;
  bool unknown = false;
  for (const auto& [key, indices] : by_key) {
    KeyChecker checker(history, indices);
    KeyResult r = checker.run(&budget, &result.steps);
    if (r.outcome == Outcome::violation) {
      result.outcome = Outcome::violation;
      result.key = key;
      result.ops = std::move(r.ops);
      result.description = "key \"" + key + "\": " + r.description;
      return result;
    }
    if (r.outcome == Outcome::unknown && !unknown) {
      unknown = true;
      unknown_key = key;
    }
  }
  if (unknown) {
    result.outcome = Outcome::unknown;
    result.key = unknown_key;
    result.description = "step budget of " + std::to_string(budget_steps) +
                         " exhausted while checking key \"" + unknown_key + "\"";
  }
  return result;
}

}  // namespace keel::lincheck
