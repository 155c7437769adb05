#pragma once
// What the plain replay drivers (replay_main.cpp, replay_apply_main.cpp) share: a tiny
// deterministic PRNG, byte mutations, corpus loading, and the SIGABRT handler that dumps the
// input being run. Built with any compiler; libFuzzer (run-libfuzzer.sh) explores further.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace keel::fuzz {

using Bytes = std::vector<uint8_t>;

// splitmix64: tiny, good enough, identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
  bool chance(unsigned one_in) { return below(one_in) == 0; }

 private:
  uint64_t s_;
};

inline void mutate(Rng& rng, Bytes& b) {
  static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x10};
  size_t rounds = 1 + rng.below(4);
  for (size_t i = 0; i < rounds; i++) {
    switch (rng.below(7)) {
      case 0:
        if (!b.empty()) b[rng.below(b.size())] ^= static_cast<uint8_t>(1u << rng.below(8));
        break;
      case 1:
        if (!b.empty()) b[rng.below(b.size())] = static_cast<uint8_t>(rng.next());
        break;
      case 2:
        if (!b.empty()) b[rng.below(b.size())] = interesting[rng.below(sizeof(interesting))];
        break;
      case 3: {  // insert a few bytes
        size_t at = rng.below(b.size() + 1), n = 1 + rng.below(8);
        for (size_t k = 0; k < n; k++) {
          b.insert(b.begin() + static_cast<ptrdiff_t>(at), static_cast<uint8_t>(rng.next()));
        }
        break;
      }
      case 4:  // erase a range
        if (!b.empty()) {
          size_t at = rng.below(b.size()), n = 1 + rng.below(b.size() - at);
          b.erase(b.begin() + static_cast<ptrdiff_t>(at),
                  b.begin() + static_cast<ptrdiff_t>(at + n));
        }
        break;
      case 5:  // truncate
        b.resize(rng.below(b.size() + 1));
        break;
      default:  // duplicate a chunk at the end
        if (!b.empty()) {
          size_t at = rng.below(b.size()), n = 1 + rng.below(std::min<size_t>(16, b.size() - at));
          Bytes chunk(b.begin() + static_cast<ptrdiff_t>(at),
                      b.begin() + static_cast<ptrdiff_t>(at + n));
          b.insert(b.end(), chunk.begin(), chunk.end());
        }
        break;
    }
  }
}

inline Bytes read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Every file of each PATH (a directory, in name order, or a file). False if a PATH is missing.
inline bool load_corpus(const std::vector<std::filesystem::path>& paths, std::vector<Bytes>* corpus,
                        std::vector<std::string>* names) {
  for (const auto& p : paths) {
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());  // deterministic order
      for (const auto& f : files) {
        corpus->push_back(read_file(f));
        names->push_back(f.string());
      }
    } else if (std::filesystem::is_regular_file(p)) {
      corpus->push_back(read_file(p));
      names->push_back(p.string());
    } else {
      std::fprintf(stderr, "%s: no such file or directory\n", p.c_str());
      return false;
    }
  }
  return true;
}

// The input being run, for the SIGABRT handler: a property violation (abort, or an uncaught
// exception, which ends in std::terminate and abort) dumps it to stderr and to
// ./<driver>-crash.bin, which the libFuzzer binary can replay.
inline const Bytes* g_current = nullptr;
inline char g_label[160] = "";
inline char g_crash_file[128] = "replay-crash.bin";

inline void on_abort(int) {
  static const char hex[] = "0123456789abcdef";
  auto say = [](const char* s) { (void)!write(2, s, std::strlen(s)); };
  say("replay: failing input (");
  say(g_label);
  say("), written to ");
  say(g_crash_file);
  say(":\n");
  if (g_current) {
    for (size_t i = 0; i < g_current->size(); i++) {
      char pair[3] = {hex[(*g_current)[i] >> 4], hex[(*g_current)[i] & 15],
                      (i % 32 == 31) ? '\n' : ' '};
      (void)!write(2, pair, 3);
    }
    say("\n");
    int fd = open(g_crash_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      (void)!write(fd, g_current->data(), g_current->size());
      close(fd);
    }
  }
  signal(SIGABRT, SIG_DFL);  // abort() raises again and ends the process
}

// Installs the handler; crashes are written to ./<driver>-crash.bin.
inline void install_crash_handler(const char* driver) {
  std::snprintf(g_crash_file, sizeof(g_crash_file), "%s-crash.bin", driver);
  signal(SIGABRT, on_abort);
}

inline void run(const Bytes& b, const std::string& label) {
  g_current = &b;
  std::snprintf(g_label, sizeof(g_label), "%s", label.c_str());
  LLVMFuzzerTestOneInput(b.data(), b.size());
  g_current = nullptr;
}

// The drivers' command line: [--iterations N] [--seed S] [CORPUS...] | --write-corpus DIR.
// Returns the exit status to stop with (usage error, or write_corpus's), or -1 to go on.
template <typename WriteCorpus>
int parse_args(int argc, char** argv, uint64_t* iterations, uint64_t* seed,
               std::vector<std::filesystem::path>* paths, WriteCorpus write_corpus) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) {
      *iterations = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--seed" && i + 1 < argc) {
      *seed = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--write-corpus" && i + 1 < argc) {
      return write_corpus(argv[++i]);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr,
                   "usage: %s [--iterations N] [--seed S] [CORPUS...] | --write-corpus DIR\n",
                   argv[0]);
      return 2;
    } else {
      paths->emplace_back(a);
    }
  }
  return -1;
}

}  // namespace keel::fuzz
