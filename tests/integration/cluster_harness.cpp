#include "cluster_harness.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

namespace keel::test {

uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return 0;
  }
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

KeelCluster::KeelCluster(const std::string& root, int members, std::string config_toml,
                         const ClusterNet& net)
    : root_(root), config_(std::move(config_toml)), net_(net) {
  for (int i = 0; i < members; ++i) {
    names_.push_back("m" + std::to_string(i));
    if (net.hosts.empty()) {
      peers_.push_back("127.0.0.1:" + std::to_string(free_port()));
    } else {
      peers_.push_back(net.hosts.at(i) + ":" + std::to_string(net.port));
    }
    joiner_.push_back(false);
    learner_.push_back(false);
    std::filesystem::create_directories(root_ + "/" + names_.back());
    members_.push_back(std::make_unique<Keeld>(root_ + "/" + names_.back(), config_));
    if (!net.netns.empty()) members_.back()->set_netns(net.netns.at(i));
    running.push_back(false);
  }
}

int KeelCluster::add_joiner(const std::string& name) {
  const size_t i = names_.size();
  names_.push_back(name);
  if (i < net_.hosts.size()) {
    peers_.push_back(net_.hosts[i] + ":" + std::to_string(net_.port));
  } else {
    peers_.push_back("127.0.0.1:" + std::to_string(free_port()));
  }
  joiner_.push_back(true);
  learner_.push_back(false);
  std::filesystem::create_directories(root_ + "/" + name);
  members_.push_back(std::make_unique<Keeld>(root_ + "/" + name, config_));
  if (i < net_.netns.size()) members_.back()->set_netns(net_.netns[i]);
  running.push_back(false);
  return size() - 1;
}

std::optional<std::string> get_value(client::Client& c, const std::string& key, bool serializable) {
  storage::RangeRequest r;
  r.key = key;
  r.serializable = serializable;
  auto got = c.range(r);
  if (!got || got->kvs.empty()) return std::nullopt;
  return got->kvs[0].value;
}

int KeelCluster::add_learner(const std::string& name) {
  const int i = add_joiner(name);
  learner_[i] = true;
  return i;
}

std::vector<std::string> KeelCluster::args(int i) const {
  std::string initial;
  for (int j = 0; j < size(); ++j) {
    if (learner_[j]) continue;           // learners are not Raft members
    if (joiner_[j] && j != i) continue;  // a joiner knows the founders and itself
    if (!initial.empty()) initial += ",";
    initial += names_[j] + "=" + peers_[j];
  }
  if (learner_[i]) {
    return {"--name", names_[i], "--initial-cluster", initial, "--listen-peer", peers_[i],
            "--role", "learner"};
  }
  return {"--name",        names_[i], "--initial-cluster",       initial,
          "--listen-peer", peers_[i], "--initial-cluster-state", joiner_[i] ? "existing" : "new"};
}

bool KeelCluster::start(int i) {
  running[i] = members_[i]->start(args(i));
  return running[i];
}

bool KeelCluster::start_all() {
  bool ok = true;
  for (int i = 0; i < size(); ++i)
    if (!joiner_[i]) ok = start(i) && ok;
  return ok;
}

std::optional<client::StatusInfo> KeelCluster::status(int i) {
  auto c = members_[i]->client();
  if (!c) return std::nullopt;
  auto s = c->status();
  if (!s) return std::nullopt;
  return std::move(s).value();
}

std::optional<int> KeelCluster::wait_leader(std::chrono::milliseconds deadline) {
  std::vector<int> all;
  for (int i = 0; i < size(); ++i)
    all.push_back(i);
  return wait_leader_among(all, deadline);
}

std::optional<int> KeelCluster::wait_leader_among(const std::vector<int>& among,
                                                  std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    uint64_t lead = 0;
    bool agree = true;
    for (int i : among) {
      if (!agree) break;
      if (!running[i]) continue;
      auto s = status(i);
      if (!s || s->leader == 0 || (lead != 0 && s->leader != lead)) agree = false;
      if (s) lead = s->leader;
    }
    if (agree && lead != 0) {
      for (int i : among) {
        if (!running[i]) continue;
        auto s = status(i);
        if (s && s->member_id == lead) return i;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

}  // namespace keel::test
