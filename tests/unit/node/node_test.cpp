// The node: the Raft driver on real WiredTiger storage and real loopback TCP. One member
// (group commit, order, recovery) and three members in one process (election, forwarding,
// read-your-writes on a follower, ReadIndex, leadership transfer at stop, membership).
// Assertions run on the main thread only; node-thread completions fulfil futures.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <thread>

#include "cluster/node/node.hpp"
#include "cluster/node/wire.hpp"
#include "cluster/storage/raft_storage.hpp"
#include "cluster/transport/codec.hpp"
#include "primitives/state.hpp"

using namespace keel;
using namespace keel::storage;
using namespace std::chrono_literals;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/keel-node-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::unique_ptr<Engine> open_at(const std::filesystem::path& dir,
                                storage::StateExtension* extension = nullptr) {
  EngineOptions o;
  o.dir = dir.string();
  o.extension = extension;
  o.cache_size_mb = 16;
  o.log_file_max_mb = 1;
  auto e = open_engine(o);
  REQUIRE(e.ok());
  return std::move(e).value();
}

PutRequest put(std::string k, std::string v) {
  PutRequest p;
  p.key = std::move(k);
  p.value = std::move(v);
  return p;
}

// A port that was free a moment ago (the test listens on it right after).
uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

node::NodeOptions single(const std::string& name = "solo") {
  node::NodeOptions o;
  o.name = name;
  o.cluster_id = node::cluster_id_of("test");
  o.id = node::member_id_of(o.cluster_id, name);
  o.initial_members = {{o.id, name, "127.0.0.1:1", false}};
  o.tick_ms = 10;
  return o;
}

Result<CommandResult> propose_wait(node::Node& n, Command c) {
  std::promise<Result<CommandResult>> done;
  auto f = done.get_future();
  n.propose(std::move(c), [&done](Result<CommandResult> r) { done.set_value(std::move(r)); });
  return f.get();
}

Status read_index_wait(node::Node& n) {
  std::promise<Status> done;
  auto f = done.get_future();
  n.read_index([&done](Status s) { done.set_value(std::move(s)); });
  return f.get();
}

// Polls `cond` until it holds or the deadline passes.
template <typename F>
bool eventually(F cond, std::chrono::milliseconds deadline = 10s) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

// A loopback port in front of a member's peer port. Closed (the default), it accepts every
// connection and closes it at once, as a member that is not up yet or refuses would; open,
// it relays each new connection to the member both ways. One thread, its own sockets only.
class Gate {
 public:
  explicit Gate(uint16_t target) : target_(target) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(listen_fd_, 16);
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~Gate() {
    stop_ = true;
    thread_.join();
    for (auto [x, y] : pairs_) {
      close(x);
      close(y);
    }
    close(listen_fd_);
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  uint16_t port() const { return port_; }
  void open() { open_ = true; }
  int refused() const { return refused_; }

 private:
  static bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
      const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  int dial_target() const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(target_);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  void run() {
    std::vector<char> buf(64 << 10);
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (auto [x, y] : pairs_) {
        fds.push_back({x, POLLIN, 0});
        fds.push_back({y, POLLIN, 0});
      }
      if (poll(fds.data(), fds.size(), 10) <= 0) continue;
      std::vector<bool> dead(pairs_.size(), false);
      for (size_t i = 0; i < pairs_.size(); ++i) {
        for (int side = 0; side < 2 && !dead[i]; ++side) {
          if ((fds[1 + 2 * i + side].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
          const int from = side == 0 ? pairs_[i].first : pairs_[i].second;
          const int to = side == 0 ? pairs_[i].second : pairs_[i].first;
          const ssize_t n = read(from, buf.data(), buf.size());
          if (n <= 0 || !write_all(to, buf.data(), static_cast<size_t>(n))) dead[i] = true;
        }
      }
      for (size_t i = pairs_.size(); i-- > 0;) {
        if (!dead[i]) continue;
        close(pairs_[i].first);
        close(pairs_[i].second);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(i));
      }
      if ((fds[0].revents & POLLIN) == 0) continue;
      const int c = accept(listen_fd_, nullptr, nullptr);
      if (c < 0) continue;
      const int t = open_ ? dial_target() : -1;
      if (t < 0) {
        close(c);
        ++refused_;
        continue;
      }
      pairs_.emplace_back(c, t);
    }
  }

  uint16_t target_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<bool> open_{false};
  std::atomic<int> refused_{0};
  std::vector<std::pair<int, int>> pairs_;  // gate thread only (and the destructor after join)
  std::thread thread_;
};

uint16_t port_of(const std::string& host_port) {
  return static_cast<uint16_t>(std::stoi(host_port.substr(host_port.rfind(':') + 1)));
}

struct Cluster {
  TempDir root;
  std::vector<node::Member> members;
  std::vector<std::unique_ptr<Engine>> engines;
  std::vector<std::unique_ptr<node::Node>> nodes;
  std::vector<node::NodeOptions> options;
  std::vector<std::unique_ptr<primitives::State>> states;  // with_primitives: outlive engines

