// keeld: the keel agent's main: flags and config, logging, signals, sd_notify. The parts are
// wired, started and shut down in order by agent::Agent (agent/agent.hpp), on the KJ event
// loop of this (main) thread.
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "agent/agent.hpp"
#include "agent/config.hpp"

namespace {

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
  std::string name, listen_peer, advertise_peer, initial_cluster, initial_state, token, role;
  app.add_option("--role", role,
                 "voter | learner (overrides cluster.role; a learner is fed by the relay tree "
                 "and --initial-cluster names the voters)");
  app.add_option("--name", name, "this member's name (overrides cluster.name)");
  app.add_option("--listen-peer", listen_peer,
                 "host:port to accept peer connections on (overrides cluster.listen_peer)");
  app.add_option("--advertise-peer", advertise_peer,
                 "host:port the other members dial (overrides cluster.advertise_peer)");
  app.add_option("--initial-cluster", initial_cluster,
                 "name=host:port,... of the founding members (overrides cluster.initial_cluster)");
  app.add_option("--initial-cluster-state", initial_state,
                 "new | existing (overrides cluster.initial_cluster_state)");
  app.add_option("--initial-cluster-token", token,
                 "names the cluster; member ids derive from it (cluster.initial_cluster_token)");
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
  if (!name.empty()) config.name = name;
  if (!listen_peer.empty()) config.listen_peer = listen_peer;
  if (!advertise_peer.empty()) config.advertise_peer = advertise_peer;
  if (!initial_cluster.empty()) config.initial_cluster = initial_cluster;
  if (!initial_state.empty()) config.initial_cluster_state = initial_state;
  if (!token.empty()) config.initial_cluster_token = token;
  if (!role.empty()) config.role = role;
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

  {
    auto io = kj::setupAsyncIo();
    auto agent = keel::agent::Agent::open(config, io);
    if (!agent) return fail(agent.error().message);
    if (auto st = (*agent)->start(); !st) return fail(st.error().message);
    const std::string& sock = (*agent)->socket_path();
    spdlog::info("keeld {} serving on {} (mode {:04o}); try: keelctl --socket {} put k v",
                 KEEL_VERSION, sock, config.socket_mode, sock);
    sd_notify(0, "READY=1\nSTATUS=serving");

    auto& port = io.unixEventPort;
    auto sig = port.onSignal(SIGTERM).exclusiveJoin(port.onSignal(SIGINT)).wait(io.waitScope);
    spdlog::info("signal {} received: shutting down", sig.si_signo);
    sd_notify(0, "STOPPING=1");
    (*agent)->shutdown(5000).wait(io.waitScope);
  }  // ~Agent: connections, socket file, node thread, then WiredTiger (closed cleanly)
  spdlog::info("stopped");
  return 0;
}
