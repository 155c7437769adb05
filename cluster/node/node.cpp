#include "cluster/node/node.hpp"

#include <utility>

namespace keel::node {

namespace {
constexpr uint64_t kTerm = 1;  // single voter: one term until Raft arrives
}

Node::Node(storage::Engine& engine, NodeOptions options)
    : engine_(engine), log_(engine.log()), store_(engine.store()), options_(options) {}

Result<std::unique_ptr<Node>> Node::open(storage::Engine& engine, NodeOptions options) {
  std::unique_ptr<Node> node(new Node(engine, options));
  if (auto st = node->recover(); !st) return std::move(st).error();
  return node;
}

Node::~Node() {
  stop();
}

Status Node::recover() {
  // Everything in the log is committed (this node is the only voter), so entries above the
  // applied index are re-applied in order. Applying is deterministic, so a client whose
  // write was durable but unacknowledged sees it applied exactly once.
  uint64_t next = store_.applied_index() + 1;
  if (next < log_.first_index()) next = log_.first_index();
  const uint64_t last = log_.last_index();
  while (next <= last) {
    auto entries = log_.entries(next, last + 1, options_.max_batch_bytes);
    if (!entries) return std::move(entries).error();
    KEEL_ASSERT(!entries->empty(), "log read returned nothing inside [first, last]");
    std::vector<storage::Command> commands;
    commands.reserve(entries->size());
    for (const auto& e : *entries) {
      auto cmd = storage::decode_command(e.data);
      if (!cmd) {
        return make_error(ErrorCode::internal, "log entry " + std::to_string(e.index) +
                                                   " does not decode: " + cmd.error().message);
      }
      commands.push_back(std::move(cmd).value());
    }
    std::vector<std::pair<uint64_t, const storage::Command*>> batch;
    for (size_t i = 0; i < commands.size(); ++i)
      batch.emplace_back((*entries)[i].index, &commands[i]);
    store_.apply(batch);  // per-command errors were returned to clients already, or never
    next = entries->back().index + 1;
  }
  std::lock_guard lock(mu_);
  stats_.committed_index = last;
  stats_.applied_index = store_.applied_index();
  return ok_status();
}

void Node::start(std::function<void(int64_t)> on_applied) {
  KEEL_ASSERT(!thread_.joinable(), "Node::start called twice");
  on_applied_ = std::move(on_applied);
  thread_ = std::thread([this] { run(); });
}

void Node::propose(storage::Command command, Completion done) {
  std::string encoded = storage::encode_command(command);
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queued_bytes_ += encoded.size();
      queue_.push_back(Proposal{std::move(command), std::move(encoded), std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(make_error(ErrorCode::shutting_down, "the agent is shutting down"));
}

void Node::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  // Without a thread (never started), queued proposals still get their answer.
  std::deque<Proposal> rest;
  {
    std::lock_guard lock(mu_);
    rest.swap(queue_);
  }
  for (auto& p : rest)
    p.done(make_error(ErrorCode::shutting_down, "the agent is shutting down"));
}

NodeStats Node::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Node::run() {
  std::vector<Proposal> batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued before stop() is done
      size_t bytes = 0;
      while (!queue_.empty() && batch.size() < options_.max_batch_entries &&
             (batch.empty() || bytes + queue_.front().encoded.size() <= options_.max_batch_bytes)) {
        bytes += queue_.front().encoded.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queued_bytes_ -= bytes;
    }
    process(batch);
    batch.clear();
  }
}

void Node::process(std::vector<Proposal>& batch) {
  if (failed_) {
    for (auto& p : batch)
      p.done(*failed_);
    return;
  }
  // Commit: the batch is durable in the log with one fsync.
  std::vector<storage::LogEntry> entries;
  entries.reserve(batch.size());
  uint64_t index = log_.last_index();
  for (auto& p : batch)
    entries.push_back(storage::LogEntry{++index, kTerm, std::move(p.encoded)});
  if (auto st = log_.append(entries); !st) {
    failed_ = make_error(
        ErrorCode::internal,
        "the log could not be written; writes are refused until restart: " + st.error().message);
    for (auto& p : batch)
      p.done(*failed_);
    return;
  }
  // Apply: one WiredTiger transaction for the batch, not synced (re-derivable from the log).
  std::vector<std::pair<uint64_t, const storage::Command*>> apply;
  apply.reserve(batch.size());
  for (size_t i = 0; i < batch.size(); ++i)
    apply.emplace_back(entries[i].index, &batch[i].command);
  auto results = store_.apply(apply);
  KEEL_ASSERT(results.size() == batch.size(), "apply returned a result per command");
  // `internal` is the store failing, never a command's own outcome. The entries are
  // committed in the log but not applied; applying later batches on top would skip them, so
  // refuse writes from here on: a restart re-applies the log from the applied index.
  for (const auto& r : results) {
    if (!r.ok() && r.error().code == ErrorCode::internal) {
      failed_ = make_error(ErrorCode::internal,
                           "the store could not apply committed writes (" + r.error().message +
                               "); writes are refused until restart, which applies them");
      for (auto& p : batch) {
        p.done(make_error(ErrorCode::internal,
                          "outcome unknown: the write is logged and will be applied at restart; " +
                              r.error().message));
      }
      return;
    }
  }
  {
    std::lock_guard lock(mu_);
    stats_.committed_index = index;
    stats_.applied_index = index;
    stats_.batches++;
    stats_.proposals += batch.size();
  }
  for (size_t i = 0; i < batch.size(); ++i)
    batch[i].done(std::move(results[i]));
  if (on_applied_) on_applied_(store_.current_revision());
  if (index > log_.first_index() + 2 * options_.log_retain_entries) {
    // Dropping the prefix is not synced: losing it only means replaying applied entries,
    // which the applied index makes a no-op.
    (void)log_.compact_prefix(index - options_.log_retain_entries);
  }
}

}  // namespace keel::node