  explicit Cluster(int n, const std::function<void(node::NodeOptions&)>& tweak = {},
                   bool with_primitives = false) {
    if (with_primitives) {
      for (int i = 0; i < n; ++i)
        states.push_back(std::make_unique<primitives::State>());
    }
    const uint64_t cid = node::cluster_id_of("three");
    for (int i = 0; i < n; ++i) {
      std::string name = "m" + std::to_string(i);
      members.push_back(
          {node::member_id_of(cid, name), name, "127.0.0.1:" + std::to_string(free_port()), false});
    }
    for (int i = 0; i < n; ++i) {
      node::NodeOptions o;
      o.name = members[i].name;
      o.cluster_id = cid;
      o.id = members[i].id;
      o.listen_peer = members[i].peer_address;
      o.initial_members = members;
      o.tick_ms = 10;
      o.election_ticks = 10;
      o.leader_wait_ms = 2000;
      o.request_timeout_ms = 3000;
      if (tweak) tweak(o);
      options.push_back(o);
      engines.push_back(open_at(root.path / o.name, with_primitives ? states[i].get() : nullptr));
      auto node = node::Node::open(*engines.back(), o);
      REQUIRE(node.ok());
      nodes.push_back(std::move(node).value());
    }
    for (auto& nd : nodes)
      REQUIRE(nd->start(nullptr).ok());
  }
  ~Cluster() {
    for (auto& nd : nodes)
      if (nd) nd->stop();
    nodes.clear();
    engines.clear();  // before the states they apply through
  }
  // Index of the member everyone agrees leads, or -1.
  int leader() const {
    raft::NodeId lead = 0;
    for (const auto& nd : nodes) {
      if (!nd) continue;
      auto s = nd->status();
      if (s.leader == 0 || (lead != 0 && s.leader != lead)) return -1;
      lead = s.leader;
    }
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i] && members[i].id == lead) return static_cast<int>(i);
    return -1;
  }
  // Options for a member that joins this running cluster (--initial-cluster-state
  // existing): it knows the others and itself, and holds no configuration.
  node::NodeOptions joiner(const std::string& name) const {
    node::NodeOptions o = options[0];
    o.name = name;
    o.id = node::member_id_of(o.cluster_id, o.name);
    o.listen_peer = "127.0.0.1:" + std::to_string(free_port());
    o.join_existing = true;
    o.initial_members = members;
    o.initial_members.push_back({o.id, o.name, o.listen_peer, false});
    return o;
  }
  int wait_leader() {
    int l = -1;
    eventually([&] { return (l = leader()) >= 0; });
    return l;
  }
};

}  // namespace

TEST_CASE("one member: proposals from many threads are applied in one order and share fsyncs",
          "[node]") {
  TempDir dir;
  auto engine = open_at(dir.path);
  auto node = node::Node::open(*engine, single());
  REQUIRE(node.ok());
  REQUIRE((*node)->start(nullptr).ok());

  constexpr int kThreads = 8, kPerThread = 100;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<int64_t> revisions;
  int failures = 0;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = propose_wait(**node, put("k" + std::to_string(t) + "/" + std::to_string(i), "v"));
        std::lock_guard lock(mu);
        if (!r.ok()) {
          failures++;
          continue;
        }
        revisions.push_back(std::get<PutResponse>(r.value()).revision);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  const auto st = (*node)->status();
  (*node)->stop();

  REQUIRE(failures == 0);
  std::sort(revisions.begin(), revisions.end());
  REQUIRE(revisions.size() == kThreads * kPerThread);
  // Every put got its own revision: 2 .. N+1 (a new store is at revision 1).
  for (size_t i = 0; i < revisions.size(); ++i)
    CHECK(revisions[i] == int64_t(i) + 2);
  // Group commit: with 8 concurrent writers, fewer fsyncs than writes.
  CHECK(st.log_syncs < st.proposals);
  CHECK(st.role == "leader");
}

TEST_CASE("one member: state and log survive a restart, the data dir refuses another cluster",
          "[node][recovery]") {
  TempDir dir;
  {
    auto engine = open_at(dir.path);
    auto node = node::Node::open(*engine, single());
    REQUIRE(node.ok());
    REQUIRE((*node)->start(nullptr).ok());
    for (int i = 0; i < 10; ++i)
      REQUIRE(propose_wait(**node, put("key" + std::to_string(i), "v")).ok());
    (*node)->stop();
  }
  auto engine = open_at(dir.path);
  {
    auto other = single();
    other.cluster_id = node::cluster_id_of("another");
    other.id = node::member_id_of(other.cluster_id, other.name);
    auto refused = node::Node::open(*engine, other);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message.find("another cluster") != std::string::npos);
  }
  auto node = node::Node::open(*engine, single());
  REQUIRE(node.ok());
  REQUIRE((*node)->start(nullptr).ok());
  auto r = propose_wait(**node, put("after", "restart"));
  REQUIRE(r.ok());
  CHECK(std::get<PutResponse>(r.value()).revision == 12);
  REQUIRE(read_index_wait(**node).ok());
  (*node)->stop();
}

TEST_CASE("one member: a stopped node answers shutting_down, failed commands change nothing",
          "[node]") {
  TempDir dir;
  auto engine = open_at(dir.path);
  auto node = node::Node::open(*engine, single());
  REQUIRE(node.ok());
  REQUIRE((*node)->start(nullptr).ok());
  PutRequest p = put("missing", "");
  p.ignore_value = true;
  auto r = propose_wait(**node, p);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::key_not_found);
  CHECK(engine->store().current_revision() == 1);
  (*node)->stop();
  auto late = propose_wait(**node, put("b", "2"));
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().code == ErrorCode::shutting_down);
}

