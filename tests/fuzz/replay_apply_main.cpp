// A plain driver for fuzz_apply.cpp, built with any compiler and run by ctest: replays the
// seed corpus, then a bounded number of deterministic inputs (fixed-seed PRNG): random bytes
// (every byte string is a valid program for fuzz_apply's interpreter) and mutations of the
// corpus. libFuzzer (run-libfuzzer.sh apply) explores further.
//
//   fuzz_apply_replay [--iterations N] [--seed S] [PATH...]   PATH: corpus dir or file
//   fuzz_apply_replay --write-corpus DIR                      writes the seed corpus
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "replay_util.hpp"

extern uint64_t fuzz_apply_generated, fuzz_apply_commands, fuzz_apply_succeeded;

namespace {

using keel::fuzz::Bytes;
using keel::fuzz::Rng;

Bytes random_bytes(Rng& rng, size_t size) {
  Bytes b(size);
  for (auto& x : b)
    x = static_cast<uint8_t>(rng.next());
  return b;
}

// The checked-in seeds: random programs of a few sizes, with default and tiny limits.
int write_corpus(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  Rng rng(0x73656564);  // "seed"
  const size_t sizes[] = {48, 160, 400, 1000};
  for (size_t i = 0; i < 2 * std::size(sizes); i++) {
    Bytes b = random_bytes(rng, sizes[i % std::size(sizes)]);
    b[0] = static_cast<uint8_t>(i >= std::size(sizes));  // bit 0: tiny limits
    std::ofstream out(dir / ("seed" + std::to_string(i) + ".bin"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 1000, seed = 0x6b65656c;  // "keel"
  std::vector<std::filesystem::path> paths;
  if (int rc = keel::fuzz::parse_args(argc, argv, &iterations, &seed, &paths, write_corpus);
      rc >= 0)
    return rc;
  std::vector<Bytes> corpus;
  std::vector<std::string> corpus_names;
  if (!keel::fuzz::load_corpus(paths, &corpus, &corpus_names)) return 2;
  keel::fuzz::install_crash_handler("fuzz_apply_replay");
  for (size_t i = 0; i < corpus.size(); i++)
    keel::fuzz::run(corpus[i], corpus_names[i]);

  Rng rng(seed);
  uint64_t mutated = 0;
  for (uint64_t i = 0; i < iterations; i++) {
    Bytes b;
    if (!corpus.empty() && rng.chance(3)) {
      b = corpus[rng.below(corpus.size())];
      keel::fuzz::mutate(rng, b);
      mutated++;
    } else {
      b = random_bytes(rng, 1 + rng.below(rng.chance(4) ? 2000 : 300));
    }
    keel::fuzz::run(b, "generated input " + std::to_string(i) + ", seed " + std::to_string(seed));
  }
  std::printf(
      "fuzz_apply_replay: %zu corpus inputs, %llu generated (%llu mutated), seed %#llx; %llu "
      "commands, %llu valid, applied and checked (%llu without error); no property violated\n",
      corpus.size(), static_cast<unsigned long long>(iterations),
      static_cast<unsigned long long>(mutated), static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(fuzz_apply_generated),
      static_cast<unsigned long long>(fuzz_apply_commands),
      static_cast<unsigned long long>(fuzz_apply_succeeded));
  return 0;
}
