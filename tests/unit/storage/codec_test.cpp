#include <random>

#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

std::vector<Command> sample_commands() {
  std::vector<Command> out;
  out.push_back(PutRequest{"k", "v", 0, false, false, false});
  out.push_back(
      PutRequest{std::string("a\0b", 3), std::string(300, 'x'), 12345678901LL, true, false, true});
  out.push_back(PutRequest{"k", "", 0, false, true, false});
  out.push_back(DeleteRangeRequest{"a", "", false});
  out.push_back(DeleteRangeRequest{"a", "z", true});
  out.push_back(DeleteRangeRequest{"a", std::string(1, '\0'), true});
  out.push_back(CompactRequest{0});
  out.push_back(CompactRequest{INT64_MAX});
  TxnRequest empty_txn;
  out.push_back(empty_txn);
  TxnRequest txn;
  for (auto target : {CompareTarget::version, CompareTarget::create, CompareTarget::mod,
                      CompareTarget::value, CompareTarget::lease}) {
    for (auto result : {CompareResult::equal, CompareResult::not_equal, CompareResult::less,
                        CompareResult::greater}) {
      txn.compare.push_back(Compare{result, target, "ck", "cz", -7, "val"});
    }
  }
  RangeRequest range;
  range.key = "r";
  range.range_end = "s";
  range.revision = 9;
  range.limit = 3;
  range.sort_order = SortOrder::descend;
  range.sort_target = SortTarget::value;
  range.keys_only = true;
  range.count_only = true;
  range.serializable = true;
  range.min_mod_revision = 1;
  range.max_mod_revision = 2;
  range.min_create_revision = 3;
  range.max_create_revision = INT64_MAX;
  txn.success.push_back(range);
  txn.success.push_back(PutRequest{"p", "q", 5, true, false, false});
  txn.success.push_back(DeleteRangeRequest{"d", "e", true});
  txn.failure.push_back(RangeRequest{});
  txn.failure.push_back(PutRequest{"x", "", 0, false, true, true});
  out.push_back(txn);
  return out;
}

TEST_CASE("codec: every command shape round-trips", "[codec]") {
  for (const auto& c : sample_commands()) {
    std::string bytes = encode_command(c);
    auto d = decode_command(bytes);
    REQUIRE(d.ok());
    CHECK(d.value() == c);
  }
}

TEST_CASE("codec: the smallest ops and compares (empty keys) round-trip", "[codec]") {
  // The decoder's lower bound on element size once rejected what the encoder wrote.
  TxnRequest txn;
  txn.compare = {Compare{}, Compare{}, Compare{}};
  txn.success = {DeleteRangeRequest{}, DeleteRangeRequest{}};
  auto d = decode_command(encode_command(txn));
  REQUIRE(d.ok());
  CHECK(d.value() == Command(txn));
}

TEST_CASE("codec: the encoding is compact", "[codec]") {
  std::string bytes = encode_command(PutRequest{"key", "value", 0, false, false, false});
  CHECK(bytes.size() <= 16);
}

void check_decode_is_safe(std::string_view bytes) {
  auto d = decode_command(bytes);
  if (d.ok()) {
    // Whatever decodes must re-encode to something that decodes to the same command.
    auto again = decode_command(encode_command(d.value()));
    REQUIRE(again.ok());
    CHECK(again.value() == d.value());
  } else {
    CHECK(d.error().code == ErrorCode::invalid_argument);
  }
}

TEST_CASE("codec: truncated encodings are rejected", "[codec]") {
  for (const auto& c : sample_commands()) {
    std::string bytes = encode_command(c);
    for (size_t n = 0; n < bytes.size(); n++) {
      auto d = decode_command(std::string_view(bytes).substr(0, n));
      REQUIRE_FALSE(d.ok());
      CHECK(d.error().code == ErrorCode::invalid_argument);
    }
    auto d = decode_command(bytes + "x");
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().message.find("trailing") != std::string::npos);
  }
}

TEST_CASE("codec: rejects bad versions + tags + enums + flags and huge lengths", "[codec]") {
  std::string put = encode_command(PutRequest{"k", "v", 0, false, false, false});
  std::string bad_version = put;
  bad_version[0] = 2;
  CHECK(decode_command(bad_version).error().code == ErrorCode::invalid_argument);
  std::string bad_tag = put;
  bad_tag[1] = 9;
  CHECK(decode_command(bad_tag).error().code == ErrorCode::invalid_argument);
  std::string bad_flags = put;
  bad_flags[2] = 0x40;
  CHECK(decode_command(bad_flags).error().code == ErrorCode::invalid_argument);
  // A string length of 2^63 must not allocate.
  std::string huge = std::string("\x01\x00\x00", 3) + std::string(8, '\xff') + "\x7f";
  CHECK(decode_command(huge).error().code == ErrorCode::invalid_argument);
  // A txn claiming 2^40 compares must not reserve them.
  std::string many = std::string("\x01\x02", 2) + "\x80\x80\x80\x80\x80\x20";
  CHECK(decode_command(many).error().code == ErrorCode::invalid_argument);
  // An 11-byte varint.
  std::string longvar = std::string("\x01\x03", 2) + std::string(10, '\x80') + "\x01";
  CHECK(decode_command(longvar).error().code == ErrorCode::invalid_argument);
  // An out-of-range compare enum.
  TxnRequest txn;
  txn.compare.push_back(Compare{});
  std::string t = encode_command(txn);
  t[3] = 7;  // version, tag, count, result
  CHECK(decode_command(t).error().code == ErrorCode::invalid_argument);
}

TEST_CASE("codec: garbled and random bytes never crash", "[codec]") {
  std::mt19937_64 rng(20240611);
  auto samples = sample_commands();
  for (int i = 0; i < 20000; i++) {
    std::string bytes = encode_command(samples[rng() % samples.size()]);
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; f++)
      bytes[rng() % bytes.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % (bytes.size() + 1));
    check_decode_is_safe(bytes);
  }
  for (int i = 0; i < 20000; i++) {
    std::string bytes(rng() % 64, '\0');
    for (auto& b : bytes)
      b = static_cast<char>(rng());
    if (!bytes.empty() && rng() % 2) bytes[0] = 1;  // a valid version more often
    if (bytes.size() > 1 && rng() % 2) bytes[1] = static_cast<char>(rng() % 4);
    check_decode_is_safe(bytes);
  }
}

}  // namespace
}  // namespace keel::storage