TEST_CASE("one member: over the pending-proposal bound a write gets overloaded naming the limit",
          "[node][backpressure]") {
  TempDir dir;
  auto engine = open_at(dir.path);
  auto o = single();
  o.max_pending_proposals = 1;
  auto node = node::Node::open(*engine, o);
  REQUIRE(node.ok());
  // Not started: the first proposal stays queued, so the second is over the bound.
  std::promise<Result<CommandResult>> first;
  (*node)->propose(put("a", "1"), [&](Result<CommandResult> r) { first.set_value(std::move(r)); });
  auto second = propose_wait(**node, put("b", "2"));
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == ErrorCode::overloaded);
  CHECK(second.error().message.find("raft.max_pending_proposals") != std::string::npos);
  (*node)->stop();
  CHECK(first.get_future().get().error().code == ErrorCode::shutting_down);
}

TEST_CASE("three members: elect, write through a follower and read it there at once",
          "[node][cluster]") {
  Cluster c(3);
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  const int f = (l + 1) % 3;
  // A follower forwards to the leader and answers once its own replica applied the write.
  auto r = propose_wait(*c.nodes[f], put("via-follower", "1"));
  REQUIRE(r.ok());
  const int64_t rev = std::get<PutResponse>(r.value()).revision;
  CHECK(c.engines[f]->store().current_revision() >= rev);
  auto reader = c.engines[f]->store().reader();
  RangeRequest get;
  get.key = "via-follower";
  auto got = reader->range(get, 1 << 20);
  REQUIRE(got.ok());
  REQUIRE(got->kvs.size() == 1);
  CHECK(got->kvs[0].value == "1");
  // Linearizable read point on a follower.
  REQUIRE(read_index_wait(*c.nodes[f]).ok());
  // Every member applies the same revision.
  CHECK(eventually([&] {
    for (auto& e : c.engines)
      if (e->store().current_revision() != rev) return false;
    return true;
  }));
}

// The core forwards a follower's write to the leader once (Raft retransmits appends, not
// proposals). Here the follower's own connection to the leader cannot come up (the leader's
// appends reach it on the leader's connection, so it knows the leader): the forwarded write
// is dropped by its transport, which hands it back, and it is forwarded again once the
// connection is up, and applied once. Without that it waited for request_timeout_ms and
// ended outcome_unknown.
TEST_CASE(
    "three members: a write forwarded before the connection to the leader is up is sent again when "
    "it is",
    "[node][forward]") {
  const uint64_t cid = node::cluster_id_of("three");
  // The follower: not the lowest id (that one campaigns at once on a fresh cluster, and
  // could not win from behind the gates).
  std::string follower = "m0";
  for (const char* name : {"m1", "m2"}) {
    if (node::member_id_of(cid, name) > node::member_id_of(cid, follower)) follower = name;
  }
  std::vector<std::unique_ptr<Gate>> gates;
  Cluster c(3, [&](node::NodeOptions& o) {
    o.request_timeout_ms = 10000;
    if (o.name != follower) return;
    for (auto& m : o.initial_members) {  // it reaches the others through closed gates only
      if (m.name == follower) continue;
      gates.push_back(std::make_unique<Gate>(port_of(m.peer_address)));
      m.peer_address = "127.0.0.1:" + std::to_string(gates.back()->port());
    }
  });
  REQUIRE(gates.size() == 2);
  int f = 0;
  while (c.members[f].name != follower)
    ++f;
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  REQUIRE(l != f);
  auto refused = [&] { return gates[0]->refused() + gates[1]->refused(); };

  std::promise<Result<CommandResult>> done;
  auto result = done.get_future();
  const int before = refused();
  c.nodes[f]->propose(put("forwarded", "once"),
                      [&done](Result<CommandResult> r) { done.set_value(std::move(r)); });
  // Two more refused dials (a reconnect backoff apart) after the write was queued: it was
  // forwarded while the connection was down, and dropped.
  REQUIRE(eventually([&] { return refused() >= before + 2; }));
  CHECK(result.wait_for(0s) == std::future_status::timeout);
  for (auto& g : gates)
    g->open();
  REQUIRE(result.wait_for(20s) == std::future_status::ready);
  auto r = result.get();
  INFO((r.ok() ? std::string("ok") : r.error().message));
  REQUIRE(r.ok());
  CHECK(c.nodes[f]->status().undelivered_props >= 1);
  // Applied exactly once: the key's first version, at the write's revision, everywhere.
  const int64_t rev = std::get<PutResponse>(r.value()).revision;
  REQUIRE(eventually([&] {
    for (auto& e : c.engines)
      if (e->store().current_revision() < rev) return false;
    return true;
  }));
  for (auto& e : c.engines) {
    auto reader = e->store().reader();
    RangeRequest get;
    get.key = "forwarded";
    auto got = reader->range(get, 1 << 20);
    REQUIRE(got.ok());
    REQUIRE(got->kvs.size() == 1);
    CHECK(got->kvs[0].version == 1);
    CHECK(got->kvs[0].mod_revision == rev);
  }
}

