#include "agent/config.hpp"

#include <toml++/toml.h>
#include <filesystem>
#include <functional>
#include <map>

namespace keel::agent {

std::string Config::effective_socket_path() const {
  return socket_path.empty() ? data_dir + "/keel.sock" : socket_path;
}

Result<uint32_t> parse_socket_mode(const std::string& text) {
  if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos) {
    return make_error(ErrorCode::invalid_argument,
                      "socket_mode \"" + text + "\" is not an octal mode such as \"0660\"");
  }
  return static_cast<uint32_t>(std::stoul(text, nullptr, 8));
}

namespace {

using Setter = std::function<Status(const toml::node&)>;

Error key_error(const std::string& key, const std::string& why) {
  return make_error(ErrorCode::invalid_argument, "config key " + key + ": " + why);
}

template <typename T>
Setter size_setter(const std::string& key, T& target, int64_t min) {
  return [key, &target, min](const toml::node& n) -> Status {
    auto v = n.value<int64_t>();
    if (!n.is_integer() || !v) return key_error(key, "must be an integer");
    if (*v < min) return key_error(key, "must be at least " + std::to_string(min));
    target = static_cast<T>(*v);
    return ok_status();
  };
}

Setter string_setter(const std::string& key, std::string& target) {
  return [key, &target](const toml::node& n) -> Status {
    if (!n.is_string()) return key_error(key, "must be a string");
    target = *n.value<std::string>();
    return ok_status();
  };
}

}  // namespace

Status load_config_file(const std::string& path, bool must_exist, Config& c) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (must_exist) {
      return make_error(ErrorCode::invalid_argument, "config file " + path + " does not exist");
    }
    return ok_status();
  }
  toml::table root;
  try {
    root = toml::parse_file(std::string_view(path));
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return make_error(ErrorCode::invalid_argument,
                      "config file " + path + ":" + std::to_string(where.line) + ":" +
                          std::to_string(where.column) + ": " + std::string(e.description()));
  }

  std::map<std::string, Setter> setters = {
      {"data_dir", string_setter("data_dir", c.data_dir)},
      {"socket_path", string_setter("socket_path", c.socket_path)},
      {"socket_mode",
       [&c](const toml::node& n) -> Status {
         if (!n.is_string()) return key_error("socket_mode", "must be a string such as \"0660\"");
         auto mode = parse_socket_mode(*n.value<std::string>());
         if (!mode) return std::move(mode).error();
         c.socket_mode = *mode;
         return ok_status();
       }},
      {"log_level", string_setter("log_level", c.log_level)},
      {"limits.max_key_bytes", size_setter("limits.max_key_bytes", c.limits.max_key_bytes, 1)},
      {"limits.max_value_bytes",
       size_setter("limits.max_value_bytes", c.limits.max_value_bytes, 0)},
      {"limits.max_request_bytes",
       size_setter("limits.max_request_bytes", c.limits.max_request_bytes, 1024)},
      {"limits.max_txn_ops", size_setter("limits.max_txn_ops", c.limits.max_txn_ops, 1)},
      {"limits.max_response_bytes",
       size_setter("limits.max_response_bytes", c.limits.max_response_bytes, 4096)},
      {"limits.max_watchers", size_setter("limits.max_watchers", c.limits.max_watchers, 0)},
      {"limits.max_connections", size_setter("limits.max_connections", c.max_connections, 1)},
      {"storage.cache_size_mb", size_setter("storage.cache_size_mb", c.cache_size_mb, 1)},
      {"storage.log_file_max_mb", size_setter("storage.log_file_max_mb", c.log_file_max_mb, 1)},
      {"storage.compaction_batch_rows",
       size_setter("storage.compaction_batch_rows", c.compaction_batch_rows, 1)},
      {"storage.max_batch_entries",
       size_setter("storage.max_batch_entries", c.max_batch_entries, 1)},
      {"watch.progress_interval_ms",
       size_setter("watch.progress_interval_ms", c.watch_progress_interval_ms, 0)},
      {"watch.batch_bytes", size_setter("watch.batch_bytes", c.watch_batch_bytes, 1024)},
  };
  const std::map<std::string, bool> tables = {{"limits", true}, {"storage", true}, {"watch", true}};

  for (const auto& [k, node] : root) {
    std::string key(k.str());
    if (node.is_table()) {
      if (!tables.count(key)) {
        return make_error(ErrorCode::invalid_argument,
                          "config file " + path + ": unknown table [" + key + "]");
      }
      for (const auto& [sub, value] : *node.as_table()) {
        std::string full = key + "." + std::string(sub.str());
        auto it = setters.find(full);
        if (it == setters.end()) {
          return make_error(ErrorCode::invalid_argument,
                            "config file " + path + ": unknown key " + full);
        }
        if (auto st = it->second(value); !st) {
          return make_error(ErrorCode::invalid_argument,
                            "config file " + path + ": " + st.error().message);
        }
      }
      continue;
    }
    auto it = setters.find(key);
    if (it == setters.end() || key.find('.') != std::string::npos) {
      return make_error(ErrorCode::invalid_argument,
                        "config file " + path + ": unknown key " + key);
    }
    if (auto st = it->second(node); !st) {
      return make_error(ErrorCode::invalid_argument,
                        "config file " + path + ": " + st.error().message);
    }
  }
  return ok_status();
}

}  // namespace keel::agent
