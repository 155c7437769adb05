// The log entry payload: a compact, versioned binary encoding of Command.
//
//   command  = version:u8(=1) tag:u8 body
//   integers = LEB128 varints; signed ones zigzag-encoded
//   strings  = varint length, bytes
//   lists    = varint count, elements
//   booleans = one flags byte per message; unknown bits are rejected
//
// decode_command() treats its input as hostile: every length is checked against the bytes
// that remain before anything is allocated, enums are range-checked, trailing bytes are an
// error, and every failure is ErrorCode::invalid_argument.
#include <cstring>

#include "cluster/model/kv_types.hpp"

namespace keel::storage {
namespace {

constexpr uint8_t kVersion = 1;
// kTxnFenced is a txn followed by its fences (a txn without fences keeps kTxn, so the log
// entries written before fences existed decode unchanged).
enum Tag : uint8_t {
  kPut = 0,
  kDelete = 1,
  kTxn = 2,
  kCompact = 3,
  kTxnFenced = 4,
  kLeaseGrant = 5,
  kLeaseRevoke = 6,
  kLeaseRenew = 7,
  kLock = 8,
  kUnlock = 9,
  kSemAcquire = 10,
  kSemRelease = 11,
};
enum OpTag : uint8_t { kOpRange = 0, kOpPut = 1, kOpDelete = 2 };

class Writer {
 public:
  std::string out;
  void u8(uint8_t v) { out.push_back(static_cast<char>(v)); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  }
  void i64(int64_t v) { varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void str(const std::string& s) {
    varint(s.size());
    out.append(s);
  }
};

class Parser {
 public:
  explicit Parser(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }
  void fail(const char* what) {
    if (ok_) {
      ok_ = false;
      what_ = what;
    }
  }
  const char* what() const { return what_; }

