// Fuzz target for the request path: RPC message -> agent::from_rpc -> storage::validate ->
// encode_command -> decode_command, plus the raw bytes straight into decode_command.
//
// Input layout: byte 0 picks what the rest is and which limits apply:
//   bits 0-1  0 = TxnRequest, 1 = RangeRequest, 2 = PutRequest, 3 = DeleteRangeRequest
//   bit 2     tiny limits (16-byte keys, 32-byte values, 4 ops, 256-byte requests) instead of
//             the defaults, so the error paths of validate() are reached with small inputs
// bytes 1.. a Cap'n Proto message in flat-array form (segment table, then segments), as
//           capnp::messageToFlatArray writes it; zero-padded to whole words.
// The whole input (byte 0 included) is also fed to storage::decode_command as is.
//
// Properties checked (a violation aborts, which libFuzzer and the replay driver report):
//   - nothing crashes, and the only exception is kj::Exception (FAILED) from reading a
//     malformed message (read_request); any other exception escapes and crashes the fuzzer;
//   - from_rpc -> to_rpc -> from_rpc gives the same request;
//   - decode_command(encode_command(c)) == c for every command validate() accepts (only those
//     reach the log; the decoder's size bounds assume non-empty keys, so some invalid
//     commands, e.g. a txn with two empty-key deletes, do not decode);
//   - a command decode_command accepts re-encodes and decodes to the same command.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>

#include "agent/convert.hpp"
#include "cluster/model/kv_types.hpp"

// Valid commands round-tripped so far (the replay driver reports it).
uint64_t fuzz_request_valid_commands = 0;

namespace {

using keel::Result;
namespace storage = keel::storage;
namespace rpc = keel::rpc;

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "fuzz_request: property violated: %s\n", what);
  std::abort();
}

storage::Limits limits_for(uint8_t selector) {
  storage::Limits limits;
  if (selector & 4) {
    limits.max_key_bytes = 16;
    limits.max_value_bytes = 32;
    limits.max_txn_ops = 4;
    limits.max_request_bytes = 256;
  }
  return limits;
}

// For a valid command: decode(encode(c)) == c, and the copy is valid too.
void check_round_trip(const storage::Command& command, const storage::Limits& limits) {
  auto st = storage::validate(command, limits);
  if (!st.ok()) return;
  fuzz_request_valid_commands++;
  std::string bytes = storage::encode_command(command);
  auto decoded = storage::decode_command(bytes);
  if (!decoded) {
    std::fprintf(stderr, "decode_command: %s\n", decoded.error().message.c_str());
    bug("decode_command rejects what encode_command wrote");
  }
  if (!(*decoded == command)) bug("decode_command(encode_command(c)) != c");
  if (!storage::validate(*decoded, limits).ok()) bug("validate() rejects a round-tripped command");
}

// from_rpc -> to_rpc -> from_rpc is the identity on what from_rpc accepts.
template <typename Rpc, typename Store>
void check_rpc_round_trip(const Store& request) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<Rpc>();
  keel::agent::to_rpc(request, root);
  auto again = keel::agent::from_rpc(root.asReader());
  if (!again) bug("from_rpc rejects what to_rpc wrote");
  if (!(*again == request)) bug("from_rpc(to_rpc(r)) != r");
}

// Reads the request of type Rpc from the message and converts it with from_rpc (which copies
// everything it reads, so nothing refers to the message afterwards). nullopt when Cap'n Proto
// finds the message malformed: its readers validate lazily and report a bad segment table, an
// out-of-bounds or mistyped pointer, or the traversal or nesting limit (ReaderOptions) by
// throwing kj::Exception of type FAILED (KJ_REQUIRE), from the FlatArrayMessageReader
// constructor or from any accessor. That is the one exception the input can legitimately
// cause, so it is the only one caught, and only around reading the input: every other
// exception (std::exception from our code, another kj type, kj from building or encoding)
// propagates and crashes the fuzzer, which reports it with the input.
template <typename Rpc>
auto read_request(kj::ArrayPtr<const capnp::word> words)
    -> std::optional<decltype(keel::agent::from_rpc(std::declval<typename Rpc::Reader>()))> {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1u << 16;  // 512 KiB of reads per message
  options.nestingLimit = 16;
  try {
    capnp::FlatArrayMessageReader message(words, options);
    return keel::agent::from_rpc(message.getRoot<Rpc>());
  } catch (const kj::Exception& e) {
    if (e.getType() != kj::Exception::Type::FAILED) {
      std::fprintf(stderr, "kj::Exception: %s\n", e.getDescription().cStr());
      bug("reading the message raised a kj::Exception that is not FAILED (malformed input)");
    }
    return std::nullopt;
  }
}

void run_message(uint8_t selector, kj::ArrayPtr<const capnp::word> words) {
  const storage::Limits limits = limits_for(selector);
  switch (selector & 3) {
    case 0: {
      auto r = read_request<rpc::TxnRequest>(words);
      if (!r || !*r) return;
      check_rpc_round_trip<rpc::TxnRequest>(**r);
      check_round_trip(storage::Command(**r), limits);
      break;
    }
    case 1: {
      auto r = read_request<rpc::RangeRequest>(words);
      if (!r || !*r) return;
      check_rpc_round_trip<rpc::RangeRequest>(**r);
      (void)storage::validate(**r, limits);
      // A range reaches the log only inside a txn.
      storage::TxnRequest txn;
      txn.success.emplace_back(**r);
      check_round_trip(storage::Command(std::move(txn)), limits);
      break;
    }
    case 2: {
      auto r = read_request<rpc::PutRequest>(words);
      if (!r || !*r) return;
      check_rpc_round_trip<rpc::PutRequest>(**r);
      check_round_trip(storage::Command(**r), limits);
      break;
    }
    default: {
      auto r = read_request<rpc::DeleteRangeRequest>(words);
      if (!r || !*r) return;
      check_rpc_round_trip<rpc::DeleteRangeRequest>(**r);
      check_round_trip(storage::Command(**r), limits);
      break;
    }
  }
}

void run_raw(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = storage::decode_command(bytes);
  if (!decoded) {
    if (decoded.error().code != keel::ErrorCode::invalid_argument) {
      bug("decode_command failed with a code other than invalid_argument");
    }
    return;
  }
  (void)storage::validate(*decoded, limits_for(0));
  auto again = storage::decode_command(storage::encode_command(*decoded));
  if (!again || !(*again == *decoded)) bug("re-encoding a decoded command changes it");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run_raw(data, size);
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  const size_t body = size - 1;
  if (body < sizeof(capnp::word)) return 0;
  // Own, word-aligned, zero-padded copy: FlatArrayMessageReader needs aligned words.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>((body + 7) / 8);
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  std::memcpy(words.begin(), data + 1, body);

  run_message(selector, words.asPtr());
  return 0;
}
