#pragma once
// Shared fixtures for the storage tests: a temp data directory that is removed afterwards,
// and one-line wrappers around apply() and Reader.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <string>

#include "cluster/storage/mvcc_store.hpp"

namespace keel::storage::test {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/keel-storage-test-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline EngineOptions test_options(const std::string& dir) {
  EngineOptions o;
  o.dir = dir;
  o.cache_size_mb = 32;
  o.log_file_max_mb = 1;
  return o;
}

struct Store {
  TempDir dir;
  EngineOptions options = test_options(dir.path);
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Reader> rd;
  uint64_t index = 0;

  Store() { open(); }
  explicit Store(EngineOptions o) : options(std::move(o)) {
    options.dir = dir.path;
    open();
  }
  void open() {
    auto e = open_engine(options);
    if (!e) FAIL(e.error().message);
    engine = std::move(e).value();
    rd = engine->store().reader();
    index = engine->store().applied_index();
  }
  void close() {
    rd.reset();
    engine.reset();
  }
  void reopen() {
    close();
    open();
  }
  MvccStore& store() { return engine->store(); }
  int64_t rev() { return store().current_revision(); }

  Result<CommandResult> apply(const Command& c) {
    auto r = store().apply({{++index, &c}});
    REQUIRE(r.size() == 1);
    return std::move(r[0]);
  }
  PutResponse put(const std::string& key, const std::string& value, int64_t lease = 0) {
    auto r = apply(PutRequest{key, value, lease, false, false, false});
    if (!r) FAIL(r.error().message);
    return std::get<PutResponse>(r.value());
  }
  DeleteRangeResponse del(const std::string& key, const std::string& end = "",
                          bool prev_kv = false) {
    auto r = apply(DeleteRangeRequest{key, end, prev_kv});
    if (!r) FAIL(r.error().message);
    return std::get<DeleteRangeResponse>(r.value());
  }
  TxnResponse txn(const TxnRequest& t) {
    auto r = apply(t);
    if (!r) FAIL(r.error().message);
    return std::get<TxnResponse>(r.value());
  }
  Result<RangeResponse> try_range(const RangeRequest& req, size_t max_bytes = 1 << 30) {
    return rd->range(req, max_bytes);
  }
  RangeResponse range(const RangeRequest& req, size_t max_bytes = 1 << 30) {
    auto r = rd->range(req, max_bytes);
    if (!r) FAIL(r.error().message);
    return std::move(r).value();
  }
  RangeResponse range(const std::string& key, const std::string& end = "", int64_t rev = 0) {
    RangeRequest req;
    req.key = key;
    req.range_end = end;
    req.revision = rev;
    return range(req);
  }
  // The live value of key at rev, or "<none>".
  std::string get(const std::string& key, int64_t rev = 0) {
    auto r = range(key, "", rev);
    return r.kvs.empty() ? "<none>" : r.kvs[0].value;
  }
};

// Crash tests: runs child(ack) in a forked process (it must loop until killed; ack(v) tells
// the parent that v is durable, and is false once the parent is gone), waits until `wanted`
// acks arrived, waits `delay_us` more, kills the child with SIGKILL and returns the last
// acknowledged value (acks racing the kill included). Catch2 runs only in the parent.
template <typename Child>
uint64_t kill9_after(Child child, int wanted, useconds_t delay_us = 0) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    child([&](uint64_t v) { return ::write(fds[1], &v, sizeof v) == sizeof v; });
    ::_exit(0);
  }
  ::close(fds[1]);
  uint64_t acked = 0, got = 0;
  int n = 0;
  while (n < wanted && ::read(fds[0], &got, sizeof got) == sizeof got) {
    acked = got;
    n++;
  }
  REQUIRE(n == wanted);  // else the child failed early
  if (delay_us > 0) ::usleep(delay_us);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  while (::read(fds[0], &got, sizeof got) == sizeof got)
    acked = got;
  ::close(fds[0]);
  return acked;
}

inline RangeRequest all_keys(int64_t rev = 0) {
  RangeRequest r;
  r.key = std::string(1, '\0');
  r.range_end = std::string(1, '\0');
  r.revision = rev;
  return r;
}

