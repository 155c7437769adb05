#pragma once
// Our own seeded PRNG: splitmix64 to expand a seed, xoshiro256** to draw. Deterministic on every
// platform (the standard <random> distributions are not), so a seed replays exactly.
#include <cstdint>

#include "cluster/raft/assert.hpp"

namespace keel::raft {

inline uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t sm = seed;
    for (auto& w : s_)
      w = splitmix64(&sm);
  }

  // xoshiro256** (Blackman & Vigna).
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, n), n > 0, without modulo bias (rejects the short top range).
  uint64_t below(uint64_t n) {
    KEEL_RAFT_ASSERT(n > 0);
    const uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

  // Uniform in [lo, hi], lo <= hi.
  uint64_t between(uint64_t lo, uint64_t hi) {
    KEEL_RAFT_ASSERT(lo <= hi);
    if (hi - lo == ~uint64_t{0}) return next();
    return lo + below(hi - lo + 1);
  }

  // True with probability per_million / 1e6.
  bool chance(uint64_t per_million) { return below(1000000) < per_million; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace keel::raft
