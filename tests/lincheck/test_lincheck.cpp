// keel_lincheck: known linearizable and non-linearizable histories, then randomized histories
// from a simulated linearizable register (must pass) with one read made stale (must fail).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/lincheck/lincheck.hpp"

using namespace keel::lincheck;

namespace {

constexpr uint64_t kNone = kNoReply;

std::string dump(const CheckResult& r) {
  return std::string(to_string(r.outcome)) + " after " + std::to_string(r.steps) + " steps\n" +
         r.description;
}

}  // namespace

// ---- known linearizable ---------------------------------------------------------------------

TEST_CASE("lincheck: an empty history and a sequential one are linearizable", "[lincheck]") {
  CHECK(check({}).ok());
  const std::vector<Operation> h = {
      get(1, "k", std::nullopt, 0, 1), put(1, "k", "a", 2, 3), get(1, "k", "a", 4, 5),
      put(1, "k", "b", 6, 7),          get(2, "k", "b", 8, 9),
  };
  const auto r = check(h);
  INFO(dump(r));
  CHECK(r.ok());
}

TEST_CASE("lincheck: reads overlapping a write may see either value, in a consistent order",
          "[lincheck]") {
  // put(a) spans [0, 10]; the reads overlap it. A read that returned before another began must
  // not see an older value than it (checked in the violation test below).
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 10), get(2, "k", std::nullopt, 1, 3), get(3, "k", "a", 2, 4),
      get(2, "k", "a", 5, 6),  get(4, "k", std::nullopt, 1, 9),  // linearized before the put,
                                                                 // concurrent with everything
  };
  const auto r = check(h);
  INFO(dump(r));
  CHECK(r.ok());
}

TEST_CASE("lincheck: equal times overlap (a precedes b only if a.ret < b.call)", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 5),
      get(2, "k", std::nullopt, 5, 6),  // called when the put returned: may precede it
  };
  CHECK(check(h).ok());
}

TEST_CASE("lincheck: cas chains with concurrent and failing cas", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "0", 0, 1),
      cas(1, "k", "0", "1", true, 2, 3),
      cas(2, "k", "1", "2", true, 2, 6),   // concurrent with the first cas; must follow it
      cas(3, "k", "0", "9", false, 4, 7),  // "0" is gone by then
      cas(4, "k", std::nullopt, "x", false, 4, 5),
      get(1, "k", "2", 8, 9),
      cas(2, "k", "2", "3", true, 10, 12),
      cas(3, "k", "2", "4", false, 11, 13),  // lost the race to the one above
      get(4, "k", "3", 14, 15),
  };
  const auto r = check(h);
  INFO(dump(r));
  CHECK(r.ok());
}

TEST_CASE("lincheck: deletes, and cas on an absent key", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 1),
      del(2, "k", 2, 3),
      get(1, "k", std::nullopt, 4, 5),
      cas(3, "k", std::nullopt, "b", true, 6, 7),  // create if absent
      del(1, "k", 8, 12),
      get(2, "k", "b", 9, 10),  // concurrent with the delete: before it
      get(3, "k", std::nullopt, 11, 13),
      get(2, "k", std::nullopt, 14, 15),
  };
  const auto r = check(h);
  INFO(dump(r));
  CHECK(r.ok());
}

