// Real keeld processes forming Raft clusters on 127.0.0.1: election, writes through every
// member, kill -9 of the leader and of everyone, membership changes through keelctl.
// Worker threads record outcomes; assertions run on the main thread after joining.
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "cluster_harness.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

// Writers that put w<t>/<i> = <i> through member `targets[t % n]` until stopped, recording
// every acknowledged value.
struct Writers {
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  std::atomic<int> acked{0};
  std::mutex mu;
  std::map<std::string, std::string> acked_values;  // last acknowledged value per key

  Writers(KeelCluster& c, int count, const std::vector<int>& targets) {
    for (int t = 0; t < count; ++t) {
      threads.emplace_back([this, &c, t, targets] {
        int target = targets[t % targets.size()];
        std::unique_ptr<client::Client> cl;
        for (int i = 0; !stop; ++i) {
          if (!cl) {
            cl = c.member(target).client();
            if (!cl) {
              target = targets[(t + i) % targets.size()];
              std::this_thread::sleep_for(10ms);
              continue;
            }
          }
          auto p = put("w" + std::to_string(t) + "/" + std::to_string(i % 200), std::to_string(i));
          auto r = cl->put(p);
          if (!r) {
            // The member died or answered unavailable/outcome_unknown: not acknowledged.
            // Only a failed connection moves this writer to another member.
            if (r.error().code == ErrorCode::internal) {
              cl.reset();
              target = targets[(t + i + 1) % targets.size()];
            }
            continue;
          }
          std::lock_guard lock(mu);
          acked_values[p.key] = p.value;
          ++acked;
        }
      });
    }
  }
  void join() {
    stop = true;
    for (auto& t : threads)
      t.join();
  }
  ~Writers() {
    if (!stop) join();
  }
};

bool wait_acked(Writers& w, int n, std::chrono::seconds deadline = 60s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (w.acked < n && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  return w.acked >= n;
}

// Every acknowledged value is present: the key holds it, or a later value of the same
// writer (values grow with i; keys repeat every 200).
size_t check_acked(client::Client& c, const std::map<std::string, std::string>& acked,
                   std::vector<std::string>* missing) {
  size_t checked = 0;
  for (const auto& [k, v] : acked) {
    auto got = get_value(c, k);
    if (!got || std::stoll(*got) < std::stoll(v)) missing->push_back(k + "=" + v);
    ++checked;
  }
  return checked;
}

}  // namespace

TEST_CASE("3 members start, elect one leader and accept writes through every member",
          "[integration][cluster]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  for (int i = 0; i < 3; ++i) {
    auto cl = c.member(i).client();
    REQUIRE(cl);
    // Right after the election a forwarded write can meet a peer connection still being
    // dialled; the client is told outcome_unknown (never a false success) and retries.
    auto r = cl->put(put("through/" + c.name(i), "v" + std::to_string(i)));
    for (int attempt = 0;
         attempt < 3 && !r.ok() &&
         (r.error().code == ErrorCode::outcome_unknown || r.error().code == ErrorCode::unavailable);
         ++attempt)
      r = cl->put(put("through/" + c.name(i), "v" + std::to_string(i)));
    INFO((r.ok() ? std::string("ok") : r.error().message));
    REQUIRE(r.ok());
    // Read-your-writes on the same agent, serializable (local replica) and linearizable.
    CHECK(get_value(*cl, "through/" + c.name(i), true) == "v" + std::to_string(i));
    CHECK(get_value(*cl, "through/" + c.name(i)) == "v" + std::to_string(i));
  }
  // Every member holds every write.
  for (int i = 0; i < 3; ++i) {
    auto cl = c.member(i).client();
    REQUIRE(cl);
    for (int j = 0; j < 3; ++j)
      CHECK(get_value(*cl, "through/" + c.name(j)) == "v" + std::to_string(j));
  }
  auto st = keelctl(c.member(0).socket(), {"endpoint", "status", "--cluster", "-w", "json"});
  INFO(st.err);
  REQUIRE(st.status == 0);
  CHECK(st.out.find("\"name\":\"m1\"") != std::string::npos);
  CHECK(st.out.find("\"role\":\"leader\"") != std::string::npos);
  auto members = keelctl(c.member(1).socket(), {"member", "list"});
  REQUIRE(members.status == 0);
  CHECK(members.out.find("m2, " + c.peer(2) + ", voter") != std::string::npos);
}

TEST_CASE("5 members start and elect one leader", "[integration][cluster]") {
  TempDir dir;
  KeelCluster c(dir.path, 5);
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  auto cl = c.member((*leader + 3) % 5).client();
  REQUIRE(cl);
  REQUIRE(cl->put(put("five", "members")).ok());
}