TEST_CASE("three members: every member's status over the peer connections", "[node][cluster]") {
  Cluster c(3);
  REQUIRE(c.wait_leader() >= 0);
  std::promise<std::vector<node::MemberStatus>> done;
  c.nodes[0]->cluster_status(2000, [&](auto all) { done.set_value(std::move(all)); });
  auto all = done.get_future().get();
  REQUIRE(all.size() == 3);
  int leaders = 0;
  for (auto& m : all) {
    REQUIRE(m.status.ok());
    CHECK(m.status->members.size() == 3);
    CHECK(m.status->name == m.name);
    if (m.status->role == "leader") leaders++;
  }
  CHECK(leaders == 1);
  CHECK(all[0].name == "m0");
  // A stopped member's row still names it.
  c.nodes[2]->stop();
  std::promise<std::vector<node::MemberStatus>> again;
  c.nodes[0]->cluster_status(500, [&](auto all) { again.set_value(std::move(all)); });
  auto rows = again.get_future().get();
  REQUIRE(rows.size() == 3);
  bool named = false;
  for (auto& m : rows) {
    if (m.name != "m2") continue;
    named = true;
    REQUIRE_FALSE(m.status.ok());
    CHECK(m.status.error().code == ErrorCode::unavailable);
    CHECK(m.id == c.members[2].id);
  }
  CHECK(named);
}

TEST_CASE("three members: a stopping leader hands leadership over, no write is lost",
          "[node][cluster][transfer]") {
  Cluster c(3);
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  for (int i = 0; i < 20; ++i)
    REQUIRE(propose_wait(*c.nodes[l], put("k" + std::to_string(i), "v")).ok());
  c.nodes[l]->stop();
  c.nodes[l].reset();
  int next = -1;
  REQUIRE(eventually([&] { return (next = c.leader()) >= 0; }));
  CHECK(next != l);
  auto r = propose_wait(*c.nodes[next], put("after", "transfer"));
  REQUIRE(r.ok());
  CHECK(std::get<PutResponse>(r.value()).revision == 22);
}

TEST_CASE("three members: with no quorum a write fails with a typed error, never success",
          "[node][cluster][unavailable]") {
  Cluster c(3);
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  const int f = (l + 1) % 3;
  for (int i = 0; i < 3; ++i) {
    if (i != f) {
      c.nodes[i]->stop();
      c.nodes[i].reset();
    }
  }
  auto r = propose_wait(*c.nodes[f], put("lonely", "x"));
  REQUIRE_FALSE(r.ok());
  const auto code = r.error().code;
  CHECK((code == ErrorCode::unavailable || code == ErrorCode::outcome_unknown));
  auto read = read_index_wait(*c.nodes[f]);
  REQUIRE_FALSE(read.ok());
  CHECK(read.error().code == ErrorCode::unavailable);
}

