#include "netlab.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "harness.hpp"

namespace keel::test {

namespace {

constexpr const char* kPrefix = "keelit";

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "" : " ") + x;
  return s;
}

// Namespaces named keelit<pid>-... whose test process is gone.
void remove_stale() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0) continue;
    const auto dash = name.find('-');
    if (dash == std::string::npos) continue;
    const size_t from = std::string(kPrefix).size();
    if (dash <= from) continue;
    const std::string digits = name.substr(from, dash - from);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid == getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    run_command({"ip", "netns", "del", name}, "", 10);
  }
}

}  // namespace

std::optional<std::string> NetLab::unavailable() {
  auto which = run_command({"ip", "-V"}, "", 10);
  if (which.status != 0) return "iproute2's `ip` is not installed (`ip -V` failed)";
  const std::string ns = std::string(kPrefix) + std::to_string(getpid()) + "-probe";
  auto add = run_command({"ip", "netns", "add", ns}, "", 10);
  if (add.status != 0) {
    return "`ip netns add` failed (needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN): " + add.err;
  }
  auto veth = run_command(
      {"ip", "-n", ns, "link", "add", "pa", "type", "veth", "peer", "name", "pb"}, "", 10);
  run_command({"ip", "netns", "del", ns}, "", 10);
  if (veth.status != 0) return "cannot create a veth link in a namespace: " + veth.err;
  return std::nullopt;
}

bool NetLab::has_tc() {
  return run_command({"tc", "-V"}, "", 10).status == 0;
}

bool NetLab::ip(const std::vector<std::string>& args) {
  std::vector<std::string> full = {"ip"};
  full.insert(full.end(), args.begin(), args.end());
  auto r = run_command(full, "", 10);
  if (r.status == 0) return true;
  if (error_.empty())
    error_ = "`" + join(full) + "` failed (" + std::to_string(r.status) + "): " + r.err;
  return false;
}

NetLab::NetLab(int members) {
  remove_stale();
  static int serial = 0;
  const std::string tag =
      std::string(kPrefix) + std::to_string(getpid()) + "-" + std::to_string(serial++);
  hub_ = tag + "-hub";
  if (!ip({"netns", "add", hub_})) return;
  created_.push_back(hub_);
  if (!ip({"-n", hub_, "link", "set", "lo", "up"}) ||
      !ip({"-n", hub_, "link", "add", "br0", "type", "bridge"}) ||
      !ip({"-n", hub_, "link", "set", "br0", "up"})) {
    return;
  }
  for (int i = 0; i < members; ++i) {
    const std::string ns = tag + "-m" + std::to_string(i);
    const std::string h = "h" + std::to_string(i);
    const std::string addr = "10.199.0." + std::to_string(i + 1);
    if (!ip({"netns", "add", ns})) return;
    created_.push_back(ns);
    member_ns_.push_back(ns);
    hosts_.push_back(addr);
    if (!ip({"-n", ns, "link", "set", "lo", "up"}) ||
        !ip({"-n", hub_, "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", ns}) ||
        !ip({"-n", hub_, "link", "set", h, "master", "br0"}) ||
        !ip({"-n", hub_, "link", "set", h, "up"}) ||
        !ip({"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"}) ||
        !ip({"-n", ns, "link", "set", "eth0", "up"})) {
      return;
    }
  }
}

NetLab::~NetLab() {
  for (auto it = created_.rbegin(); it != created_.rend(); ++it)
    run_command({"ip", "netns", "del", *it}, "", 10);
}

bool NetLab::cut(int member, Cut how) {
  const std::string h = "h" + std::to_string(member);
  switch (how) {
    case Cut::both:
      return ip({"-n", hub_, "link", "set", h, "down"});
    case Cut::inbound:
      return tc({hub_, "qdisc", "replace", "dev", h, "root", "pfifo", "limit", "0"});
    case Cut::outbound:
      return tc({member_ns_.at(member), "qdisc", "replace", "dev", "eth0", "root", "pfifo", "limit",
                 "0"});
  }
  return false;
}

bool NetLab::heal(int member) {
  const std::string h = "h" + std::to_string(member);
  // Removing a root qdisc that is not there fails; only the link state must succeed.
  run_command({"ip", "netns", "exec", hub_, "tc", "qdisc", "del", "dev", h, "root"}, "", 10);
  run_command(
      {"ip", "netns", "exec", member_ns_.at(member), "tc", "qdisc", "del", "dev", "eth0", "root"},
      "", 10);
  return ip({"-n", hub_, "link", "set", h, "up"});
}

void NetLab::reset_tcp(int member) {
  for (size_t j = 0; j < member_ns_.size(); ++j) {
    if (static_cast<int>(j) == member) {
      run_command({"ip", "netns", "exec", member_ns_[j], "ss", "-K", "-t"}, "", 10);
    } else {
      run_command(
          {"ip", "netns", "exec", member_ns_[j], "ss", "-K", "-t", "dst", hosts_.at(member)}, "",
          10);
    }
  }
}

bool NetLab::tc(const std::vector<std::string>& ns_and_args) {
  std::vector<std::string> full = {"ip", "netns", "exec", ns_and_args.at(0), "tc"};
  full.insert(full.end(), ns_and_args.begin() + 1, ns_and_args.end());
  auto r = run_command(full, "", 10);
  if (r.status == 0) return true;
  if (error_.empty()) {
    error_ = "`" + join(full) + "` failed (" + std::to_string(r.status) + "): " + r.err;
  }
  return false;
}

}  // namespace keel::test