  uint8_t u8() {
    if (!ok_ || pos_ >= in_.size()) {
      fail("truncated");
      return 0;
    }
    return static_cast<uint8_t>(in_[pos_++]);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = u8();
      if (!ok_) return 0;
      if (shift == 63 && b > 1) {
        fail("varint overflows 64 bits");
        return 0;
      }
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
    return 0;
  }
  int64_t i64() {
    uint64_t z = varint();
    return static_cast<int64_t>((z >> 1) ^ (~(z & 1) + 1));
  }
  std::string str() {
    uint64_t n = varint();
    if (!ok_) return {};
    if (n > remaining()) {
      fail("string length exceeds the input");
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  // A list count; every element takes at least min_element_bytes, so a count that cannot
  // fit in what remains is rejected before any allocation.
  size_t count(size_t min_element_bytes) {
    uint64_t n = varint();
    if (!ok_) return 0;
    if (n > remaining() / min_element_bytes) {
      fail("list count exceeds the input");
      return 0;
    }
    return static_cast<size_t>(n);
  }
  uint8_t flags(uint8_t allowed) {
    uint8_t f = u8();
    if (f & ~allowed) fail("unknown flag bits");
    return f;
  }
  template <typename E>
  E enumeration(uint8_t max) {
    uint8_t v = u8();
    if (v > max) fail("enum value out of range");
    return static_cast<E>(v);
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
  const char* what_ = "";
};

void put_body(Writer& w, const PutRequest& r) {
  w.u8(static_cast<uint8_t>((r.prev_kv ? 1 : 0) | (r.ignore_value ? 2 : 0) |
                            (r.ignore_lease ? 4 : 0)));
  w.str(r.key);
  w.str(r.value);
  w.i64(r.lease);
}
PutRequest parse_put(Parser& p) {
  PutRequest r;
  uint8_t f = p.flags(7);
  r.prev_kv = f & 1;
  r.ignore_value = f & 2;
  r.ignore_lease = f & 4;
  r.key = p.str();
  r.value = p.str();
  r.lease = p.i64();
  return r;
}

void delete_body(Writer& w, const DeleteRangeRequest& r) {
  w.u8(r.prev_kv ? 1 : 0);
  w.str(r.key);
  w.str(r.range_end);
}
DeleteRangeRequest parse_delete(Parser& p) {
  DeleteRangeRequest r;
  r.prev_kv = p.flags(1) & 1;
  r.key = p.str();
  r.range_end = p.str();
  return r;
}

void range_body(Writer& w, const RangeRequest& r) {
  w.u8(static_cast<uint8_t>((r.keys_only ? 1 : 0) | (r.count_only ? 2 : 0) |
                            (r.serializable ? 4 : 0)));
  w.str(r.key);
  w.str(r.range_end);
  w.i64(r.revision);
  w.i64(r.limit);
  w.u8(static_cast<uint8_t>(r.sort_order));
  w.u8(static_cast<uint8_t>(r.sort_target));
  w.i64(r.min_mod_revision);
  w.i64(r.max_mod_revision);
  w.i64(r.min_create_revision);
  w.i64(r.max_create_revision);
}
RangeRequest parse_range(Parser& p) {
  RangeRequest r;
  uint8_t f = p.flags(7);
  r.keys_only = f & 1;
  r.count_only = f & 2;
  r.serializable = f & 4;
  r.key = p.str();
  r.range_end = p.str();
  r.revision = p.i64();
  r.limit = p.i64();
  r.sort_order = p.enumeration<SortOrder>(static_cast<uint8_t>(SortOrder::descend));
  r.sort_target = p.enumeration<SortTarget>(static_cast<uint8_t>(SortTarget::value));
  r.min_mod_revision = p.i64();
  r.max_mod_revision = p.i64();
  r.min_create_revision = p.i64();
  r.max_create_revision = p.i64();
  return r;
}

void compare_body(Writer& w, const Compare& c) {
  w.u8(static_cast<uint8_t>(c.result));
  w.u8(static_cast<uint8_t>(c.target));
  w.str(c.key);
  w.str(c.range_end);
  w.i64(c.number);
  w.str(c.value);
}
Compare parse_compare(Parser& p) {
  Compare c;
  c.result = p.enumeration<CompareResult>(static_cast<uint8_t>(CompareResult::greater));
  c.target = p.enumeration<CompareTarget>(static_cast<uint8_t>(CompareTarget::lease));
  c.key = p.str();
  c.range_end = p.str();
  c.number = p.i64();
  c.value = p.str();
  return c;
}

void ops_body(Writer& w, const std::vector<RequestOp>& ops) {
  w.varint(ops.size());
  for (const auto& op : ops) {
    if (auto* r = std::get_if<RangeRequest>(&op)) {
      w.u8(kOpRange);
      range_body(w, *r);
    } else if (auto* put = std::get_if<PutRequest>(&op)) {
      w.u8(kOpPut);
      put_body(w, *put);
    } else {
      w.u8(kOpDelete);
      delete_body(w, std::get<DeleteRangeRequest>(op));
    }
  }
}
std::vector<RequestOp> parse_ops(Parser& p) {
  std::vector<RequestOp> ops;
  size_t n = p.count(4);  // the smallest op: a tag and a delete of empty keys (3 bytes)
  ops.reserve(n);
  for (size_t i = 0; i < n && p.ok(); i++) {
    switch (p.u8()) {
      case kOpRange:
        ops.emplace_back(parse_range(p));
        break;
      case kOpPut:
        ops.emplace_back(parse_put(p));
        break;
      case kOpDelete:
        ops.emplace_back(parse_delete(p));
        break;
      default:
        p.fail("unknown txn op tag");
    }
  }
  return ops;
}

}  // namespace

std::string encode_command(const Command& command) {
  Writer w;
  w.u8(kVersion);
  if (auto* put = std::get_if<PutRequest>(&command)) {
    w.u8(kPut);
    put_body(w, *put);
  } else if (auto* del = std::get_if<DeleteRangeRequest>(&command)) {
    w.u8(kDelete);
    delete_body(w, *del);
  } else if (auto* txn = std::get_if<TxnRequest>(&command)) {
    w.u8(txn->fences.empty() ? kTxn : kTxnFenced);
    w.varint(txn->compare.size());
    for (const auto& c : txn->compare)
      compare_body(w, c);
    ops_body(w, txn->success);
    ops_body(w, txn->failure);
    if (!txn->fences.empty()) {
      w.varint(txn->fences.size());
      for (const auto& f : txn->fences) {
        w.str(f.lock);
        w.i64(f.token);
      }
    }
  } else if (auto* compact = std::get_if<CompactRequest>(&command)) {
    w.u8(kCompact);
    w.i64(compact->revision);
  } else if (auto* g = std::get_if<LeaseGrantRequest>(&command)) {
    w.u8(kLeaseGrant);
    w.i64(g->id);
    w.i64(g->ttl_ms);
  } else if (auto* r = std::get_if<LeaseRevokeRequest>(&command)) {
    w.u8(kLeaseRevoke);
    w.i64(r->id);
  } else if (auto* n = std::get_if<LeaseRenewRequest>(&command)) {
    w.u8(kLeaseRenew);
    w.varint(n->ids.size());
    for (int64_t id : n->ids)
      w.i64(id);
  } else if (auto* l = std::get_if<LockRequest>(&command)) {
    w.u8(kLock);
    w.u8(l->wait ? 1 : 0);
    w.str(l->name);
    w.i64(l->lease);
    w.i64(l->delay_ms);
  } else if (auto* u = std::get_if<UnlockRequest>(&command)) {
    w.u8(kUnlock);
    w.str(u->name);
    w.i64(u->lease);
  } else if (auto* a = std::get_if<SemAcquireRequest>(&command)) {
    w.u8(kSemAcquire);
    w.u8(a->wait ? 1 : 0);
    w.str(a->name);
    w.i64(a->max);
    w.i64(a->lease);
    w.str(a->holder_id);
    w.str(a->metadata);
  } else {
    const auto& r = std::get<SemReleaseRequest>(command);
    w.u8(kSemRelease);
    w.str(r.name);
    w.str(r.holder_id);
    w.i64(r.lease);
  }
  return std::move(w.out);
}

Result<Command> decode_command(std::string_view bytes) {
  Parser p(bytes);
  uint8_t version = p.u8();
  if (p.ok() && version != kVersion) {
    return make_error(ErrorCode::invalid_argument,
                      "command encoding version " + std::to_string(version) +
                          " is not supported (expected " + std::to_string(kVersion) + ")");
  }
  std::optional<Command> command;
  const uint8_t tag = p.u8();
  switch (tag) {
    case kPut:
      command = parse_put(p);
      break;
    case kDelete:
      command = parse_delete(p);
      break;
    case kTxn:
    case kTxnFenced: {
      const bool fenced = tag == kTxnFenced;
      TxnRequest txn;
      size_t n = p.count(6);  // the smallest compare (empty keys and value) is 6 bytes
      txn.compare.reserve(n);
      for (size_t i = 0; i < n && p.ok(); i++)
        txn.compare.push_back(parse_compare(p));
      txn.success = parse_ops(p);
      txn.failure = parse_ops(p);
      if (fenced) {
        size_t f = p.count(2);  // empty name + token
        if (p.ok() && f == 0) p.fail("a fenced txn without fences");
        txn.fences.reserve(f);
        for (size_t i = 0; i < f && p.ok(); i++) {
          Fence fence;
          fence.lock = p.str();
          fence.token = p.i64();
          txn.fences.push_back(std::move(fence));
        }
      }
      command = std::move(txn);
      break;
    }
    case kCompact:
      command = CompactRequest{p.i64()};
      break;
    case kLeaseGrant: {
      LeaseGrantRequest g;
      g.id = p.i64();
      g.ttl_ms = p.i64();
      command = g;
      break;
    }
    case kLeaseRevoke:
      command = LeaseRevokeRequest{p.i64()};
      break;
    case kLeaseRenew: {
      LeaseRenewRequest r;
      size_t n = p.count(1);
      r.ids.reserve(n);
      for (size_t i = 0; i < n && p.ok(); i++)
        r.ids.push_back(p.i64());
      command = std::move(r);
      break;
    }
    case kLock: {
      LockRequest l;
      l.wait = p.flags(1) & 1;
      l.name = p.str();
      l.lease = p.i64();
      l.delay_ms = p.i64();
      command = std::move(l);
      break;
    }
    case kUnlock: {
      UnlockRequest u;
      u.name = p.str();
      u.lease = p.i64();
      command = std::move(u);
      break;
    }
    case kSemAcquire: {
      SemAcquireRequest a;
      a.wait = p.flags(1) & 1;
      a.name = p.str();
      a.max = p.i64();
      a.lease = p.i64();
      a.holder_id = p.str();
      a.metadata = p.str();
      command = std::move(a);
      break;
    }
    case kSemRelease: {
      SemReleaseRequest r;
      r.name = p.str();
      r.holder_id = p.str();
      r.lease = p.i64();
      command = std::move(r);
      break;
    }
    default:
      p.fail("unknown command tag");
  }
  if (p.ok() && !p.at_end()) p.fail("trailing bytes");
  if (!p.ok()) {
    return make_error(ErrorCode::invalid_argument,
                      std::string("malformed command encoding: ") + p.what());
  }
  return std::move(*command);
}

}  // namespace keel::storage
