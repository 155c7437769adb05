// Committed entries per second through a 3-member in-memory cluster (no I/O): the core's own
// cost. Prints figures; asserts no timing. Usage: keel_raft_bench [entries] [batch]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "cluster/raft/driver.hpp"
#include "cluster/raft/raft.hpp"

using namespace keel::raft;

namespace {

struct Member {
  std::unique_ptr<MemoryStorage> storage;
  std::unique_ptr<RawNode> raft;
  uint64_t applied = 0;
};

// The bench's side of the shared Ready loop (raft::drive_ready): in-memory storage, a queue.
class Handler final : public ReadyHandler {
 public:
  Handler(Member& m, std::deque<Message>& queue) : m_(m), queue_(queue) {}
  bool persist(const Ready& rd) override {
    if (rd.snapshot) m_.storage->apply_snapshot(rd.snapshot);
    m_.storage->append(rd.entries);
    if (rd.hard_state) m_.storage->set_hard_state(*rd.hard_state);
    return true;
  }
  bool send(std::vector<Message>& messages) override {
    for (Message& msg : messages)
      queue_.push_back(std::move(msg));
    return true;
  }
  bool apply(const Ready& rd) override {
    if (!rd.committed_entries.empty()) m_.applied = rd.committed_entries.back().index;
    return true;
  }

 private:
  Member& m_;
  std::deque<Message>& queue_;
};

class Bench {
 public:
  Bench() {
    ConfState conf{{1, 2, 3}, {}};
    for (NodeId id = 1; id <= 3; ++id) {
      Member& m = members_[id - 1];
      m.storage = std::make_unique<MemoryStorage>(conf);
      Config c;
      c.id = id;
      c.storage = m.storage.get();
      c.seed = id;
      c.max_uncommitted_entries_size = 0;
      c.max_size_per_msg = 4 << 20;
      c.max_committed_size_per_ready = 64 << 20;
      m.raft = std::make_unique<RawNode>(c);
    }
    members_[0].raft->campaign();
    pump();
  }

  // Drives every member's Ready loop and delivers messages until quiet.
  void pump() {
    for (;;) {
      bool any = false;
      for (auto& m : members_) {
        Handler handler(m, queue_);
        while (m.raft->has_ready()) {
          any = true;
          drive_ready(*m.raft, handler);
        }
      }
      while (!queue_.empty()) {
        any = true;
        Message msg = std::move(queue_.front());
        queue_.pop_front();
        members_[msg.to - 1].raft->step(std::move(msg));
      }
      if (!any) break;
    }
  }

  // Proposes `total` entries `batch` at a time, pumping between batches; returns entries/s.
  double run(uint64_t total, uint64_t batch, uint64_t payload_bytes) {
    RawNode& leader = *members_[0].raft;
    const std::string data(payload_bytes, 'x');
    const uint64_t start_index = leader.last_index();
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t done = 0; done < total;) {
      for (uint64_t i = 0; i < batch && done < total; ++i, ++done) {
        if (!leader.propose(data).ok()) std::abort();
      }
      pump();
    }
    const auto t1 = std::chrono::steady_clock::now();
    for (auto& m : members_) {
      if (m.applied < start_index + total) std::abort();  // every entry applied everywhere
    }
    // Keep memory flat: compact everything applied.
    for (auto& m : members_) {
      m.storage->create_snapshot(m.applied, ConfState{{1, 2, 3}, {}}, "", m.applied);
    }
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    return static_cast<double>(total) / secs;
  }

 private:
  Member members_[3];
  std::deque<Message> queue_;
};

}  // namespace

int main(int argc, char** argv) {
  const uint64_t total = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2000000;
  const uint64_t payload = 16;
  std::printf("3-member in-memory cluster, %llu entries of %llu bytes, no I/O\n",
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(payload));
  for (uint64_t batch :
       {uint64_t{1}, uint64_t{10}, uint64_t{100}, uint64_t{1000}, uint64_t{10000}}) {
    Bench b;
    const uint64_t n = batch == 1 ? total / 10 : total;
    const double rate = b.run(n, batch, payload);
    std::printf("batch %6llu: %12.0f committed entries/s%s\n",
                static_cast<unsigned long long>(batch), rate,
                batch == 1 ? "  (unbatched: one proposal per Ready round trip)" : "");
  }
  return 0;
}
