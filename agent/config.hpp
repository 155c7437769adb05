#pragma once
// keeld's configuration: a TOML file (default /etc/keel/keel.toml) whose every key is
// documented in README.md, overridden by command-line flags. Unknown keys are errors, so a
// typo never silently falls back to a default.
#include <cstdint>
#include <string>

#include "cluster/model/kv_types.hpp"

namespace keel::agent {

struct Config {
  std::string data_dir = "./var";
  std::string socket_path;  // empty = <data_dir>/keel.sock
  uint32_t socket_mode = 0660;
  std::string log_level = "info";  // trace, debug, info, warn, error, critical, off

  storage::Limits limits;
  size_t max_connections = 1024;  // limits.max_connections: connections open at once

  size_t cache_size_mb = 256;
  size_t log_file_max_mb = 16;
  size_t compaction_batch_rows = 1000;
  size_t max_batch_entries = 1024;  // proposals per fsync'd log batch

  uint64_t watch_progress_interval_ms = 600000;  // etcd's 10 minutes
  size_t watch_batch_bytes = 256 * 1024;         // event bytes per watcher message

  std::string effective_socket_path() const;
};

// Reads `path` into `config` (keys absent from the file keep their current values).
// A missing file is an error only when `must_exist`. Errors name the file, the key and why.
Status load_config_file(const std::string& path, bool must_exist, Config& config);

// Parses an octal mode such as "0660". Errors: not octal, or outside 0..0777.
Result<uint32_t> parse_socket_mode(const std::string& text);

}  // namespace keel::agent