TEST_CASE("three members: add a learner, promote it, remove an old voter",
          "[node][cluster][member]") {
  Cluster c(3);
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  REQUIRE(propose_wait(*c.nodes[l], put("before", "join")).ok());

  // The new member joins an existing cluster: it knows the others, holds no configuration.
  node::NodeOptions o = c.joiner("m3");
  auto engine = open_at(c.root.path / "m3");
  auto joined = node::Node::open(*engine, o);
  REQUIRE(joined.ok());
  REQUIRE((*joined)->start(nullptr).ok());

  auto change = [&](node::MemberChange kind, const std::string& name, const std::string& addr) {
    std::promise<Result<std::vector<node::Member>>> done;
    auto fut = done.get_future();
    c.nodes[(l + 1) % 3]->change_member(kind, name, addr,
                                        [&](auto r) { done.set_value(std::move(r)); });
    return fut.get();
  };
  auto added = change(node::MemberChange::add_learner, "m3", o.listen_peer);
  REQUIRE(added.ok());
  CHECK(added->size() == 4);
  CHECK(eventually([&] { return engine->store().current_revision() == 2; }));
  REQUIRE(change(node::MemberChange::promote, "m3", "").ok());
  const int removed = (l + 2) % 3;
  auto after = change(node::MemberChange::remove, c.members[removed].name, "");
  REQUIRE(after.ok());
  CHECK(after->size() == 3);
  CHECK(eventually([&] { return c.nodes[removed]->status().role == "removed"; }));
  auto r = propose_wait(*c.nodes[removed], put("from", "removed"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::removed);
  // The new voter serves writes.
  REQUIRE(propose_wait(**joined, put("after", "change")).ok());
  (*joined)->stop();
}

// A short retained log and small chunks: catching up needs a snapshot of many chunks.
void snapshot_options(node::NodeOptions& o) {
  o.log_retain_entries = 20;
  o.snapshot_chunk_bytes = 4096;
  o.snapshot_window_chunks = 2;
}

std::string value_of(Engine& e, const std::string& key) {
  RangeRequest q;
  q.key = key;
  auto r = e.store().reader()->range(q, 1 << 20);
  REQUIRE(r.ok());
  return r->kvs.empty() ? "<none>" : r->kvs[0].value;
}

TEST_CASE("three members: members behind the compacted log catch up by a streamed snapshot",
          "[node][cluster][snapshot]") {
  Cluster c(3, snapshot_options);
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  // A follower goes down; the others move far past the retained log.
  const int down = (l + 1) % 3;
  c.nodes[down]->stop();
  c.nodes[down].reset();
  const std::string value(200, 'v');
  for (int i = 0; i < 300; i++)
    REQUIRE(
        propose_wait(*c.nodes[l], put("k" + std::to_string(i), value + std::to_string(i))).ok());
  REQUIRE(c.engines[l]->raft().first_index() > 100);  // the prefix is compacted

  // A new member joins as a learner: it starts from nothing, far behind the log.
  node::NodeOptions o = c.joiner("m3");
  auto engine = open_at(c.root.path / "m3");
  auto joined = node::Node::open(*engine, o);
  REQUIRE(joined.ok());
  REQUIRE((*joined)->start(nullptr).ok());
  std::promise<Result<std::vector<node::Member>>> done;
  auto fut = done.get_future();
  c.nodes[l]->change_member(node::MemberChange::add_learner, "m3", o.listen_peer,
                            [&](auto r) { done.set_value(std::move(r)); });
  REQUIRE(fut.get().ok());
  const int64_t rev = c.engines[l]->store().current_revision();
  CHECK(eventually([&] { return engine->store().current_revision() >= rev; }, 20s));
  CHECK(eventually([&] { return (*joined)->status().snapshots_installed >= 1; }));
  CHECK(value_of(*engine, "k0") == value + "0");
  CHECK(value_of(*engine, "k299") == value + "299");

  // The stopped follower restarts and is caught up the same way.
  c.nodes[down] = std::move(node::Node::open(*c.engines[down], c.options[down])).value();
  REQUIRE(c.nodes[down]->start(nullptr).ok());
  CHECK(eventually([&] { return c.engines[down]->store().current_revision() >= rev; }, 20s));
  CHECK(eventually([&] { return c.nodes[down]->status().snapshots_installed >= 1; }));
  CHECK(eventually([&] { return c.nodes[l]->status().snapshots_sent >= 2; }));

  // Both keep applying the log after their snapshot, also across a restart.
  REQUIRE(propose_wait(*c.nodes[l], put("after", "snapshot")).ok());
  CHECK(eventually([&] { return value_of(*engine, "after") == "snapshot"; }));
  CHECK(eventually([&] { return value_of(*c.engines[down], "after") == "snapshot"; }));
  (*joined)->stop();
  joined->reset();
  engine.reset();
  engine = open_at(c.root.path / "m3");
  CHECK(value_of(*engine, "k150") == value + "150");
  CHECK(value_of(*engine, "after") == "snapshot");
  auto again = node::Node::open(*engine, o);
  REQUIRE(again.ok());
  REQUIRE((*again)->start(nullptr).ok());
  REQUIRE(propose_wait(*c.nodes[l], put("after", "restart")).ok());
  CHECK(eventually([&] { return value_of(*engine, "after") == "restart"; }));
  (*again)->stop();
}

// Connects to `peer_address` as member `from` (peers are not authenticated until TLS) and
// sends one batch frame holding `m`. False if the handshake is refused.
bool send_as_peer(const std::string& peer_address, uint64_t cluster_id, raft::NodeId from,
                  raft::NodeId to, raft::Message m) {
  const auto colon = peer_address.rfind(':');
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(peer_address.substr(colon + 1))));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return false;
  }
  std::string out;
  transport::encode_frame(transport::Hello{transport::kProtocolVersion, cluster_id, from, to},
                          &out);
  bool ok = write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size());
  uint8_t header[4] = {0, 0, 0, 0};
  ok = ok && read(fd, header, 4) == 4;
  const uint32_t len =
      header[0] | (header[1] << 8) | (header[2] << 16) | (uint32_t(header[3]) << 24);
  std::string body(ok ? len : 0, '\0');
  size_t got = 0;
  while (ok && got < body.size()) {
    ssize_t n = read(fd, body.data() + got, body.size() - got);
    ok = n > 0;
    got += ok ? static_cast<size_t>(n) : 0;
  }
  if (ok) {
    auto reply = transport::decode_frame(reinterpret_cast<const uint8_t*>(body.data()), body.size(),
                                         1 << 20);
    ok = reply.ok() && std::holds_alternative<transport::HelloReply>(*reply) &&
         std::get<transport::HelloReply>(*reply).accepted;
  }
  if (ok) {
    out.clear();
    transport::Batch b;
    b.items.emplace_back(std::move(m));
    transport::encode_frame(b, &out);
    ok = write(fd, out.data(), out.size()) == static_cast<ssize_t>(out.size());
  }
  std::this_thread::sleep_for(50ms);  // let it be read before the close
  close(fd);
  return ok;
}

TEST_CASE(
    "three members: a peer message no correct member sends is refused, counted and "
    "changes nothing",
    "[node][cluster][robustness]") {
  Cluster c(3);
  const int l = c.wait_leader();
  REQUIRE(l >= 0);
  REQUIRE(propose_wait(*c.nodes[l], put("before", "1")).ok());
  const int f = (l + 1) % 3;
  const auto before = c.nodes[f]->status();
  // A heartbeat "from the leader" committing far beyond the follower's log (etcd would panic).
  raft::Message hb;
  hb.type = raft::MessageType::heartbeat;
  hb.from = c.members[l].id;
  hb.to = c.members[f].id;
  hb.term = before.term;
  hb.commit = 1000000;
  REQUIRE(send_as_peer(c.members[f].peer_address, c.options[0].cluster_id, hb.from, hb.to, hb));
  CHECK(eventually([&] { return c.nodes[f]->status().dropped_peer_msgs >= 1; }));
  const auto after = c.nodes[f]->status();
  CHECK_THAT(after.dropped_by_reason, Catch::Contains("commit_beyond_log="));
  CHECK(after.commit_index < 1000000);
  CHECK(after.term == before.term);
  // The member goes on serving.
  REQUIRE(propose_wait(*c.nodes[f], put("after", "2")).ok());
}

