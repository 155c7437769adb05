// lag_probe: how long a committed write takes to reach learner agents. One watcher per learner
// (on its own agent's socket, prefix "lagprobe/"); a writer puts lagprobe/<n> through a voter
// every --interval-ms and notes when each put was acknowledged (the voter applied it: it is
// committed). A learner's lag for a write = when its watcher received the event - when the
// put was acknowledged. Prints one line: lag_p50_ms, lag_p99_ms, lag_max_ms, samples, missing.
//
//   lag_probe --voter SOCKET --learners SOCKET[,SOCKET...] [--seconds S] [--interval-ms MS]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using keel::client::Client;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::string voter;
  std::vector<std::string> learners;
  double seconds = 5;
  int interval_ms = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--voter")
      voter = argv[i + 1];
    else if (a == "--learners")
      learners = split(argv[i + 1]);
    else if (a == "--seconds")
      seconds = std::atof(argv[i + 1]);
    else if (a == "--interval-ms")
      interval_ms = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "lag_probe: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (voter.empty() || learners.empty()) {
    std::fprintf(stderr,
                 "usage: lag_probe --voter SOCKET --learners SOCKET,... [--seconds S] "
                 "[--interval-ms MS]\n");
    return 2;
  }
  auto writer = Client::connect(voter);
  if (!writer) {
    std::fprintf(stderr, "lag_probe: %s\n", writer.error().message.c_str());
    return 1;
  }
  // Start the watchers from the revision after now, and know they run before writing.
  keel::storage::PutRequest mark;
  mark.key = "lagprobe-start";
  mark.value = "x";
  auto start = (*writer)->put(mark);
  if (!start) {
    std::fprintf(stderr, "lag_probe: %s\n", start.error().message.c_str());
    return 1;
  }
  std::mutex mu;
  std::map<int64_t, Clock::time_point> acked;                               // revision -> ack time
  std::vector<std::map<int64_t, Clock::time_point>> seen(learners.size());  // per learner
  std::vector<std::string> errors(learners.size());
  std::atomic<size_t> done{0};  // watcher threads that have returned
  std::vector<std::thread> threads;
  for (size_t i = 0; i < learners.size(); ++i) {
    threads.emplace_back([&, i] {
      auto c = Client::connect(learners[i]);
      if (!c) {
        errors[i] = c.error().message;
        done++;
        return;
      }
      keel::client::WatchOptions wo;
      wo.key = "lagprobe/";
      wo.range_end = "lagprobe0";  // the prefix
      wo.start_revision = start->revision + 1;
      auto st = (*c)->watch(
          wo,
          [&](int64_t, const std::vector<keel::storage::Event>& events) {
            const auto now = Clock::now();
            for (const auto& e : events) {
              if (e.kv.key == "lagprobe/stop") return false;
              std::lock_guard lock(mu);
              seen[i][e.kv.mod_revision] = now;
            }
            return true;
          },
          nullptr);
      if (!st) errors[i] = st.error().message;
      done++;
    });
  }
  // Every watcher is live once it saw a first write (bounded: 10 s).
  keel::storage::PutRequest warm;
  warm.key = "lagprobe/warm";
  warm.value = "x";
  auto w = (*writer)->put(warm);
  const auto wait_until = Clock::now() + std::chrono::seconds(10);
  for (bool all = false; !all && w && Clock::now() < wait_until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::lock_guard lock(mu);
    all = true;
    for (const auto& s : seen)
      all = all && s.count(w->revision);
  }
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  for (int n = 0; Clock::now() < until; ++n) {
    keel::storage::PutRequest p;
    p.key = "lagprobe/" + std::to_string(n % 100);
    p.value = std::to_string(n);
    auto r = (*writer)->put(p);
    const auto now = Clock::now();
    if (r) {
      std::lock_guard lock(mu);
      acked[r->revision] = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last ones arrive
  keel::storage::PutRequest stop;
  stop.key = "lagprobe/stop";
  stop.value = "x";
  (void)(*writer)->put(stop);
  // Bounded: a learner that never sees the stop (stuck or cut off) is reported, not waited
  // for; its watcher thread is left behind and the process ends with _exit.
  const auto join_until = Clock::now() + std::chrono::seconds(15);
  while (done < threads.size() && Clock::now() < join_until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const bool all_done = done == threads.size();
  std::unique_lock lock(mu);  // stuck watchers may still write to `seen`
  if (all_done) {
    lock.unlock();
    for (auto& t : threads)
      t.join();
    lock.lock();
  } else {
    for (size_t i = 0; i < learners.size(); ++i)
      if (errors[i].empty()) errors[i] = "no stop event within 15 s (watch still open)";
  }
  std::vector<double> lags;
  size_t missing = 0;
  for (size_t i = 0; i < learners.size(); ++i) {
    for (const auto& [rev, at] : acked) {
      auto it = seen[i].find(rev);
      if (it == seen[i].end()) {
        missing++;
        continue;
      }
      // A learner can see a write before the voter's reply reaches the writer: lag 0 then.
      lags.push_back(
          std::max(0.0, std::chrono::duration<double, std::milli>(it->second - at).count()));
    }
    if (!errors[i].empty())
      std::fprintf(stderr, "lag_probe: learner %zu: %s\n", i, errors[i].c_str());
  }
  std::printf("lag_p50_ms=%.2f lag_p99_ms=%.2f lag_max_ms=%.2f samples=%zu missing=%zu\n",
              pct(lags, 0.5), pct(lags, 0.99), pct(lags, 1.0), lags.size(), missing);
  std::fflush(nullptr);
  if (!all_done) _exit(1);
  return missing == 0 ? 0 : 1;
}
