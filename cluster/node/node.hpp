#pragma once
// The node: the single writer of the replicated state. Proposals go propose -> commit ->
// apply, the shape Raft will keep: today the node is the only voter, so a command is
// committed once its log entry is durable (fsync'd) on this node; the Raft issue puts the
// consensus core between "appended" and "committed" without changing this interface.
//
// Threads: propose() and stats() may be called from any thread. One node thread owns the
// log and the store's write side; it appends every queued proposal as one batch (one fsync
// for all of them: group commit), applies the batch as one WiredTiger transaction, then
// calls the completions, in proposal order, on the node thread. Completions must be quick
// and must not call back into the node synchronously (hand the result to another thread).
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "cluster/storage/mvcc_store.hpp"

namespace keel::node {

struct NodeOptions {
  size_t max_batch_entries = 1024;           // proposals per log append / apply batch
  size_t max_batch_bytes = 8 * 1024 * 1024;  // encoded bytes per batch
  // Applied log entries kept before the log prefix is dropped (the store is the snapshot).
  uint64_t log_retain_entries = 10000;
};

struct NodeStats {
  uint64_t committed_index = 0;
  uint64_t applied_index = 0;
  uint64_t batches = 0;
  uint64_t proposals = 0;
};

using Completion = std::function<void(Result<storage::CommandResult>)>;

class Node {
 public:
  // Recovers before returning: re-applies every logged entry above the store's applied index
  // (entries that were durable but not applied when the process died). Errors: storage.
  static Result<std::unique_ptr<Node>> open(storage::Engine& engine, NodeOptions options);
  ~Node();  // stop()s

  // Starts the node thread. on_applied(revision) runs on the node thread after every applied
  // batch (watch hubs hook in here); it must not block.
  void start(std::function<void(int64_t revision)> on_applied);

  // Queues a validated command. `done` runs exactly once, on the node thread: with the
  // command's result, or shutting_down if the node stops first, or internal if the log
  // cannot be written or the store cannot apply (the node then refuses further writes until
  // restart; reads continue).
  void propose(storage::Command command, Completion done);

  // Finishes every proposal queued so far, then joins the node thread. Later proposals
  // complete with shutting_down. Idempotent.
  void stop();

  NodeStats stats() const;

 private:
  struct Proposal {
    storage::Command command;
    std::string encoded;
    Completion done;
  };
  Node(storage::Engine& engine, NodeOptions options);
  Status recover();
  void run();
  void process(std::vector<Proposal>& batch);

  storage::Engine& engine_;
  storage::LogStore& log_;
  storage::MvccStore& store_;
  const NodeOptions options_;
  std::function<void(int64_t)> on_applied_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Proposal> queue_;   // guarded by mu_
  size_t queued_bytes_ = 0;      // guarded by mu_
  bool stopping_ = false;        // guarded by mu_
  NodeStats stats_;              // guarded by mu_
  std::optional<Error> failed_;  // node thread only: set when the log could not be written
  std::thread thread_;
};

}  // namespace keel::node