inline PutRequest put_req(std::string key, std::string value, int64_t lease = 0) {
  PutRequest p;
  p.key = std::move(key);
  p.value = std::move(value);
  p.lease = lease;
  return p;
}

}  // namespace keel::storage::test

#include <map>
#include <random>
#include <vector>

namespace keel::storage::test {

// A reference model: the full key space at every revision, driven by the same commands.
struct Model {
  std::vector<std::map<std::string, KeyValue>> at{{}, {}};  // at[rev]; the store starts at 1
  int64_t rev() const { return static_cast<int64_t>(at.size()) - 1; }
  const std::map<std::string, KeyValue>& now() const { return at.back(); }

  // Applies puts and single-key deletes as one revision (if anything changes).
  void write(const std::vector<std::pair<std::string, std::string>>& puts,
             const std::vector<std::string>& deletes, int64_t lease = 0) {
    auto next = at.back();
    int64_t r = rev() + 1;
    bool changed = !puts.empty();
    for (const auto& [k, v] : puts) {
      KeyValue kv;
      auto it = next.find(k);
      kv.key = k;
      kv.value = v;
      kv.create_revision = it == next.end() ? r : it->second.create_revision;
      kv.version = it == next.end() ? 1 : it->second.version + 1;
      kv.mod_revision = r;
      kv.lease = lease;
      next[k] = kv;
    }
    for (const auto& k : deletes)
      changed |= next.erase(k) > 0;
    if (changed) at.push_back(std::move(next));
  }

  std::vector<KeyValue> kvs_at(int64_t r) const {
    std::vector<KeyValue> out;
    for (const auto& [k, kv] : at[static_cast<size_t>(r)])
      out.push_back(kv);
    return out;
  }
};

// Drives store and model with a fixed-seed random workload over a few keys.
inline void random_workload(Store& s, Model& m, int ops, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto key = [&](uint64_t i) {
    char b[8];
    std::snprintf(b, sizeof b, "k%02d", static_cast<int>(i % 12));
    return std::string(b);
  };
  for (int i = 0; i < ops; i++) {
    uint64_t dice = rng() % 10;
    if (dice < 6) {
      std::string k = key(rng()), v = "v" + std::to_string(rng() % 1000);
      s.put(k, v);
      m.write({{k, v}}, {});
    } else if (dice < 8) {
      std::string k = key(rng());
      s.del(k);
      m.write({}, {k});
    } else if (dice < 9) {
      s.del("k03", "k07");
      m.write({}, {"k03", "k04", "k05", "k06"});
    } else {
      uint64_t a = rng() % 12, b = (a + 1 + rng() % 5) % 12, c = (a + 6 + rng() % 5) % 12;
      TxnRequest t;
      t.success.push_back(put_req(key(a), "ta"));
      t.success.push_back(put_req(key(b), "tb"));
      t.success.push_back(DeleteRangeRequest{key(c), "", false});
      s.txn(t);
      m.write({{key(a), "ta"}, {key(b), "tb"}}, {key(c)});
    }
    REQUIRE(s.rev() == m.rev());
  }
}

// Every revision in [from, rev] reads exactly as the model, by full range and point reads.
inline void check_all_revisions(Store& s, const Model& m, int64_t from) {
  for (int64_t r = from; r <= m.rev(); r++) {
    INFO("revision " << r);
    auto resp = s.range(all_keys(r));
    CHECK(resp.kvs == m.kvs_at(r));
    CHECK(resp.count == static_cast<int64_t>(m.at[static_cast<size_t>(r)].size()));
    CHECK(resp.revision == r);
    for (const auto& [k, kv] : m.at[static_cast<size_t>(r)]) {
      auto p = s.range(k, "", r);
      REQUIRE(p.kvs.size() == 1);
      CHECK(p.kvs[0] == kv);
    }
  }
}

}  // namespace keel::storage::test

namespace keel::storage::test {
inline std::string prefix_end_str(const std::string& p) {
  return prefix_end(p);
}
}  // namespace keel::storage::test
