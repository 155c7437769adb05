// fsync_probe DIR [COUNT]: how fast this disk makes a small write durable.
//
// Writes COUNT (default 1000) 4 KiB blocks, one after the other, to a new file in DIR, each
// followed by fdatasync(), and prints one line of key=value figures: count, p50_us, p99_us,
// mean_us (the time of each write + fdatasync pair). The file is removed afterwards. This is
// the floor under a replicated put at one client: every member syncs its log once per batch.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s DIR [COUNT]\n", argv[0]);
    return 2;
  }
  const std::string path = std::string(argv[1]) + "/fsync_probe.tmp";
  const long count = argc == 3 ? std::atol(argv[2]) : 1000;
  if (count <= 0 || count > 1000000) {
    std::fprintf(stderr, "fsync_probe: COUNT must be 1..1000000\n");
    return 2;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::fprintf(stderr, "fsync_probe: open %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  std::vector<char> block(4096, 'f');
  std::vector<double> us;
  us.reserve(static_cast<size_t>(count));
  int rc = 0;
  for (long i = 0; i < count; i++) {
    auto t0 = std::chrono::steady_clock::now();
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i) * 4096) !=
            static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      std::fprintf(stderr, "fsync_probe: write/fdatasync: %s\n", std::strerror(errno));
      rc = 1;
      break;
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  ::close(fd);
  ::unlink(path.c_str());
  if (rc != 0 || us.empty()) return 1;
  double sum = 0;
  for (double v : us)
    sum += v;
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) {
    size_t idx = static_cast<size_t>(p * static_cast<double>(us.size() - 1));
    return us[idx];
  };
  std::printf("count=%zu p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", us.size(), pct(0.50), pct(0.99),
              sum / static_cast<double>(us.size()));
  return 0;
}
