#pragma once
// The watch hub: every watch open on this agent, fed by the apply hook (RevisionSignal: "the
// store reached revision R", published on the node thread) and reading history through its
// own storage::Reader on the KJ event-loop thread. It knows nothing of sockets or
// connections: the KV service registers watches with it, and a learner replica can run it
// with no socket server at all.
//
// Lifetime: held by std::shared_ptr; capabilities (watch handles) keep a counted reference.
// After close() it touches neither the store nor the event loop's tasks, so a handle that
// Cap'n Proto releases after the agent has shut down is harmless.
#include <capnp/keel.capnp.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agent/counts.hpp"
#include "cluster/model/kv_types.hpp"
#include "cluster/storage/mvcc_store.hpp"

namespace keel::agent {

// Carries "the store reached revision R" from the node thread to the KJ thread. publish() is
// called on the node thread; next() on the KJ thread. A publish with no waiter is kept (the
// latest revision), so no wake-up is lost.
class RevisionSignal {
 public:
  void publish(int64_t revision);
  // Resolves with the latest published revision once it is greater than `seen`.
  kj::Promise<int64_t> next(int64_t seen);

 private:
  std::mutex mu_;
  int64_t revision_ = 0;
  kj::Own<kj::CrossThreadPromiseFulfiller<int64_t>> waiter_;
};

struct WatchHubOptions {
  size_t max_watchers = 10000;             // agent-wide: checked against `counts`' total
  size_t batch_bytes = 256 * 1024;         // event bytes per message to one watcher
  uint64_t progress_interval_ms = 600000;  // 0 = no periodic progress
};

struct WatchSpec {
  std::string key;
  std::string range_end;
  int64_t start_revision = 0;  // 0 = changes after the current revision
  bool prev_kv = false;
  bool no_put = false;
  bool no_delete = false;
  bool progress_notify = false;
};

class WatchHub {
 public:
  // `counts` is shared by every server thread's hub (the limit and `status` are agent-wide).
  WatchHub(WatchHubOptions options, storage::MvccStore& store,
           std::shared_ptr<RevisionSignal> signal, kj::Timer& timer,
           std::shared_ptr<AgentCounts> counts);
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Starts following the signal (and the progress timer). KJ thread.
  void start();

  struct Added {
    int64_t id = 0;
    int64_t next_revision = 0;  // the first revision the watcher will get
  };
  // Errors: shutting_down, too_many_watchers, invalid_argument (negative start), compacted
  // (start at or below the compact revision).
  Result<Added> add(const WatchSpec& spec, rpc::Watcher::Client watcher);
  void remove(int64_t id);
  void request_progress(int64_t id);
  size_t size() const { return watches_.size(); }            // this hub's
  uint64_t total() const { return watcher_share_.total(); }  // the agent's

  // Cancels every watch with `reason` and refuses new ones.
  void cancel_all(const Error& reason);
  // Drops every watch and task and releases the reader; the hub never touches the store
  // again. Call before the engine closes.
  void close();

  struct Watch;

 private:
  void pump(const std::shared_ptr<Watch>& w);
  void pump_all();
  void send_events(const std::shared_ptr<Watch>& w, int64_t upto,
                   const std::vector<const storage::Event*>& events);
  void send_progress(const std::shared_ptr<Watch>& w);
  void cancel(const std::shared_ptr<Watch>& w, const Error& error);
  void drop(const std::shared_ptr<Watch>& w, const kj::Exception& e);
  kj::Promise<void> signal_loop(int64_t seen);
  kj::Promise<void> progress_loop();

  class ErrorHandler final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& e) override;
  };

  const WatchHubOptions options_;
  std::shared_ptr<AgentCounts> counts_;
  CountShare watcher_share_{counts_->watchers};  // kept equal to watches_.size()
  storage::MvccStore* store_;                    // null after close()
  std::unique_ptr<storage::Reader> reader_;      // this hub's read view (KJ thread)
  std::shared_ptr<RevisionSignal> signal_;
  kj::Timer& timer_;
  bool stopping_ = false;
  bool closed_ = false;
  // Declared before tasks_ so that sends in flight are destroyed while the map exists.
  std::map<int64_t, std::shared_ptr<Watch>> watches_;
  int64_t next_id_ = 1;
  kj::Promise<void> signal_task_ = nullptr;
  kj::Promise<void> progress_task_ = nullptr;
  ErrorHandler error_handler_;
  kj::Own<kj::TaskSet> tasks_;
};

}  // namespace keel::agent
