// keeld: the keel agent. Wires the parts (no singletons): config -> WiredTiger engine ->
// node thread -> Cap'n Proto server on the KJ event loop of this (main) thread.
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <cstring>

#include "agent/config.hpp"
#include "agent/server.hpp"

namespace {

using keel::Error;
using keel::ErrorCode;
using keel::make_error;
using keel::Status;

// A socket file left by a dead agent is replaced; a live agent makes start-up fail.
Status prepare_socket_path(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return make_error(ErrorCode::invalid_argument,
                      "socket path " + path + " is longer than " +
                          std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
  }
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return keel::ok_status();
    return make_error(ErrorCode::internal, "cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return make_error(ErrorCode::invalid_argument,
                      path + " exists and is not a socket; refusing to replace it");
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(ErrorCode::internal, std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  close(fd);
  if (rc == 0) {
    return make_error(ErrorCode::invalid_argument,
                      "another agent is serving on " + path + "; stop it first");
  }
  if (err != ECONNREFUSED && err != ENOENT) {
    return make_error(ErrorCode::internal, "cannot probe " + path + ": " + std::strerror(err));
  }
  spdlog::info("replacing stale socket {}", path);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return make_error(ErrorCode::internal, "cannot remove " + path + ": " + std::strerror(errno));
  }
  return keel::ok_status();
}

// "<N>" syslog priority prefix (sd-daemon(3)): journald reads it from a service's stderr and
// records the message at that level.
class SyslogPriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr const char* kPriority[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const char* p = kPriority[static_cast<int>(msg.level)];
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriorityFlag>();
  }
};

void setup_logging() {
  auto logger = spdlog::stderr_color_mt("keeld");
  spdlog::set_default_logger(logger);
  if (std::getenv("JOURNAL_STREAM") != nullptr) {
    // Under systemd: journald adds timestamps and the unit name; keep the level.
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<SyslogPriorityFlag>('*').set_pattern("%*%v");
    spdlog::set_formatter(std::move(formatter));
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
}

int fail(const std::string& message) {
  spdlog::critical("{}", message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keeld: the keel agent (replicated key-value store, watches, coordination)"};
  // A flag given twice: the last one wins (scripts append overrides).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string config_path = "/etc/keel/keel.toml";
  std::string data_dir, socket_path, socket_mode, log_level;
  app.add_option("-c,--config", config_path,
                 "TOML config file (default /etc/keel/keel.toml; "
                 "a missing default file means built-in defaults)");
  app.add_option("--data-dir", data_dir, "data directory (overrides data_dir)");
  app.add_option("--socket", socket_path, "Unix socket path (overrides socket_path)");
  app.add_option("--socket-mode", socket_mode, "socket file mode, octal (overrides socket_mode)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|critical|off");
  app.set_version_flag("--version", KEEL_VERSION);
  CLI11_PARSE(app, argc, argv);

  setup_logging();

  keel::agent::Config config;
  bool explicit_config = app.count("--config") > 0;
  if (auto st = keel::agent::load_config_file(config_path, explicit_config, config); !st) {
    return fail(st.error().message);
  }
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (!socket_path.empty()) config.socket_path = socket_path;
  if (!socket_mode.empty()) {
    auto mode = keel::agent::parse_socket_mode(socket_mode);
    if (!mode) return fail(mode.error().message);
    config.socket_mode = *mode;
  }
  if (!log_level.empty()) config.log_level = log_level;
  auto level = spdlog::level::from_str(config.log_level);
  if (level == spdlog::level::off && config.log_level != "off") {
    return fail("log_level \"" + config.log_level +
                "\" is not one of trace, debug, info, warn, "
                "error, critical, off");
  }
  spdlog::set_level(level);

  // Before any thread exists (WiredTiger's, the node's), so every thread inherits the mask
  // and the signals reach the event loop.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  signal(SIGPIPE, SIG_IGN);

  keel::storage::EngineOptions eo;
  eo.dir = config.data_dir;
  eo.cache_size_mb = config.cache_size_mb;
  eo.log_file_max_mb = config.log_file_max_mb;
  eo.compaction_batch_rows = config.compaction_batch_rows;
  // Ranges inside a txn are paged like top-level ones. Part of apply, so every replica must
  // use the same value.
  eo.txn_range_max_bytes = config.limits.max_response_bytes;
  auto engine = keel::storage::open_engine(eo);
  if (!engine) return fail(engine.error().message);

  keel::node::NodeOptions no;
  no.max_batch_entries = config.max_batch_entries;
  no.max_batch_bytes = std::max<size_t>(no.max_batch_bytes, 2 * config.limits.max_request_bytes);
  auto node = keel::node::Node::open(**engine, no);
  if (!node) return fail(node.error().message);
  spdlog::info("data dir {}: revision {}, compact revision {}, applied index {}", config.data_dir,
               (*engine)->store().current_revision(), (*engine)->store().compact_revision(),
               (*engine)->store().applied_index());

  const std::string sock = config.effective_socket_path();
  if (auto st = prepare_socket_path(sock); !st) return fail(st.error().message);

  int exit_code = 0;
  {
    auto io = kj::setupAsyncIo();
    keel::agent::RevisionSignal signal;
    keel::agent::Server server(config, **engine, **node, signal, io);
    kj::Own<kj::ConnectionReceiver> listener;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   listener = io.provider->getNetwork()
                                  .parseAddress(kj::str("unix:", sock.c_str()))
                                  .wait(io.waitScope)
                                  ->listen();
                 })) {
      return fail("cannot listen on " + sock + ": " + e->getDescription().cStr());
    }
    if (chmod(sock.c_str(), config.socket_mode) != 0) {
      return fail("cannot chmod " + sock + ": " + std::strerror(errno));
    }
    server.serve(kj::mv(listener));
    (*node)->start([&signal](int64_t revision) { signal.publish(revision); });

    spdlog::info("keeld {} serving on {} (mode {:04o}); try: keelctl --socket {} put k v",
                 KEEL_VERSION, sock, config.socket_mode, sock);
    sd_notify(0, "READY=1\nSTATUS=serving");

    auto& port = io.unixEventPort;
    auto sig = port.onSignal(SIGTERM).exclusiveJoin(port.onSignal(SIGINT)).wait(io.waitScope);
    spdlog::info("signal {} received: shutting down", sig.si_signo);
    sd_notify(0, "STOPPING=1");
    server.shutdown(5000).wait(io.waitScope);
  }
  unlink(sock.c_str());
  node->reset();    // joins the node thread (already stopped)
  engine->reset();  // closes WiredTiger cleanly (checkpoint)
  spdlog::info("stopped");
  return exit_code;
}