TEST_CASE("lincheck: operations without a reply may take effect late, or never", "[lincheck]") {
  SECTION("a lost put observed long after its call") {
    const std::vector<Operation> h = {
        put(1, "k", "a", 0, 1),   put(2, "k", "b", 2, kNone),  // timed out
        get(3, "k", "a", 3, 4),                                // not yet
        get(3, "k", "b", 50, 51),                              // now
        get(4, "k", "b", 60, 61),
    };
    const auto r = check(h);
    INFO(dump(r));
    CHECK(r.ok());
  }
  SECTION("a lost put that never took effect") {
    const std::vector<Operation> h = {
        put(1, "k", "a", 0, 1),
        put(2, "k", "b", 2, kNone),
        get(3, "k", "a", 3, 4),
        get(3, "k", "a", 50, 51),
    };
    CHECK(check(h).ok());
  }
  SECTION("lost cas, delete and get: outputs unconstrained") {
    const std::vector<Operation> h = {
        put(1, "k", "a", 0, 1),
        cas(2, "k", "a", "b", true, 2, kNone),  // its "ok" is not a reply: ignored
        del(3, "k", 3, kNone),
        get(4, "k", "zzz", 4, kNone),  // no reply: no constraint
        get(1, "k", "b", 10, 11),
        get(1, "k", std::nullopt, 12, 13),
    };
    const auto r = check(h);
    INFO(dump(r));
    CHECK(r.ok());
  }
}

TEST_CASE("lincheck: keys are independent registers", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "x", "1", 0, 1),          put(2, "y", "1", 0, 1), get(1, "x", "1", 2, 3),
      get(2, "y", "1", 2, 3),          del(3, "x", 4, 5),      get(3, "y", "1", 6, 7),
      get(3, "x", std::nullopt, 6, 7),
  };
  CHECK(check(h).ok());
}

// ---- known non-linearizable -----------------------------------------------------------------

TEST_CASE("lincheck: a stale read after a completed write is a violation", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 1),
      put(2, "k", "b", 2, 3),
      get(3, "k", "a", 4, 5),
  };
  const auto r = check(h);
  INFO(dump(r));
  REQUIRE(r.outcome == Outcome::violation);
  CHECK(r.key == "k");
  REQUIRE(!r.ops.empty());
  CHECK(r.ops[0] == 2);  // the read cannot take effect anywhere
  CHECK(std::find(r.ops.begin(), r.ops.end(), size_t{1}) != r.ops.end());  // after put(b)
  CHECK(r.description.find("get() -> \"a\"") != std::string::npos);
}

TEST_CASE("lincheck: reads must not go back in time", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 10), get(2, "k", "a", 1, 2),
      get(3, "k", std::nullopt, 3, 4),  // began after a read that saw the put
  };
  const auto r = check(h);
  INFO(dump(r));
  CHECK(r.outcome == Outcome::violation);
}

TEST_CASE("lincheck: a read of a value never written is a violation", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 1),
      get(2, "k", "z", 2, 3),
  };
  const auto r = check(h);
  INFO(dump(r));
  REQUIRE(r.outcome == Outcome::violation);
  CHECK(r.ops[0] == 1);
}

TEST_CASE("lincheck: two cas that both succeed from the same expected value", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "0", 0, 1), cas(2, "k", "0", "1", true, 2, 5),
      cas(3, "k", "0", "2", true, 3, 6),  // concurrent, yet both swapped "0"
  };
  const auto r = check(h);
  INFO(dump(r));
  REQUIRE(r.outcome == Outcome::violation);
  CHECK(r.key == "k");
}

TEST_CASE("lincheck: a lost put observed, then un-observed", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 1), put(2, "k", "b", 2, kNone), get(3, "k", "b", 3, 4),
      get(3, "k", "a", 5, 6),  // "a" again: the put of "b" cannot be undone
  };
  const auto r = check(h);
  INFO(dump(r));
  CHECK(r.outcome == Outcome::violation);
}

TEST_CASE("lincheck: a failed cas is a read too", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "k", "a", 0, 1),
      cas(2, "k", "a", "b", false, 2, 3),  // "a" was there, nothing concurrent: must swap
  };
  CHECK(check(h).outcome == Outcome::violation);
}

TEST_CASE("lincheck: the violating key is named among linearizable ones", "[lincheck]") {
  const std::vector<Operation> h = {
      put(1, "a", "1", 0, 1), get(1, "a", "1", 2, 3), put(2, "b", "1", 0, 1),
      put(2, "b", "2", 2, 3), get(3, "b", "1", 4, 5), get(3, "c", std::nullopt, 0, 1),
  };
  const auto r = check(h);
  INFO(dump(r));
  REQUIRE(r.outcome == Outcome::violation);
  CHECK(r.key == "b");
  CHECK(r.ops[0] == 4);
}