TEST_CASE(
    "three members: a removed member's name is refused after its removal left the log "
    "and every member restarted",
    "[node][cluster][member]") {
  Cluster c(3, snapshot_options);
  int l = c.wait_leader();
  REQUIRE(l >= 0);
  auto change = [&](int via, node::MemberChange kind, const std::string& name,
                    const std::string& addr) {
    std::promise<Result<std::vector<node::Member>>> done;
    auto fut = done.get_future();
    c.nodes[via]->change_member(kind, name, addr, [&](auto r) { done.set_value(std::move(r)); });
    return fut.get();
  };
  const int gone = (l + 1) % 3;
  REQUIRE(change(l, node::MemberChange::remove, c.members[gone].name, "").ok());
  c.nodes[gone]->stop();
  // The removal leaves the retained log (20 entries), then every member restarts: only the
  // record stored with the member list remembers it.
  for (int i = 0; i < 100; i++)
    REQUIRE(propose_wait(*c.nodes[l], put("k" + std::to_string(i), "v")).ok());
  // The log is compacted only below a completed checkpoint, which the node asks for when
  // compaction is due: a few more writes once it has completed.
  int more = 0;
  REQUIRE(eventually([&] {
    REQUIRE(propose_wait(*c.nodes[l], put("more" + std::to_string(more++), "v")).ok());
    return c.engines[l]->raft().first_index() > 30;
  }));
  for (int i : {l, (l + 2) % 3}) {
    c.nodes[i]->stop();
    c.nodes[i].reset();
  }
  for (int i : {l, (l + 2) % 3}) {
    c.nodes[i] = std::move(node::Node::open(*c.engines[i], c.options[i])).value();
    REQUIRE(c.nodes[i]->start(nullptr).ok());
  }
  REQUIRE(eventually([&] { return c.nodes[l]->status().leader != 0; }));
  for (int via : {l, (l + 2) % 3}) {
    auto again = change(via, node::MemberChange::add_learner, c.members[gone].name,
                        "127.0.0.1:" + std::to_string(free_port()));
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == ErrorCode::invalid_argument);
    CHECK_THAT(again.error().message, Catch::Contains("removed earlier"));
  }
  c.nodes[gone].reset();
}

TEST_CASE(
    "three members: cluster time is stamped by the leader, the same on every replica, "
    "never going back and not counting a leaderless gap",
    "[node][cluster][clock]") {
  Cluster c(3);
  int l = c.wait_leader();
  REQUIRE(l >= 0);
  auto applied_ms = [&](int i) { return c.engines[i]->store().applied_cluster_ms(); };
  // Under one leader (a slow sanitizer run may change leaders; then measure again).
  uint64_t t1 = 0, t2 = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    l = c.wait_leader();
    REQUIRE(l >= 0);
    const uint64_t term = c.nodes[l]->status().term;
    REQUIRE(propose_wait(*c.nodes[l], put("t", "1")).ok());
    t1 = applied_ms(l);
    std::this_thread::sleep_for(300ms);
    // Forwarded: stamped by the leader.
    REQUIRE(propose_wait(*c.nodes[(l + 1) % 3], put("t", "2")).ok());
    t2 = applied_ms((l + 1) % 3);  // applied there when the write completed
    if (c.nodes[l]->status().term == term && c.nodes[l]->status().role == "leader") break;
  }
  CHECK(t2 >= t1 + 250);  // the leader's clock moved on
  // Every replica reaches the same cluster time at the same applied index.
  CHECK(eventually([&] {
    for (int i = 0; i < 3; ++i)
      if (c.engines[i]->store().applied_index() != c.engines[l]->store().applied_index() ||
          applied_ms(i) != applied_ms(l))
        return false;
    return true;
  }));

  // No quorum for a while: the leaderless gap is not counted, and time never goes back.
  const int a = (l + 1) % 3, b = (l + 2) % 3;
  c.nodes[a]->stop();
  c.nodes[b]->stop();
  c.nodes[a].reset();
  c.nodes[b].reset();
  std::this_thread::sleep_for(1500ms);
  c.nodes[a] = std::move(node::Node::open(*c.engines[a], c.options[a])).value();
  REQUIRE(c.nodes[a]->start(nullptr).ok());
  int lead = -1;
  REQUIRE(eventually(
      [&] {
        for (int i : {a, l}) {
          if (c.nodes[i]->status().role == "leader") lead = i;
        }
        return lead >= 0;
      },
      20s));
  REQUIRE(propose_wait(*c.nodes[lead], put("t", "3")).ok());
  const uint64_t t3 = applied_ms(lead);
  CHECK(t3 >= t2);
  CHECK(t3 < t2 + 1000);  // not t2 + 1500 ms or more: the gap without a leader is not time
}

