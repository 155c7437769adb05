#pragma once
// The KV service: the handlers of the Keel interface (range, put, deleteRange, txn, compact,
// watch, status) on the KJ event-loop thread. Reads are served from the service's own
// WiredTiger read view; writes go to the node thread (Node::propose) and come back through a
// cross-thread promise fulfiller; watches are registered with the watch hub.
//
// Lifetime: held by std::shared_ptr. Every capability it hands out (one bootstrap per
// connection) holds a counted reference, never a raw one, and after close() every call is
// answered with shutting_down without touching the engine or the node, so a call that Cap'n
// Proto keeps alive past shutdown can never reach freed memory.
#include <capnp/capability.h>
#include <kj/async.h>

#include <kj/timer.h>
#include <cstdint>
#include <functional>
#include <memory>

#include <vector>

#include "agent/config.hpp"
#include "agent/counts.hpp"
#include "agent/peer.hpp"
#include "agent/watch_hub.hpp"
#include "cluster/node/node.hpp"

namespace keel::agent {

class PrimService;

class KvService : public std::enable_shared_from_this<KvService> {
 public:
  // `counts`: the agent-wide counts `status` reports (shared by every server thread).
  KvService(const Config& config, storage::Engine& engine, node::Node& node,
            std::shared_ptr<WatchHub> hub, kj::Timer& timer, std::shared_ptr<AgentCounts> counts);
  ~KvService();
  KvService(const KvService&) = delete;
  KvService& operator=(const KvService&) = delete;

  // The bootstrap capability of one connection from `peer`.
  capnp::Capability::Client connect(const Peer& peer);

  // Which server thread this service runs on, of how many (reported by `status`).
  struct ThreadSlot {
    uint32_t index = 0;
    uint32_t count = 1;
  };
  void set_thread(ThreadSlot slot) { thread_ = slot; }

  // Leases and locks (the Keel methods for them are served there).
  void set_primitives(std::shared_ptr<PrimService> prim) { prim_ = std::move(prim); }

  // Answers every `compact --physical` still waiting for the compactor with shutting_down
  // (the compaction is recorded; physical deletion resumes at the next start).
  void stop_waiting_for_compaction();

  // Resolves once every call counted so far has replied.
  kj::Promise<void> drained();

  // Every later call gets shutting_down; the engine and node are never touched again. Call
  // before they are destroyed.
  void close();

  struct Calls;  // in-flight bookkeeping (kv_service.cpp)

 private:
  friend class KeelImpl;

  const Config config_;
  const storage::Limits limits_;
  storage::Engine* engine_;                  // null after close()
  node::Node* node_;                         // null after close()
  std::unique_ptr<storage::Reader> reader_;  // this thread's read view
  std::shared_ptr<WatchHub> hub_;
  std::shared_ptr<PrimService> prim_;
  std::shared_ptr<AgentCounts> counts_;
  ThreadSlot thread_;
  std::shared_ptr<Calls> calls_;
  // `compact --physical` calls waiting for the compactor: polled on the event loop (no
  // thread per call), failed by stop_waiting_for_compaction().
  kj::Promise<bool> wait_compaction();  // false: shutting down first
  kj::Promise<void> poll_compaction();
  kj::Timer& timer_;
  std::vector<kj::Own<kj::PromiseFulfiller<bool>>> compaction_waiters_;  // true = done
  kj::Promise<void> compaction_poll_ = nullptr;
  bool compaction_waits_stopped_ = false;
};

}  // namespace keel::agent