TEST_CASE("lincheck: an exhausted budget is unknown, not ok, bad intervals are rejected",
          "[lincheck]") {
  std::vector<Operation> h;
  for (uint64_t i = 0; i < 12; ++i)  // 12 concurrent puts, the first one last
    h.push_back(put(i, "k", std::to_string(i), 0, 100));
  h.push_back(get(99, "k", "0", 101, 102));
  const auto r = check(h, 10);
  CHECK(r.outcome == Outcome::unknown);
  CHECK(r.key == "k");
  CHECK(check(h).ok());  // put "0" last
  CHECK_THROWS_AS(check({put(1, "k", "a", 5, 4)}), std::invalid_argument);
}

// ---- randomized -----------------------------------------------------------------------------

namespace {

// Histories from a simulated linearizable register: clients issue operations one at a time with
// random overlapping intervals; each takes effect at a random point inside its interval (in the
// order of those points), so the history is linearizable by construction. Every write writes a
// fresh value. Some operations get no reply: they take effect (inside [call, call + duration])
// or never; the client is then replaced by a new one.
struct Generated {
  std::vector<Operation> history;
};

Generated generate(uint64_t seed, int clients, size_t count, int keys, int no_reply_permille,
                   int max_duration = 12) {
  std::mt19937_64 rng(seed);
  auto below = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  struct Pending {
    Operation op;
    uint64_t point;  // scaled linearization point
    bool effect;
  };
  std::vector<Pending> ops;
  std::vector<uint64_t> clock(static_cast<size_t>(clients), 0);
  std::vector<uint64_t> client_id(static_cast<size_t>(clients));
  uint64_t next_client = 0;
  for (auto& c : client_id)
    c = next_client++;
  for (size_t i = 0; i < count; ++i) {
    const size_t c = static_cast<size_t>(below(static_cast<uint64_t>(clients)));
    Operation op;
    op.client = client_id[c];
    op.key = "k" + std::to_string(below(static_cast<uint64_t>(keys)));
    const uint64_t call = clock[c] + below(4);
    const uint64_t duration = below(static_cast<uint64_t>(max_duration) + 1);
    op.call = call;
    op.ret = call + duration;
    const uint64_t roll = below(100);
    op.kind = roll < 35   ? OpKind::get
              : roll < 60 ? OpKind::put
              : roll < 90 ? OpKind::cas
                          : OpKind::del;
    bool effect = true;
    if (below(1000) < static_cast<uint64_t>(no_reply_permille)) {
      effect = below(2) == 0;
      op.ret = kNoReply;
      client_id[c] = next_client++;  // the client gave up; a new one takes its place
    }
    const uint64_t point = call * 1024 + below(duration * 1024 + 1);
    clock[c] = call + duration + 1;
    ops.push_back({std::move(op), point, effect});
  }
  // Apply in linearization order; ties in the order generated.
  std::vector<size_t> order(ops.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return ops[a].point < ops[b].point; });
  std::map<std::string, std::optional<std::string>> reg;
  std::map<std::string, std::vector<std::string>> past;  // values each key held
  uint64_t fresh = 0;
  for (size_t i : order) {
    Operation& op = ops[i].op;
    auto& cur = reg[op.key];
    auto& seen = past[op.key];
    switch (op.kind) {
      case OpKind::put:
        op.value = "v" + std::to_string(fresh++);
        if (ops[i].effect) cur = op.value;
        break;
      case OpKind::get:
        op.output = cur;
        break;
      case OpKind::cas:
        op.value = "v" + std::to_string(fresh++);
        if (below(2) == 0 || seen.empty()) {
          op.expected = cur;
        } else if (below(4) == 0) {
          op.expected = std::nullopt;
        } else {
          op.expected = seen[seen.size() - 1 - below(std::min<uint64_t>(seen.size(), 3))];
        }
        op.ok = op.expected == cur;
        if (op.ok && ops[i].effect) cur = op.value;
        break;
      case OpKind::del:
        if (ops[i].effect) cur = std::nullopt;
        break;
    }
    if (cur && (seen.empty() || seen.back() != *cur)) seen.push_back(*cur);
  }
  Generated g;
  for (auto& p : ops)
    g.history.push_back(std::move(p.op));
  return g;
}