TEST_CASE("entries carry the leader's cluster time, version-1 entries still decode",
          "[node][wire][clock]") {
  namespace w = node::wire;
  auto e = w::encode_entry({1, 2, 3}, "cmd");
  w::Origin o;
  std::string_view cmd;
  uint64_t ms = 99;
  REQUIRE(w::decode_entry(e, &o, &cmd, &ms));
  CHECK((ms == 0 && cmd == "cmd" && o == w::Origin{1, 2, 3}));
  REQUIRE(w::stamp_entry(&e, 123456789));
  REQUIRE(w::decode_entry(e, &o, &cmd, &ms));
  CHECK((ms == 123456789 && cmd == "cmd"));
  std::string v1 = e.substr(0, 26) + "cmd";  // magic, version, origin, command
  v1[1] = 1;
  REQUIRE(w::decode_entry(v1, &o, &cmd, &ms));
  CHECK((ms == 0 && cmd == "cmd"));
  CHECK_FALSE(w::stamp_entry(&v1, 5));
  std::string short_entry = e.substr(0, 30);
  CHECK_FALSE(w::decode_entry(short_entry, &o, &cmd, &ms));
}

TEST_CASE("snapshot chunk and acknowledgement formats round-trip and reject bad input",
          "[node][wire]") {
  namespace w = node::wire;
  auto chunk = w::encode_snapshot_chunk(5, 6, true, std::string("ab\0c", 4));
  w::SnapshotChunk c;
  REQUIRE(w::decode_snapshot_chunk(chunk, &c));
  CHECK((c.transfer == 5 && c.seq == 6 && c.last && c.data == std::string("ab\0c", 4)));
  CHECK_FALSE(w::decode_snapshot_chunk(chunk.substr(0, 10), &c));
  chunk[17] = 2;  // the `last` flag out of range
  CHECK_FALSE(w::decode_snapshot_chunk(chunk, &c));
  auto ack = w::encode_snapshot_ack({1, 2, false, "why"});
  w::SnapshotAck a;
  REQUIRE(w::decode_snapshot_ack(ack, &a));
  CHECK((a.transfer == 1 && a.seq == 2 && !a.ok && a.reason == "why"));
  CHECK_FALSE(w::decode_snapshot_ack(ack + "x", &a));
  CHECK_FALSE(w::decode_snapshot_ack(ack.substr(0, ack.size() - 1), &a));
}

TEST_CASE(
    "relay formats round-trip, and relayed entries must be contiguous with terms that "
    "never go back",
    "[node][wire][relay]") {
  namespace w = node::wire;
  w::RelayEntries m;
  m.leader = 1;
  m.term = 3;
  m.commit = 9;
  m.prev_index = 5;
  m.prev_term = 2;
  m.cluster_ms = 1234;
  m.upstream_ok = true;
  m.path = {4, 1};
  m.entries = {{6, 2, raft::EntryType::normal, "a"}, {7, 3, raft::EntryType::conf_change, "b"}};
  auto enc = w::encode_relay_entries(m);
  w::RelayEntries back;
  REQUIRE(w::decode_relay_entries(enc, &back));
  CHECK((back.leader == 1 && back.term == 3 && back.commit == 9 && back.prev_index == 5 &&
         back.prev_term == 2 && back.cluster_ms == 1234 && back.upstream_ok));
  CHECK(back.path == m.path);
  REQUIRE(back.entries.size() == 2);
  CHECK((back.entries[1].index == 7 && back.entries[1].term == 3 &&
         back.entries[1].type == raft::EntryType::conf_change && back.entries[1].data == "b"));
  for (size_t n = 0; n < enc.size(); ++n)
    CHECK_FALSE(w::decode_relay_entries(enc.substr(0, n), &back));
  // A term below the previous one is not a committed log: refused.
  m.entries[1].term = 1;
  CHECK_FALSE(w::decode_relay_entries(w::encode_relay_entries(m), &back));
  m.entries = {{6, 1, raft::EntryType::normal, "a"}};  // below prev_term
  CHECK_FALSE(w::decode_relay_entries(w::encode_relay_entries(m), &back));

  w::RelayAck ack{10, true, {{1, "l1", "a:1", 2, 10}, {3, "l3", "a:3", 1, 9}}};
  w::RelayAck ab;
  REQUIRE(w::decode_relay_ack(w::encode_relay_ack(ack), &ab));
  CHECK((ab.applied == 10 && ab.has_report && ab.subtree == ack.subtree));
  w::RelayProposeAck pa{7, ErrorCode::overloaded, 2, "full"}, pb;
  REQUIRE(w::decode_relay_propose_ack(w::encode_relay_propose_ack(pa), &pb));
  CHECK((pb.seq == 7 && pb.code == ErrorCode::overloaded && pb.term == 2 && pb.message == "full"));
  auto bad = w::encode_relay_propose_ack(pa);
  bad[9] = '\x7f';  // an error code that does not exist
  CHECK_FALSE(w::decode_relay_propose_ack(bad, &pb));
  w::RelaySubscribe sb;
  CHECK_FALSE(w::decode_relay_subscribe(w::encode_relay_subscribe({"l", "a:1", 0}), &sb));
  REQUIRE(w::decode_relay_subscribe(w::encode_relay_subscribe({"l", "a:1", 4}), &sb));
  CHECK((sb.name == "l" && sb.peer_address == "a:1" && sb.next_index == 4));
}

