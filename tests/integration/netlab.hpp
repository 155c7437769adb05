#pragma once
// Real network partitions for integration tests: one network namespace per member, each with
// a veth link to a bridge in a hub namespace (so the test's own namespace is never touched):
//
//   ns <tag>-m<i>: eth0 10.199.0.<i+1>/24  <--veth-->  ns <tag>-hub: h<i> -- br0 -- h<j> ...
//
// cut(i) sets the hub side of member i's link down (no frame crosses it in either direction;
// TCP connections stall, as on a pulled cable). cut(i, Cut::inbound) drops only the frames
// sent to member i, cut(i, Cut::outbound) only those it sends (a root qdisc `pfifo limit 0`
// on the hub side or on the member's eth0: every frame is dropped at enqueue); on
// established TCP connections data then still flows the other way until the send window
// fills, since its acknowledgements are lost. heal(i) undoes any of them. The destructor
// deletes every namespace it created (the links go with them). Namespaces are named after the
// test process's pid, and a NetLab first removes the namespaces of earlier test processes that
// are gone (left behind by a crash or a ctest timeout).
//
// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`; unavailable() says why not.
#include <optional>
#include <string>
#include <vector>

namespace keel::test {

class NetLab {
 public:
  // Why network namespaces cannot be used here (nullopt: they can). Probes by creating and
  // deleting one namespace with a veth link.
  static std::optional<std::string> unavailable();

  // Whether `tc` is installed (for the one-way cuts).
  static bool has_tc();

  explicit NetLab(int members);
  ~NetLab();
  NetLab(const NetLab&) = delete;
  NetLab& operator=(const NetLab&) = delete;

  // Empty if every command succeeded; otherwise the failing command and its stderr.
  const std::string& error() const { return error_; }
  const std::vector<std::string>& netns() const { return member_ns_; }
  const std::vector<std::string>& hosts() const { return hosts_; }

  enum class Cut { both, inbound, outbound };
  bool cut(int member, Cut how = Cut::both);
  bool heal(int member);
  // Aborts every TCP connection to or from member i (`ss -K` in each namespace), as a long
  // partition ends them: what was queued on them is gone, and peers reconnect when healed.
  void reset_tcp(int member);

 private:
  bool ip(const std::vector<std::string>& args);
  bool tc(const std::vector<std::string>& ns_and_args);  // `tc` args run in namespace [0]
  std::string hub_;
  std::vector<std::string> member_ns_, hosts_;
  std::vector<std::string> created_;
  std::string error_;
};

}  // namespace keel::test
