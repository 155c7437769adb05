#pragma once
// Real keeld processes on temporary data directories and Unix sockets. Every process a test
// starts is stopped by PID (SIGKILL in the destructor if still running); every wait is bounded.
#include <sys/types.h>

#include <memory>
#include <string>
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

 private:
  pid_t spawn(const std::vector<std::string>& extra_args);
  std::string dir_, data_, socket_, config_path_;
  pid_t pid_ = -1;
};

// A put of key = value, the request most tests build.
storage::PutRequest put(std::string key, std::string value);

struct Run {
  int status = -1;
  std::string out;
  std::string err;
};
// Runs keelctl with args (and --socket), feeding `input` on stdin. Bounded by `timeout_s`.
Run keelctl(const std::string& socket, const std::vector<std::string>& args,
            const std::string& input = "", int timeout_s = 30);

}  // namespace keel::test
