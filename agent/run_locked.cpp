#include "agent/run_locked.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace keel::client {
namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) {
  g_signal = sig;
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Waits up to ms for pid; true (and *status) once it has exited.
bool wait_child(pid_t pid, int64_t ms, int* status) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// SIGTERM to the group, SIGKILL after the grace; returns the child's exit status.
int stop_group(pid_t pid, int64_t grace_ms, const char* why) {
  ::kill(-pid, SIGTERM);
  int status = 0;
  if (wait_child(pid, grace_ms, &status)) {
    std::fprintf(stderr, "keelctl: %s: the command stopped on SIGTERM\n", why);
  } else {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    std::fprintf(stderr, "keelctl: %s: the command was killed after %lld ms of grace\n", why,
                 static_cast<long long>(grace_ms));
  }
  ::kill(-pid, SIGKILL);  // anything of the group still left
  return status_code(status);
}

}  // namespace

Holding holding(LockHandle& lock) {
  return Holding{
      "lock '" + lock.name() + "' (token " + std::to_string(lock.token()) + ")",
      {{"KEEL_LOCK_NAME", lock.name()}, {"KEEL_LOCK_TOKEN", std::to_string(lock.token())}},
      [&lock](int64_t ms) { return lock.wait_lost(ms); }};
}

Holding holding(SemHandle& slot) {
  return Holding{"slot of semaphore '" + slot.name() + "' (holder " + slot.holder_id() + ")",
                 {{"KEEL_SEM_NAME", slot.name()}, {"KEEL_SEM_HOLDER", slot.holder_id()}},
                 [&slot](int64_t ms) { return slot.wait_lost(ms); }};
}

int run_locked(const Holding& held, const std::vector<std::string>& argv, const RunOptions& o) {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);

  if (argv.empty()) {  // hold until interrupted or lost
    while (g_signal == 0) {
      auto lost = held.wait_lost(o.poll_ms);
      if (!lost || *lost) {
        std::fprintf(stderr, "keelctl: %s was lost\n", held.what.c_str());
        return 1;
      }
    }
    return 0;  // the handle's destruction unlocks
  }

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("keelctl: fork");
    return 1;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);     // keelctl gone: so is the command
    if (::getppid() != parent) ::_exit(1);  // it died before prctl took effect
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s : {SIGINT, SIGTERM, SIGHUP})
      ::sigaction(s, &dfl, nullptr);
    for (const auto& [k, v] : held.env)
      ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "keelctl: cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before any kill(-pid)
  for (;;) {
    int status = 0;
    if (wait_child(pid, 0, &status)) return status_code(status);
    if (g_signal != 0) return stop_group(pid, o.grace_ms, "interrupted");
    auto lost = held.wait_lost(o.poll_ms);
    if (!lost || *lost) {
      std::string why = held.what + " was lost";
      return stop_group(pid, o.grace_ms, why.c_str());
    }
  }
}

}  // namespace keel::client
