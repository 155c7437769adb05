// A plain driver for fuzz_request.cpp, built with any compiler and run by ctest: replays the
// seed corpus, then a bounded number of deterministic inputs (fixed-seed PRNG): structured
// requests with random fields, mutations of the corpus and of those requests, encoded
// commands with mutations, and random bytes. libFuzzer (run-libfuzzer.sh) explores further.
//
//   fuzz_request_replay [--iterations N] [--seed S] [PATH...]   PATH: corpus dir or file
//   fuzz_request_replay --write-corpus DIR                      writes the seed corpus
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/convert.hpp"
#include "replay_util.hpp"

extern uint64_t fuzz_request_valid_commands;

namespace {

namespace rpc = keel::rpc;
using keel::fuzz::Bytes;
using keel::fuzz::mutate;
using keel::fuzz::Rng;
using keel::fuzz::run;

std::string random_key(Rng& rng) {
  static const char alphabet[] = {'a', 'b', 'c', 'k', '/', '\0', '\xff', 'z'};
  size_t n = rng.chance(16) ? 0 : rng.chance(16) ? 17 + rng.below(8) : 1 + rng.below(6);
  std::string s;
  for (size_t i = 0; i < n; i++)
    s.push_back(alphabet[rng.below(sizeof(alphabet))]);
  return s;
}

std::string random_range_end(Rng& rng, const std::string& key) {
  switch (rng.below(5)) {
    case 0:
      return std::string(1, '\0');
    case 1:
      return key.empty() ? std::string() : keel::storage::prefix_end(key);
    case 2:
      return random_key(rng);
    default:
      return {};
  }
}

int64_t random_number(Rng& rng) {
  switch (rng.below(6)) {
    case 0:
      return 0;
    case 1:
      return -1 - static_cast<int64_t>(rng.below(3));
    case 2:
      return INT64_MAX - static_cast<int64_t>(rng.below(2));
    case 3:
      return INT64_MIN;
    default:
      return static_cast<int64_t>(rng.below(1000));
  }
}

capnp::Data::Reader blob(const std::string& s) {
  return keel::agent::as_data(s);
}

void random_range(Rng& rng, rpc::RangeRequest::Builder b) {
  std::string key = random_key(rng);
  b.setKey(blob(key));
  b.setRangeEnd(blob(random_range_end(rng, key)));
  b.setRevision(random_number(rng));
  b.setLimit(random_number(rng));
  b.setSortOrder(static_cast<rpc::SortOrder>(rng.below(rng.chance(8) ? 65536 : 3)));
  b.setSortTarget(static_cast<rpc::SortTarget>(rng.below(rng.chance(8) ? 65536 : 5)));
  b.setKeysOnly(rng.chance(2));
  b.setCountOnly(rng.chance(4));
  b.setMinModRevision(random_number(rng));
  b.setMaxModRevision(random_number(rng));
  b.setMinCreateRevision(random_number(rng));
  b.setMaxCreateRevision(random_number(rng));
  b.setSerializable(rng.chance(2));
  b.setSkipCount(rng.chance(4));
}

void random_put(Rng& rng, rpc::PutRequest::Builder b) {
  b.setKey(blob(random_key(rng)));
  std::string value(rng.chance(8) ? 40 + rng.below(40) : rng.below(12), 'v');
  if (!rng.chance(4)) b.setValue(blob(value));
  b.setLease(rng.chance(2) ? 0 : random_number(rng));
  b.setPrevKv(rng.chance(2));
  b.setIgnoreValue(rng.chance(6));
  b.setIgnoreLease(rng.chance(6));
}

void random_delete(Rng& rng, rpc::DeleteRangeRequest::Builder b) {
  std::string key = random_key(rng);
  b.setKey(blob(key));
  b.setRangeEnd(blob(random_range_end(rng, key)));
  b.setPrevKv(rng.chance(2));
}

void random_ops(Rng& rng, capnp::List<rpc::RequestOp>::Builder ops) {
  for (auto op : ops) {
    switch (rng.below(3)) {
      case 0:
        random_range(rng, op.initRange());
        break;
      case 1:
        random_put(rng, op.initPut());
        break;
      default:
        random_delete(rng, op.initDeleteRange());
        break;
    }
  }
}

void random_txn(Rng& rng, rpc::TxnRequest::Builder b) {
  auto compares = b.initCompare(static_cast<unsigned>(rng.below(5)));
  for (auto c : compares) {
    c.setResult(static_cast<rpc::CompareResult>(rng.below(rng.chance(8) ? 65536 : 4)));
    c.setTarget(static_cast<rpc::CompareTarget>(rng.below(rng.chance(8) ? 65536 : 5)));
    std::string key = random_key(rng);
    c.setKey(blob(key));
    c.setRangeEnd(blob(random_range_end(rng, key)));
    c.setNumber(random_number(rng));
    if (rng.chance(2)) c.setValue(blob(random_key(rng)));
  }
  random_ops(rng, b.initSuccess(static_cast<unsigned>(rng.below(6))));
  random_ops(rng, b.initFailure(static_cast<unsigned>(rng.below(4))));
}

Bytes serialize(uint8_t selector, capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  Bytes out(1 + bytes.size());
  out[0] = selector;
  std::memcpy(out.data() + 1, bytes.begin(), bytes.size());
  return out;
}

Bytes structured(Rng& rng) {
  uint8_t selector = static_cast<uint8_t>(rng.below(8));
  capnp::MallocMessageBuilder message;
  switch (selector & 3) {
    case 0:
      random_txn(rng, message.initRoot<rpc::TxnRequest>());
      break;
    case 1:
      random_range(rng, message.initRoot<rpc::RangeRequest>());
      break;
    case 2:
      random_put(rng, message.initRoot<rpc::PutRequest>());
      break;
    default:
      random_delete(rng, message.initRoot<rpc::DeleteRangeRequest>());
      break;
  }
  return serialize(selector, message);
}

// A storage-encoded command (the log payload), for the raw decode_command path.
Bytes encoded_command(Rng& rng) {
  capnp::MallocMessageBuilder message;
  keel::storage::Command command = keel::storage::CompactRequest{random_number(rng)};
  switch (rng.below(4)) {
    case 0: {
      auto b = message.initRoot<rpc::TxnRequest>();
      random_txn(rng, b);
      if (auto r = keel::agent::from_rpc(b.asReader())) command = *r;
      break;
    }
    case 1: {
      auto b = message.initRoot<rpc::PutRequest>();
      random_put(rng, b);
      if (auto r = keel::agent::from_rpc(b.asReader())) command = *r;
      break;
    }
    case 2: {
      auto b = message.initRoot<rpc::DeleteRangeRequest>();
      random_delete(rng, b);
      if (auto r = keel::agent::from_rpc(b.asReader())) command = *r;
      break;
    }
    default:
      break;
  }
  std::string s = keel::storage::encode_command(command);
  return Bytes(s.begin(), s.end());
}

// The checked-in seeds: one valid request of each kind, a tiny-limits txn that fails
// validation, and one raw encoded command.
int write_corpus(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const Bytes& b) {
    std::ofstream out(dir / name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  {
    capnp::MallocMessageBuilder m;
    auto t = m.initRoot<rpc::TxnRequest>();
    auto c = t.initCompare(1)[0];
    c.setResult(rpc::CompareResult::EQUAL);
    c.setTarget(rpc::CompareTarget::VALUE);
    c.setKey(blob("k1"));
    c.setValue(blob("v1"));
    auto ok = t.initSuccess(3);
    auto put = ok[0].initPut();
    put.setKey(blob("k1"));
    put.setValue(blob("v2"));
    put.setPrevKv(true);
    auto range = ok[1].initRange();
    range.setKey(blob("k"));
    range.setRangeEnd(blob("l"));
    range.setLimit(10);
    auto del = ok[2].initDeleteRange();
    del.setKey(blob("x"));
    del.setRangeEnd(blob(std::string(1, '\0')));
    auto fail = t.initFailure(1)[0].initRange();
    fail.setKey(blob("k1"));
    write("txn.bin", serialize(0, m));
    write("txn_tiny_limits.bin", serialize(4, m));
  }
  {
    capnp::MallocMessageBuilder m;
    auto r = m.initRoot<rpc::RangeRequest>();
    r.setKey(blob("app/"));
    r.setRangeEnd(blob(keel::storage::prefix_end("app/")));
    r.setRevision(5);
    r.setSortOrder(rpc::SortOrder::DESCEND);
    r.setSortTarget(rpc::SortTarget::MOD);
    r.setSerializable(true);
    write("range.bin", serialize(1, m));
  }
  {
    capnp::MallocMessageBuilder m;
    auto p = m.initRoot<rpc::PutRequest>();
    p.setKey(blob("key00001"));
    p.setValue(blob(std::string(32, 'v')));
    p.setLease(7);
    p.setPrevKv(true);
    write("put.bin", serialize(2, m));
  }
  {
    capnp::MallocMessageBuilder m;
    auto d = m.initRoot<rpc::DeleteRangeRequest>();
    d.setKey(blob("a"));
    d.setRangeEnd(blob("b"));
    d.setPrevKv(true);
    write("delete.bin", serialize(3, m));
  }
  {
    keel::storage::PutRequest p;
    p.key = "key00001";
    p.value = "value";
    p.lease = 3;
    std::string s = keel::storage::encode_command(p);
    write("raw_put_command.bin", Bytes(s.begin(), s.end()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 20000, seed = 0x6b65656c;  // "keel"
  std::vector<std::filesystem::path> paths;
  if (int rc = keel::fuzz::parse_args(argc, argv, &iterations, &seed, &paths, write_corpus);
      rc >= 0)
    return rc;

  std::vector<Bytes> corpus;
  std::vector<std::string> corpus_names;
  if (!keel::fuzz::load_corpus(paths, &corpus, &corpus_names)) return 2;
  keel::fuzz::install_crash_handler("fuzz_request_replay");
  for (size_t i = 0; i < corpus.size(); i++)
    run(corpus[i], corpus_names[i]);

  Rng rng(seed);
  uint64_t counts[5] = {};
  for (uint64_t i = 0; i < iterations; i++) {
    Bytes b;
    unsigned kind = static_cast<unsigned>(rng.below(10));
    if (kind < 3) {
      b = structured(rng);
    } else if (kind < 6) {
      b = (!corpus.empty() && rng.chance(2)) ? corpus[rng.below(corpus.size())] : structured(rng);
      mutate(rng, b);
    } else if (kind < 8) {
      b = encoded_command(rng);
      if (!rng.chance(4)) mutate(rng, b);
    } else {
      b.resize(rng.below(300));
      for (auto& x : b)
        x = static_cast<uint8_t>(rng.next());
    }
    counts[kind < 3 ? 0 : kind < 6 ? 1 : kind < 8 ? 2 : 3]++;
    run(b, "generated input " + std::to_string(i) + ", seed " + std::to_string(seed));
  }
  std::printf(
      "fuzz_request_replay: %zu corpus inputs, %llu generated (%llu structured, %llu mutated, "
      "%llu encoded commands, %llu random), seed %#llx; %llu valid commands round-tripped; "
      "no property violated\n",
      corpus.size(), static_cast<unsigned long long>(iterations),
      static_cast<unsigned long long>(counts[0]), static_cast<unsigned long long>(counts[1]),
      static_cast<unsigned long long>(counts[2]), static_cast<unsigned long long>(counts[3]),
      static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(fuzz_request_valid_commands));
  return 0;
}
