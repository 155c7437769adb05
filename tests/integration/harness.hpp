#pragma once
// Real keeld processes on temporary data directories and Unix sockets. Every process a test
// starts is stopped by PID (SIGKILL in the destructor if still running); every wait is bounded.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/client.hpp"

namespace keel::test {

struct TempDir {
  std::string path;
  TempDir();
  ~TempDir();
};

class Keeld {
 public:
  // Data under dir/data, socket dir/keel.sock, log dir/keeld.log. `config_toml` (if not
  // empty) is written to dir/keel.toml and passed with --config.
  explicit Keeld(std::string dir, std::string config_toml = "");
  ~Keeld();
  // Starts keeld and waits (bounded) until the socket accepts connections. Returns false if
  // the process exited or the deadline passed; log() then says why.
  bool start(const std::vector<std::string>& extra_args = {});
  // Starts keeld expecting it to fail; returns its exit status (bounded wait).
  int start_expect_exit(const std::vector<std::string>& extra_args = {});
  void kill9();
  int terminate();  // SIGTERM, wait; returns the exit status (128+signal if killed)
  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  const std::string& data_dir() const { return data_; }
  std::string log() const;
  long rss_kib() const;  // VmRSS of the running process
  std::unique_ptr<client::Client> client() const;
  // Run keeld inside the network namespace /run/netns/<name> (setns in the child before
  // exec, as `ip netns exec` does); empty = the test's own namespace. Takes effect at start.
  void set_netns(std::string name) { netns_ = std::move(name); }

 private:
  pid_t spawn(const std::vector<std::string>& extra_args);
  std::string dir_, data_, socket_, config_path_, netns_;
  pid_t pid_ = -1;
};

// A put of key = value, the request most tests build.
storage::PutRequest put(std::string key, std::string value);

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};
// Runs argv[0] (a path, or a name looked up in PATH) with its arguments, feeding `input` on
// stdin, collecting stdout and stderr. Bounded by `timeout_s` (then SIGKILL, status -1).
Run run_command(const std::vector<std::string>& argv, const std::string& input = "",
                int timeout_s = 30);
// Runs keelctl with args (and --socket), feeding `input` on stdin. Bounded by `timeout_s`.
Run keelctl(const std::string& socket, const std::vector<std::string>& args,
            const std::string& input = "", int timeout_s = 30);

// Catch2 v2 is not thread-safe: worker threads never call REQUIRE, CHECK or INFO. They
// record what they saw in plain data, and the test's main thread asserts after joining.
// If the main thread leaves early (a failed REQUIRE throws), the destructor runs `unblock`
// (which must make every worker return: a stop flag, kill -9 of keeld so blocked calls fail)
// and joins, so no std::thread is ever destroyed joinable.
class Workers {
 public:
  explicit Workers(std::function<void()> unblock) : unblock_(std::move(unblock)) {}
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;
  ~Workers() {
    if (threads_.empty()) return;
    unblock_();
    for (auto& t : threads_)
      t.join();
  }

  template <typename F>
  void spawn(F f) {
    threads_.emplace_back([this, f = std::move(f)]() mutable {
      try {
        f();
      } catch (const std::exception& e) {
        std::lock_guard lk(mu_);
        errors_.push_back(e.what());
      }
      ++finished_;
    });
  }

  // Waits (bounded) for every worker to return; past the deadline runs `unblock` first.
  // Returns whether they all returned by themselves in time.
  bool join_within(std::chrono::seconds deadline) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (finished_ < threads_.size() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    bool in_time = finished_ == threads_.size();
    if (!in_time) unblock_();
    for (auto& t : threads_)
      t.join();
    threads_.clear();
    return in_time;
  }

  // Exceptions that escaped a worker (after join_within).
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::function<void()> unblock_;
  std::vector<std::thread> threads_;
  std::atomic<size_t> finished_{0};
  std::mutex mu_;
  std::vector<std::string> errors_;
};

}  // namespace keel::test