TEST_CASE("node wire formats round-trip and reject truncated input", "[node][wire]") {
  node::wire::Origin o{7, 8, 9};
  auto e = node::wire::encode_entry(o, "cmd");
  node::wire::Origin back;
  std::string_view cmd;
  REQUIRE(node::wire::decode_entry(e, &back, &cmd));
  CHECK(back == o);
  CHECK(cmd == "cmd");
  CHECK_FALSE(node::wire::decode_entry(e.substr(0, 10), &back, &cmd));
  node::Member m{5, "name", "127.0.0.1:9", true};
  auto ctx = node::wire::encode_member_context(o, m);
  node::Member mb;
  REQUIRE(node::wire::decode_member_context(ctx, &back, &mb));
  CHECK(mb == m);
  for (size_t n = 0; n < ctx.size(); ++n)
    CHECK_FALSE(node::wire::decode_member_context(ctx.substr(0, n), &back, &mb));
  node::NodeStatus s;
  s.name = "x";
  s.members = {m};
  s.term = 3;
  auto resp = node::wire::encode_status_response(42, s);
  uint64_t seq = 0;
  node::NodeStatus sb;
  REQUIRE(node::wire::decode_status_response(resp, &seq, &sb));
  CHECK(seq == 42);
  CHECK(sb.term == 3);
  CHECK(sb.members == s.members);
  for (size_t n = 0; n < resp.size(); ++n)
    CHECK_FALSE(node::wire::decode_status_response(resp.substr(0, n), &seq, &sb));
}

TEST_CASE(
    "three members: leases and locks on cluster time through a leader change, time entries "
    "end a lease with no other writes, every replica's primitives rows are identical",
    "[node][cluster][primitives]") {
  Cluster c(3, {}, /*with_primitives=*/true);
  int l = c.wait_leader();
  REQUIRE(l >= 0);
  const int f = (l + 1) % 3;
  auto ok = [](Result<CommandResult> r) {
    if (!r) FAIL(r.error().message);
    return std::move(r).value();
  };
  // Lease 1 holds lock L; lease 2 (asked through a follower) queues behind it.
  ok(propose_wait(*c.nodes[l], LeaseGrantRequest{1, 800}));
  ok(propose_wait(*c.nodes[f], LeaseGrantRequest{2, 60000}));
  auto first = std::get<LockResponse>(ok(propose_wait(*c.nodes[l], LockRequest{"L", 1, true, 0})));
  REQUIRE(first.acquired);
  auto queued = std::get<LockResponse>(ok(propose_wait(*c.nodes[f], LockRequest{"L", 2, true, 0})));
  CHECK_FALSE(queued.acquired);
  // The leader goes; lease 1 is renewed through the survivors for a while, then not.
  c.nodes[l]->stop();
  c.nodes[l].reset();
  int l2 = -1;
  REQUIRE(eventually(
      [&] {
        for (int i = 0; i < 3; ++i)
          if (c.nodes[i] && c.nodes[i]->status().role == "leader") l2 = i;
        return l2 >= 0;
      },
      20s));
  const int other = 3 - l - l2;
  for (int i = 0; i < 5; ++i) {
    auto r =
        std::get<LeaseRenewResponse>(ok(propose_wait(*c.nodes[other], LeaseRenewRequest{{1}})));
    CHECK(r.ttl_ms.at(0) == 800);  // still alive: renewed across the leader change
    std::this_thread::sleep_for(200ms);
  }
  auto holder = [&](int i) {
    auto rd = c.engines[i]->store().reader();
    auto lock = primitives::State::lock_info(*rd, "L");
    REQUIRE(lock.ok());
    return lock->has_value() ? (*lock)->holder : 0;
  };
  CHECK(holder(other) == 1);
  const uint64_t renewed_ms = c.engines[other]->store().applied_cluster_ms();
  // No more writes: only the new leader's time entries move time, and they end lease 1;
  // the lock passes to lease 2 with a greater token.
  REQUIRE(eventually([&] { return holder(other) == 2; }, 10s));
  CHECK(c.engines[other]->store().applied_cluster_ms() >= renewed_ms + 800 - 200);
  // The old leader comes back and catches up: the same rows everywhere at the same index.
  c.nodes[l] = std::move(node::Node::open(*c.engines[l], c.options[l])).value();
  REQUIRE(c.nodes[l]->start(nullptr).ok());
  auto dump = [&](int i) {
    auto rd = c.engines[i]->store().reader();
    auto rows = primitives::State::dump(*rd);
    REQUIRE(rows.ok());
    return *rows;
  };
  CHECK(eventually(
      [&] {
        const uint64_t index = c.engines[l2]->store().applied_index();
        for (int i = 0; i < 3; ++i)
          if (c.engines[i]->store().applied_index() != index) return false;
        return dump(0) == dump(1) && dump(1) == dump(2);
      },
      10s));
  auto rd = c.engines[l]->store().reader();
  auto lock = primitives::State::lock_info(*rd, "L");
  REQUIRE(lock.ok());
  REQUIRE(lock->has_value());
  CHECK((*lock)->holder == 2);
  CHECK((*lock)->token > first.token);
}
