#include "harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace keel::test {

namespace {

using Clock = std::chrono::steady_clock;

bool socket_accepts(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// waitpid with a deadline; returns the raw status or -1 if still running at the deadline.
int wait_exit(pid_t pid, std::chrono::milliseconds deadline) {
  auto until = Clock::now() + deadline;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (Clock::now() >= until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int decode_status(int raw) {
  if (WIFEXITED(raw)) return WEXITSTATUS(raw);
  if (WIFSIGNALED(raw)) return 128 + WTERMSIG(raw);
  return -1;
}

}  // namespace

TempDir::TempDir() {
  char tmpl[] = "/tmp/keel-it-XXXXXX";
  path = mkdtemp(tmpl);
}
TempDir::~TempDir() {
  std::filesystem::remove_all(path);
}

Keeld::Keeld(std::string dir, std::string config_toml)
    : dir_(std::move(dir)), data_(dir_ + "/data"), socket_(dir_ + "/keel.sock") {
  if (!config_toml.empty()) {
    config_path_ = dir_ + "/keel.toml";
    std::ofstream(config_path_) << config_toml;
  }
}

Keeld::~Keeld() {
  if (pid_ > 0) kill9();
}

pid_t Keeld::spawn(const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {KEELD_PATH, "--data-dir",  data_, "--socket",
                                   socket_,    "--log-level", "info"};
  // Without --config the default /etc/keel/keel.toml would be read if present; tests want
  // exactly their own configuration, so always pass one.
  std::string config = config_path_;
  if (config.empty()) {
    config = dir_ + "/empty.toml";
    std::ofstream(config) << "";
  }
  args.push_back("--config");
  args.push_back(config);
  for (const auto& a : extra_args)
    args.push_back(a);
  const std::string log_path = dir_ + "/keeld.log";
  const std::string netns_path = netns_.empty() ? std::string() : "/run/netns/" + netns_;
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (!netns_path.empty()) {
      int ns = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
        static const char msg[] = "test harness: cannot enter the network namespace\n";
        ssize_t n = write(2, msg, sizeof msg - 1);
        (void)n;
        _exit(126);
      }
      close(ns);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

bool Keeld::start(const std::vector<std::string>& extra_args) {
  pid_ = spawn(extra_args);
  auto until = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < until) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    if (socket_accepts(socket_)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill9();
  return false;
}

int Keeld::start_expect_exit(const std::vector<std::string>& extra_args) {
  pid_t pid = spawn(extra_args);
  int raw = wait_exit(pid, std::chrono::seconds(30));
  if (raw == -1) {
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return -1;
  }
  return decode_status(raw);
}

void Keeld::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int Keeld::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int raw = wait_exit(pid_, std::chrono::seconds(30));
  if (raw == -1) {
    kill9();
    return -1;
  }
  pid_ = -1;
  return decode_status(raw);
}

std::string Keeld::log() const {
  std::ifstream in(dir_ + "/keeld.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

long Keeld::rss_kib() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

std::unique_ptr<client::Client> Keeld::client() const {
  auto c = client::Client::connect(socket_);
  if (!c) return nullptr;
  return std::move(c).value();
}

storage::PutRequest put(std::string key, std::string value) {
  storage::PutRequest p;
  p.key = std::move(key);
  p.value = std::move(value);
  return p;
}

Run keelctl(const std::string& socket, const std::vector<std::string>& args,
            const std::string& input, int timeout_s) {
  std::vector<std::string> full = {KEELCTL_PATH, "--socket", socket};
  for (const auto& a : args)
    full.push_back(a);
  return run_command(full, input, timeout_s);
}

Run run_command(const std::vector<std::string>& command, const std::string& input, int timeout_s) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    return {};
  }
  std::vector<std::string> full = command;
  std::vector<char*> argv;
  for (auto& a : full)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Inputs here are small (< pipe buffer), so writing before reading cannot deadlock.
  if (!input.empty()) {
    ssize_t n = write(in_pipe[1], input.data(), input.size());
    (void)n;
  }
  close(in_pipe[1]);
  Run run;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  auto until = Clock::now() + std::chrono::seconds(timeout_s);
  int open_fds = 2;
  while (open_fds > 0 && Clock::now() < until) {
    if (poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? run.out : run.err).append(buf, n);
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int raw = wait_exit(pid, std::chrono::seconds(5));
  if (raw == -1) {
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    run.status = -1;
  } else {
    run.status = decode_status(raw);
  }
  return run;
}

}  // namespace keel::test
