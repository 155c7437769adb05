#include "agent/watch_hub.hpp"

#include <spdlog/spdlog.h>

#include <vector>

#include "agent/convert.hpp"

namespace keel::agent {

void RevisionSignal::publish(int64_t revision) {
  kj::Own<kj::CrossThreadPromiseFulfiller<int64_t>> waiter;
  {
    std::lock_guard lock(mu_);
    revision_ = revision;
    waiter = kj::mv(waiter_);
  }
  if (waiter.get() != nullptr) waiter->fulfill(kj::cp(revision));
}

kj::Promise<int64_t> RevisionSignal::next(int64_t seen) {
  std::lock_guard lock(mu_);
  if (revision_ > seen) return revision_;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<int64_t>();
  waiter_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

struct WatchHub::Watch {
  int64_t id = 0;
  WatchSpec spec;
  rpc::Watcher::Client client;
  int64_t next_revision = 0;  // first revision not yet delivered
  bool busy = false;          // a send is in flight (flow control)
  bool progress_wanted = false;
  bool dead = false;
  explicit Watch(rpc::Watcher::Client c) : client(kj::mv(c)) {}
};

void WatchHub::ErrorHandler::taskFailed(kj::Exception&& e) {
  if (e.getType() == kj::Exception::Type::DISCONNECTED) {
    spdlog::debug("watch task ended: {}", e.getDescription().cStr());
  } else {
    spdlog::warn("watch task failed: {}", e.getDescription().cStr());
  }
}

WatchHub::WatchHub(WatchHubOptions options, storage::MvccStore& store,
                   std::shared_ptr<RevisionSignal> signal, kj::Timer& timer,
                   std::shared_ptr<AgentCounts> counts)
    : options_(options),
      counts_(std::move(counts)),
      store_(&store),
      reader_(store.reader()),
      signal_(std::move(signal)),
      timer_(timer),
      tasks_(kj::heap<kj::TaskSet>(error_handler_)) {}

WatchHub::~WatchHub() {
  close();
}

void WatchHub::start() {
  if (closed_) return;
  signal_task_ = signal_loop(store_->current_revision()).eagerlyEvaluate(nullptr);
  if (options_.progress_interval_ms > 0) {
    progress_task_ = progress_loop().eagerlyEvaluate(nullptr);
  }
}

Result<WatchHub::Added> WatchHub::add(const WatchSpec& spec, rpc::Watcher::Client watcher) {
  if (stopping_ || closed_) {
    return make_error(ErrorCode::shutting_down, "the agent is shutting down");
  }
  if (watcher_share_.total() >= options_.max_watchers) {
    return make_error(ErrorCode::too_many_watchers,
                      "the agent has " + std::to_string(watcher_share_.total()) +
                          " watchers; limit is " + std::to_string(options_.max_watchers) +
                          " (limits.max_watchers)");
  }
  int64_t start = spec.start_revision;
  if (start < 0) {
    return make_error(ErrorCode::invalid_argument, "startRevision must not be negative");
  }
  int64_t compact = store_->compact_revision();
  if (start != 0 && start < compact) {
    Error e = make_error(ErrorCode::compacted, "required revision " + std::to_string(start) +
                                                   " has been compacted; oldest available is " +
                                                   std::to_string(compact));
    e.compact_revision = compact;
    return e;
  }
  auto w = std::make_shared<Watch>(kj::mv(watcher));
  w->id = next_id_++;
  w->spec = spec;
  w->next_revision = start != 0 ? start : store_->current_revision() + 1;
  watches_.emplace(w->id, w);
  watcher_share_.set(watches_.size());
  tasks_->add(kj::evalLater([this, w] { pump(w); }));
  return Added{w->id, w->next_revision};
}

void WatchHub::remove(int64_t id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  it->second->dead = true;
  watches_.erase(it);
  watcher_share_.set(watches_.size());
}

void WatchHub::request_progress(int64_t id) {
  auto it = watches_.find(id);
  if (it == watches_.end() || closed_) return;
  auto w = it->second;
  w->progress_wanted = true;
  pump(w);
}

void WatchHub::send_progress(const std::shared_ptr<Watch>& w) {
  w->progress_wanted = false;
  auto req = w->client.progressRequest();
  req.initHeader().setRevision(w->next_revision - 1);
  w->busy = true;
  tasks_->add(req.send().then(
      [this, w]() {
        w->busy = false;
        pump(w);
      },
      [this, w](kj::Exception&& e) { drop(w, e); }));
}

void WatchHub::drop(const std::shared_ptr<Watch>& w, const kj::Exception& e) {
  spdlog::debug("watch {} dropped: {}", w->id, e.getDescription().cStr());
  remove(w->id);
}

void WatchHub::cancel(const std::shared_ptr<Watch>& w, const Error& error) {
  auto req = w->client.canceledRequest();
  to_rpc(error, req.initError());
  tasks_->add(req.send().ignoreResult().catch_([](kj::Exception&&) {}));
  remove(w->id);
}

// Delivers what `w` has not seen, one batch at a time: the next batch is read from the store
// only after the previous send was accepted by the stream's flow control, so a slow watcher
// costs one batch of memory, never a backlog.
void WatchHub::pump(const std::shared_ptr<Watch>& w) {
  while (!closed_ && !w->dead && !w->busy) {
    int64_t current = store_->current_revision();
    if (w->next_revision > current) {
      if (w->progress_wanted) send_progress(w);
      return;
    }
    const WatchSpec& s = w->spec;
    std::vector<storage::Event> events;
    auto upto =
        reader_->events(w->next_revision, current, s.key, s.range_end, s.prev_kv,
                        options_.batch_bytes, [&](const storage::Event& e) {
                          if (e.type == storage::EventType::put ? !s.no_put : !s.no_delete) {
                            events.push_back(e);
                          }
                          return true;
                        });
    if (!upto) {
      cancel(w, upto.error());
      return;
    }
    KEEL_ASSERT(*upto >= w->next_revision - 1, "events() went backwards");
    if (*upto < w->next_revision) return;  // nothing visible yet
    w->next_revision = *upto + 1;
    if (events.empty()) continue;
    std::vector<const storage::Event*> refs;
    refs.reserve(events.size());
    for (const auto& e : events)
      refs.push_back(&e);
    send_events(w, *upto, refs);
  }
}

namespace {
bool in_range(const WatchSpec& w, const std::string& key) {
  if (w.range_end.empty()) return key == w.key;
  if (key < w.key) return false;
  return w.range_end == std::string(1, '\0') || key < w.range_end;
}
}  // namespace

void WatchHub::send_events(const std::shared_ptr<Watch>& w, int64_t upto,
                           const std::vector<const storage::Event*>& events) {
  auto req = w->client.eventsRequest();
  req.initHeader().setRevision(upto);
  auto list = req.initEvents(events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const storage::Event& e = *events[i];
    list[i].setType(e.type == storage::EventType::del ? rpc::EventType::DELETE
                                                      : rpc::EventType::PUT);
    to_rpc(e.kv, list[i].initKv());
    // A shared read fetches prev_kv when any watcher of the group wants it.
    if (w->spec.prev_kv && e.prev_kv) to_rpc(*e.prev_kv, list[i].initPrevKv());
  }
  w->busy = true;
  tasks_->add(req.send().then(
      [this, w]() {
        w->busy = false;
        pump(w);
      },
      [this, w](kj::Exception&& e) { drop(w, e); }));
}

// Watchers idle at the same next revision (the usual case: all caught up) share one read of
// the new history, filtered per watcher here, instead of one store scan each.
void WatchHub::pump_all() {
  if (closed_) return;
  int64_t current = store_->current_revision();
  std::map<int64_t, std::vector<std::shared_ptr<Watch>>> idle_at;
  std::vector<std::shared_ptr<Watch>> caught_up;  // may owe a progress notification
  for (auto& [id, w] : watches_) {
    if (w->busy || w->dead) continue;
    if (w->next_revision <= current) {
      idle_at[w->next_revision].push_back(w);
    } else if (w->progress_wanted) {
      caught_up.push_back(w);
    }
  }
  for (auto& w : caught_up)
    pump(w);
  for (auto& [from, group] : idle_at) {
    if (group.size() == 1) {
      pump(group[0]);
      continue;
    }
    bool want_prev = false;
    for (auto& w : group)
      want_prev = want_prev || w->spec.prev_kv;
    std::vector<storage::Event> events;
    const std::string all(1, '\0');
    auto upto = reader_->events(from, current, all, all, want_prev, options_.batch_bytes,
                                [&](const storage::Event& e) {
                                  events.push_back(e);
                                  return true;
                                });
    if (!upto) {
      for (auto& w : group)
        cancel(w, upto.error());
      continue;
    }
    for (auto& w : group) {
      if (w->dead || w->busy || w->next_revision != from) continue;
      std::vector<const storage::Event*> mine;
      for (const auto& e : events) {
        bool wanted = e.type == storage::EventType::put ? !w->spec.no_put : !w->spec.no_delete;
        if (wanted && in_range(w->spec, e.kv.key)) mine.push_back(&e);
      }
      w->next_revision = *upto + 1;
      if (!mine.empty()) {
        send_events(w, *upto, mine);
      } else {
        pump(w);  // the shared read stopped at batch_bytes, or a progress is wanted
      }
    }
  }
}

kj::Promise<void> WatchHub::signal_loop(int64_t seen) {
  return signal_->next(seen).then([this](int64_t revision) {
    pump_all();
    return signal_loop(revision);
  });
}

kj::Promise<void> WatchHub::progress_loop() {
  return timer_.afterDelay(options_.progress_interval_ms * kj::MILLISECONDS).then([this] {
    for (auto& [id, w] : watches_) {
      if (w->spec.progress_notify) w->progress_wanted = true;
    }
    pump_all();
    return progress_loop();
  });
}

void WatchHub::cancel_all(const Error& reason) {
  stopping_ = true;
  progress_task_ = nullptr;
  std::vector<std::shared_ptr<Watch>> all;
  for (auto& [id, w] : watches_)
    all.push_back(w);
  for (auto& w : all)
    cancel(w, reason);
}

void WatchHub::close() {
  if (closed_) return;
  closed_ = true;
  stopping_ = true;
  signal_task_ = nullptr;
  progress_task_ = nullptr;
  for (auto& [id, w] : watches_)
    w->dead = true;
  watches_.clear();
  watcher_share_.set(0);
  tasks_ = nullptr;
  reader_.reset();
  store_ = nullptr;
}

}  // namespace keel::agent