bool completed_write(const Operation& o) {
  if (!o.replied()) return false;
  return o.kind == OpKind::put || o.kind == OpKind::del || (o.kind == OpKind::cas && o.ok);
}

// Makes one read return a value it cannot have seen: a value w written by a completed write W1,
// overwritten by a completed write W2 that began after W1 returned and returned before the read
// began. Values are fresh per write, so nothing else wrote w. Returns false if there is none.
bool make_stale(std::vector<Operation>& h, std::mt19937_64& rng, size_t* which) {
  std::vector<size_t> reads;
  for (size_t i = 0; i < h.size(); ++i)
    if (h[i].kind == OpKind::get && h[i].replied()) reads.push_back(i);
  for (int attempt = 0; attempt < 200 && !reads.empty(); ++attempt) {
    const size_t g = reads[rng() % reads.size()];
    std::vector<std::string> stale;
    for (const Operation& w2 : h) {
      if (w2.key != h[g].key || !completed_write(w2) || w2.ret >= h[g].call) continue;
      for (const Operation& w1 : h) {
        if (w1.key != h[g].key || !completed_write(w1) || w1.kind == OpKind::del) continue;
        if (w1.ret < w2.call && h[g].output != w1.value) stale.push_back(w1.value);
      }
    }
    if (stale.empty()) continue;
    h[g].output = stale[rng() % stale.size()];
    *which = g;
    return true;
  }
  return false;
}

}  // namespace

TEST_CASE("lincheck: random linearizable histories pass, one stale read makes them fail",
          "[lincheck]") {
  int perturbed = 0;
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    const int clients = 2 + static_cast<int>(seed % 5);
    const int keys = 1 + static_cast<int>(seed % 3);
    const int no_reply = seed % 4 == 0 ? 0 : 20;
    Generated g = generate(seed, clients, 150, keys, no_reply);
    const auto r = check(g.history, 5'000'000);
    INFO("seed " << seed << ": " << dump(r));
    REQUIRE(r.ok());

    std::mt19937_64 rng(seed * 7919);
    size_t which = 0;
    if (!make_stale(g.history, rng, &which)) continue;
    ++perturbed;
    const auto bad = check(g.history, 5'000'000);
    INFO("seed " << seed << " stale read " << describe(g.history[which]) << ": " << dump(bad));
    REQUIRE(bad.outcome == Outcome::violation);
    CHECK(bad.key == g.history[which].key);
  }
  CHECK(perturbed > 200);
}

TEST_CASE("lincheck: thousands of operations per key within the budget", "[lincheck]") {
  for (uint64_t seed : {11u, 12u, 13u}) {
    Generated g = generate(seed, 6, 4000, 1, 10);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = check(g.history, 20'000'000);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    INFO("seed " << seed << ": " << dump(r) << " in " << ms << " ms");
    REQUIRE(r.ok());
    std::mt19937_64 rng(seed);
    size_t which = 0;
    REQUIRE(make_stale(g.history, rng, &which));
    const auto t1 = std::chrono::steady_clock::now();
    const auto bad = check(g.history, 20'000'000);
    WARN("seed " << seed << ": ok in " << ms << " ms, violation in "
                 << std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - t1)
                        .count()
                 << " ms, " << bad.steps << " steps");
    INFO("stale: " << describe(g.history[which]) << ": " << dump(bad));
    REQUIRE(bad.outcome == Outcome::violation);
  }
}
