// socket_rtt: the floor under one client's local read. Two processes ping-pong 100 bytes
// over a Unix socket pair, the echo side waiting in epoll with the socket registered for
// EPOLLIN | EPOLLOUT edge-triggered, as KJ's event loop registers it. Prints
// `rtt_p50_us=... rtt_p99_us=... rounds=N`: what a request-reply costs on this machine
// before any Cap'n Proto, WiredTiger or keel work.
//
//   socket_rtt [--rounds N]
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

[[noreturn]] void echo(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) _exit(1);
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) _exit(0);
    if (n < 0) {
      if (errno != EAGAIN) _exit(1);
      epoll_event out{};
      epoll_wait(ep, &out, 1, -1);
      continue;
    }
    if (write(fd, buf, static_cast<size_t>(n)) != n) _exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 20000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--rounds N]\n", argv[0]);
      return 2;
    }
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 1;
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    close(sv[0]);
    if (fcntl(sv[1], F_SETFL, O_NONBLOCK) != 0) _exit(1);
    echo(sv[1]);
  }
  close(sv[1]);
  char msg[100] = {};
  std::vector<double> us;
  us.reserve(static_cast<size_t>(rounds));
  for (int i = 0; i < rounds; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    if (write(sv[0], msg, sizeof(msg)) != static_cast<ssize_t>(sizeof(msg))) return 1;
    size_t got = 0;
    while (got < sizeof(msg)) {
      ssize_t n = read(sv[0], msg + got, sizeof(msg) - got);
      if (n <= 0) return 1;
      got += static_cast<size_t>(n);
    }
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  close(sv[0]);
  int status = 0;
  waitpid(child, &status, 0);
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[static_cast<size_t>(q * static_cast<double>(us.size() - 1))];
  };
  std::printf("rtt_p50_us=%.1f rtt_p99_us=%.1f rounds=%d\n", at(0.5), at(0.99), rounds);
  return 0;
}