TEST_CASE("kill -9 of the leader during concurrent writes loses no acknowledged write",
          "[integration][cluster][durability]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  std::map<std::string, std::string> acked;
  {
    Writers w(c, 6, {0, 1, 2});
    REQUIRE(wait_acked(w, 300));
    c.member(*leader).kill9();
    c.running[*leader] = false;
    const int before = w.acked;
    // The survivors elect a new leader and go on acknowledging writes.
    auto next = c.wait_leader();
    REQUIRE(next);
    CHECK(*next != *leader);
    CHECK(wait_acked(w, before + 300));
    w.join();
    acked = w.acked_values;
  }
  REQUIRE(c.start(*leader));
  REQUIRE(c.wait_leader());
  // The restarted member catches up, and every member holds every acknowledged write.
  for (int i = 0; i < 3; ++i) {
    auto cl = c.member(i).client();
    REQUIRE(cl);
    std::vector<std::string> missing;
    CHECK(check_acked(*cl, acked, &missing) == acked.size());
    INFO("member " << c.name(i));
    CHECK(missing.empty());
  }
}

TEST_CASE(
    "kill -9 of every member at once during writes, then restart: no acknowledged write "
    "is lost",
    "[integration][cluster][durability]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  REQUIRE(c.wait_leader());
  std::map<std::string, std::string> acked;
  {
    Writers w(c, 6, {0, 1, 2});
    REQUIRE(wait_acked(w, 500));
    for (int i = 0; i < 3; ++i) {
      ::kill(c.member(i).pid(), SIGKILL);
    }
    for (int i = 0; i < 3; ++i) {
      c.member(i).kill9();  // reaps
      c.running[i] = false;
    }
    w.join();
    acked = w.acked_values;
  }
  REQUIRE(c.start_all());
  REQUIRE(c.wait_leader());
  auto cl = c.member(1).client();
  REQUIRE(cl);
  std::vector<std::string> missing;
  CHECK(check_acked(*cl, acked, &missing) == acked.size());
  CHECK(missing.empty());
}

TEST_CASE("keelctl member add, promote and remove while writes run",
          "[integration][cluster][member]") {
  TempDir dir;
  KeelCluster c(dir.path, 3);
  REQUIRE(c.start_all());
  auto leader = c.wait_leader();
  REQUIRE(leader);
  Writers w(c, 2, {0, 1, 2});
  REQUIRE(wait_acked(w, 100));
  const int j = c.add_joiner("m3");
  auto add = keelctl(c.member(0).socket(), {"member", "add", "m3", c.peer(j)});
  INFO(add.err);
  REQUIRE(add.status == 0);
  CHECK(add.out.find("m3, " + c.peer(j) + ", learner") != std::string::npos);
  REQUIRE(c.start(j));
  // The learner catches up from the log.
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until) {
    auto s = c.status(j);
    auto l = c.status(*leader);
    if (s && l && s->applied_index > 0 && s->applied_index + 50 >= l->commit_index) break;
    std::this_thread::sleep_for(20ms);
  }
  auto promote = keelctl(c.member(1).socket(), {"member", "promote", "m3"});
  INFO(promote.err);
  REQUIRE(promote.status == 0);
  CHECK(promote.out.find("m3, " + c.peer(j) + ", voter") != std::string::npos);
  // Remove a founder that is not the leader.
  const int gone = (*leader + 1) % 3;
  auto remove = keelctl(c.member(*leader).socket(), {"member", "remove", c.name(gone)});
  INFO(remove.err);
  REQUIRE(remove.status == 0);
  CHECK(remove.out.find(c.name(gone) + ",") == std::string::npos);
  REQUIRE(wait_acked(w, w.acked + 100));
  w.join();
  // The removed member refuses clients with a clear error.
  const auto until2 = std::chrono::steady_clock::now() + 10s;
  std::string role;
  while (std::chrono::steady_clock::now() < until2) {
    auto s = c.status(gone);
    if (s && s->role == "removed") {
      role = s->role;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  CHECK(role == "removed");
  auto refused = keelctl(c.member(gone).socket(), {"put", "x", "y"});
  CHECK(refused.status == 1);
  CHECK(refused.err.find("removed") != std::string::npos);
  // The new voter holds the writes.
  auto cl = c.member(j).client();
  REQUIRE(cl);
  std::vector<std::string> missing;
  check_acked(*cl, w.acked_values, &missing);
  CHECK(missing.empty());
}

TEST_CASE("a member refuses a data dir of another cluster, naming it", "[integration][cluster]") {
  TempDir dir;
  KeelCluster c(dir.path, 1);
  REQUIRE(c.start(0));
  REQUIRE(c.member(0).terminate() == 0);
  c.running[0] = false;
  int rc = c.member(0).start_expect_exit(
      {"--name", "m0", "--initial-cluster", "m0=" + c.peer(0), "--initial-cluster-token", "other"});
  CHECK(rc == 1);
  CHECK(c.member(0).log().find("belongs to another cluster") != std::string::npos);
}
