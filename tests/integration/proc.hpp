#pragma once
// A process a test leaves running in the background (keelctl holding a lock, a watch): fork/exec
// with stdout and stderr to files in the test's directory, SIGKILL by PID when it goes. Used by
// the coordination and primitives tests.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace keel::test {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A process left running in the background (as in primitives_test.cpp): keelctl holding a
// slot, campaigning, listening, watching. Killed (SIGKILL, by PID) when the Proc goes.
class Proc {
 public:
  Proc(const std::vector<std::string>& args, const std::string& dir, const std::string& tag)
      : out_path_(dir + "/" + tag + ".out"), err_path_(dir + "/" + tag + ".err") {
    std::vector<std::string> full = args;
    std::vector<char*> argv;
    for (auto& a : full)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      int in = open("/dev/null", O_RDONLY);
      int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(in, 0);
      dup2(out, 1);
      dup2(err, 2);
      for (int fd = 3; fd < 1024; ++fd)
        close(fd);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  static std::unique_ptr<Proc> keelctl(const std::string& socket,
                                       const std::vector<std::string>& args, const std::string& dir,
                                       const std::string& tag) {
    std::vector<std::string> full = {KEELCTL_PATH, "--socket", socket};
    full.insert(full.end(), args.begin(), args.end());
    return std::make_unique<Proc>(full, dir, tag);
  }
  ~Proc() { kill9(); }
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;

  pid_t pid() const { return pid_; }
  bool running() {
    if (exited_) return false;
    int raw = 0;
    if (waitpid(pid_, &raw, WNOHANG) == pid_) {
      exited_ = true;
      status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
      return false;
    }
    return true;
  }
  std::optional<int> wait_exit(std::chrono::milliseconds deadline) {
    const auto until = Clock::now() + deadline;
    while (running()) {
      if (Clock::now() >= until) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return status_;
  }
  void kill9() {
    if (pid_ <= 0 || exited_) return;
    ::kill(pid_, SIGKILL);
    int raw = 0;
    waitpid(pid_, &raw, 0);
    exited_ = true;
    status_ = 128 + SIGKILL;
  }
  void signal(int sig) {
    if (!exited_) ::kill(pid_, sig);
  }
  // SIGINT (keelctl resigns / releases and exits 0), SIGKILL if it does not exit in time.
  std::optional<int> interrupt(std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    signal(SIGINT);
    auto st = wait_exit(deadline);
    if (!st) kill9();
    return st;
  }
  std::string out() const { return read_file(out_path_); }
  std::string err() const { return read_file(err_path_); }

 private:
  std::string out_path_, err_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = -1;
};

}  // namespace keel::test
