#include "agent/convert.hpp"

namespace keel::agent {

using namespace keel::storage;

std::string to_string(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}
capnp::Data::Reader as_data(const std::string& bytes) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size());
}

namespace {

Error bad_enum(const char* field, uint16_t raw) {
  return make_error(ErrorCode::invalid_argument,
                    std::string(field) + " has unknown value " + std::to_string(raw));
}

Result<SortOrder> from_rpc_order(rpc::SortOrder v) {
  switch (v) {
    case rpc::SortOrder::NONE:
      return SortOrder::none;
    case rpc::SortOrder::ASCEND:
      return SortOrder::ascend;
    case rpc::SortOrder::DESCEND:
      return SortOrder::descend;
  }
  return bad_enum("sortOrder", static_cast<uint16_t>(v));
}
Result<SortTarget> from_rpc_target(rpc::SortTarget v) {
  switch (v) {
    case rpc::SortTarget::KEY:
      return SortTarget::key;
    case rpc::SortTarget::VERSION:
      return SortTarget::version;
    case rpc::SortTarget::CREATE:
      return SortTarget::create;
    case rpc::SortTarget::MOD:
      return SortTarget::mod;
    case rpc::SortTarget::VALUE:
      return SortTarget::value;
  }
  return bad_enum("sortTarget", static_cast<uint16_t>(v));
}
Result<CompareTarget> from_rpc_ctarget(rpc::CompareTarget v) {
  switch (v) {
    case rpc::CompareTarget::VERSION:
      return CompareTarget::version;
    case rpc::CompareTarget::CREATE:
      return CompareTarget::create;
    case rpc::CompareTarget::MOD:
      return CompareTarget::mod;
    case rpc::CompareTarget::VALUE:
      return CompareTarget::value;
    case rpc::CompareTarget::LEASE:
      return CompareTarget::lease;
  }
  return bad_enum("compare.target", static_cast<uint16_t>(v));
}
Result<CompareResult> from_rpc_cresult(rpc::CompareResult v) {
  switch (v) {
    case rpc::CompareResult::EQUAL:
      return CompareResult::equal;
    case rpc::CompareResult::NOT_EQUAL:
      return CompareResult::not_equal;
    case rpc::CompareResult::LESS:
      return CompareResult::less;
    case rpc::CompareResult::GREATER:
      return CompareResult::greater;
  }
  return bad_enum("compare.result", static_cast<uint16_t>(v));
}

Result<std::vector<RequestOp>> from_rpc_ops(capnp::List<rpc::RequestOp>::Reader ops) {
  std::vector<RequestOp> out;
  out.reserve(ops.size());
  for (auto op : ops) {
    switch (op.which()) {
      case rpc::RequestOp::RANGE: {
        auto r = from_rpc(op.getRange());
        if (!r) return std::move(r).error();
        out.emplace_back(std::move(r).value());
        break;
      }
      case rpc::RequestOp::PUT: {
        auto r = from_rpc(op.getPut());
        if (!r) return std::move(r).error();
        out.emplace_back(std::move(r).value());
        break;
      }
      case rpc::RequestOp::DELETE_RANGE: {
        auto r = from_rpc(op.getDeleteRange());
        if (!r) return std::move(r).error();
        out.emplace_back(std::move(r).value());
        break;
      }
      default:
        return make_error(ErrorCode::invalid_argument, "txn op has an unknown kind");
    }
  }
  return out;
}

}  // namespace

Result<RangeRequest> from_rpc(rpc::RangeRequest::Reader r) {
  RangeRequest q;
  q.key = to_string(r.getKey());
  q.range_end = to_string(r.getRangeEnd());
  q.revision = r.getRevision();
  q.limit = r.getLimit();
  auto order = from_rpc_order(r.getSortOrder());
  if (!order) return std::move(order).error();
  q.sort_order = *order;
  auto target = from_rpc_target(r.getSortTarget());
  if (!target) return std::move(target).error();
  q.sort_target = *target;
  q.keys_only = r.getKeysOnly();
  q.count_only = r.getCountOnly();
  q.min_mod_revision = r.getMinModRevision();
  q.max_mod_revision = r.getMaxModRevision();
  q.min_create_revision = r.getMinCreateRevision();
  q.max_create_revision = r.getMaxCreateRevision();
  q.serializable = r.getSerializable();
  return q;
}

Result<PutRequest> from_rpc(rpc::PutRequest::Reader r) {
  PutRequest q;
  q.key = to_string(r.getKey());
  q.value = to_string(r.getValue());
  q.lease = r.getLease();
  q.prev_kv = r.getPrevKv();
  q.ignore_value = r.getIgnoreValue();
  q.ignore_lease = r.getIgnoreLease();
  return q;
}

Result<DeleteRangeRequest> from_rpc(rpc::DeleteRangeRequest::Reader r) {
  DeleteRangeRequest q;
  q.key = to_string(r.getKey());
  q.range_end = to_string(r.getRangeEnd());
  q.prev_kv = r.getPrevKv();
  return q;
}

Result<TxnRequest> from_rpc(rpc::TxnRequest::Reader r) {
  TxnRequest t;
  for (auto c : r.getCompare()) {
    Compare cmp;
    auto res = from_rpc_cresult(c.getResult());
    if (!res) return std::move(res).error();
    auto tgt = from_rpc_ctarget(c.getTarget());
    if (!tgt) return std::move(tgt).error();
    cmp.result = *res;
    cmp.target = *tgt;
    cmp.key = to_string(c.getKey());
    cmp.range_end = to_string(c.getRangeEnd());
    cmp.number = c.getNumber();
    cmp.value = to_string(c.getValue());
    t.compare.push_back(std::move(cmp));
  }
  auto success = from_rpc_ops(r.getSuccess());
  if (!success) return std::move(success).error();
  t.success = std::move(success).value();
  auto failure = from_rpc_ops(r.getFailure());
  if (!failure) return std::move(failure).error();
  t.failure = std::move(failure).value();
  for (auto f : r.getFences())
    t.fences.push_back(storage::Fence{to_string(f.getLock()), f.getToken()});
  return t;
}

KeyValue from_rpc(rpc::KeyValue::Reader r) {
  KeyValue kv;
  kv.key = to_string(r.getKey());
  kv.value = to_string(r.getValue());
  kv.create_revision = r.getCreateRevision();
  kv.mod_revision = r.getModRevision();
  kv.version = r.getVersion();
  kv.lease = r.getLease();
  return kv;
}

RangeResponse from_rpc(rpc::RangeResponse::Reader r) {
  RangeResponse out;
  out.revision = r.getHeader().getRevision();
  out.kvs.reserve(r.getKvs().size());
  for (auto kv : r.getKvs())
    out.kvs.push_back(from_rpc(kv));
  out.more = r.getMore();
  out.count = r.getCount();
  out.continue_key = to_string(r.getContinueKey());
  return out;
}

PutResponse from_rpc(rpc::PutResponse::Reader r) {
  PutResponse out;
  out.revision = r.getHeader().getRevision();
  if (r.hasPrevKv()) out.prev_kv = from_rpc(r.getPrevKv());
  return out;
}

DeleteRangeResponse from_rpc(rpc::DeleteRangeResponse::Reader r) {
  DeleteRangeResponse out;
  out.revision = r.getHeader().getRevision();
  out.deleted = r.getDeleted();
  for (auto kv : r.getPrevKvs())
    out.prev_kvs.push_back(from_rpc(kv));
  return out;
}

TxnResponse from_rpc(rpc::TxnResponse::Reader r) {
  TxnResponse out;
  out.revision = r.getHeader().getRevision();
  out.succeeded = r.getSucceeded();
  for (auto op : r.getResponses()) {
    switch (op.which()) {
      case rpc::ResponseOp::RANGE:
        out.responses.emplace_back(from_rpc(op.getRange()));
        break;
      case rpc::ResponseOp::PUT:
        out.responses.emplace_back(from_rpc(op.getPut()));
        break;
      case rpc::ResponseOp::DELETE_RANGE:
        out.responses.emplace_back(from_rpc(op.getDeleteRange()));
        break;
    }
  }
  return out;
}

Event from_rpc(rpc::Event::Reader r) {
  Event e;
  e.type = r.getType() == rpc::EventType::DELETE ? EventType::del : EventType::put;
  e.kv = from_rpc(r.getKv());
  if (r.hasPrevKv()) e.prev_kv = from_rpc(r.getPrevKv());
  return e;
}

Error from_rpc(rpc::Error::Reader r) {
  Error e;
  e.code = from_rpc(r.getCode());
  e.message = r.getMessage();
  e.compact_revision = r.getCompactRevision();
  e.current_revision = r.getCurrentRevision();
  return e;
}

void to_rpc(const KeyValue& kv, rpc::KeyValue::Builder b) {
  b.setKey(as_data(kv.key));
  b.setValue(as_data(kv.value));
  b.setCreateRevision(kv.create_revision);
  b.setModRevision(kv.mod_revision);
  b.setVersion(kv.version);
  b.setLease(kv.lease);
}

void to_rpc(const RangeRequest& r, rpc::RangeRequest::Builder b) {
  b.setKey(as_data(r.key));
  b.setRangeEnd(as_data(r.range_end));
  b.setRevision(r.revision);
  b.setLimit(r.limit);
  b.setSortOrder(static_cast<rpc::SortOrder>(r.sort_order));
  b.setSortTarget(static_cast<rpc::SortTarget>(r.sort_target));
  b.setKeysOnly(r.keys_only);
  b.setCountOnly(r.count_only);
  b.setMinModRevision(r.min_mod_revision);
  b.setMaxModRevision(r.max_mod_revision);
  b.setMinCreateRevision(r.min_create_revision);
  b.setMaxCreateRevision(r.max_create_revision);
  b.setSerializable(r.serializable);
}

void to_rpc(const PutRequest& r, rpc::PutRequest::Builder b) {
  b.setKey(as_data(r.key));
  b.setValue(as_data(r.value));
  b.setLease(r.lease);
  b.setPrevKv(r.prev_kv);
  b.setIgnoreValue(r.ignore_value);
  b.setIgnoreLease(r.ignore_lease);
}

void to_rpc(const DeleteRangeRequest& r, rpc::DeleteRangeRequest::Builder b) {
  b.setKey(as_data(r.key));
  b.setRangeEnd(as_data(r.range_end));
  b.setPrevKv(r.prev_kv);
}

namespace {
void to_rpc_ops(const std::vector<RequestOp>& ops, capnp::List<rpc::RequestOp>::Builder b) {
  for (size_t i = 0; i < ops.size(); ++i) {
    std::visit(
        [&](const auto& op) {
          using T = std::decay_t<decltype(op)>;
          if constexpr (std::is_same_v<T, RangeRequest>) to_rpc(op, b[i].initRange());
          if constexpr (std::is_same_v<T, PutRequest>) to_rpc(op, b[i].initPut());
          if constexpr (std::is_same_v<T, DeleteRangeRequest>) to_rpc(op, b[i].initDeleteRange());
        },
        ops[i]);
  }
}
}  // namespace

void to_rpc(const TxnRequest& r, rpc::TxnRequest::Builder b) {
  auto cmps = b.initCompare(r.compare.size());
  for (size_t i = 0; i < r.compare.size(); ++i) {
    const auto& c = r.compare[i];
    cmps[i].setResult(static_cast<rpc::CompareResult>(c.result));
    cmps[i].setTarget(static_cast<rpc::CompareTarget>(c.target));
    cmps[i].setKey(as_data(c.key));
    cmps[i].setRangeEnd(as_data(c.range_end));
    cmps[i].setNumber(c.number);
    cmps[i].setValue(as_data(c.value));
  }
  to_rpc_ops(r.success, b.initSuccess(r.success.size()));
  to_rpc_ops(r.failure, b.initFailure(r.failure.size()));
  if (!r.fences.empty()) {
    auto fences = b.initFences(r.fences.size());
    for (size_t i = 0; i < r.fences.size(); ++i)
      to_rpc(r.fences[i], fences[i]);
  }
}

std::optional<storage::Fence> fence_of(rpc::Fence::Reader r) {
  if (r.getLock().size() == 0) return std::nullopt;
  return storage::Fence{to_string(r.getLock()), r.getToken()};
}

void to_rpc(const storage::Fence& f, rpc::Fence::Builder b) {
  b.setLock(as_data(f.lock));
  b.setToken(f.token);
}

void to_rpc(const RangeResponse& r, rpc::RangeResponse::Builder b) {
  b.initHeader().setRevision(r.revision);
  auto kvs = b.initKvs(r.kvs.size());
  for (size_t i = 0; i < r.kvs.size(); ++i)
    to_rpc(r.kvs[i], kvs[i]);
  b.setMore(r.more);
  b.setCount(r.count);
  if (!r.continue_key.empty()) b.setContinueKey(as_data(r.continue_key));
}

void to_rpc(const PutResponse& r, rpc::PutResponse::Builder b) {
  b.initHeader().setRevision(r.revision);
  if (r.prev_kv) to_rpc(*r.prev_kv, b.initPrevKv());
}

void to_rpc(const DeleteRangeResponse& r, rpc::DeleteRangeResponse::Builder b) {
  b.initHeader().setRevision(r.revision);
  b.setDeleted(r.deleted);
  auto kvs = b.initPrevKvs(r.prev_kvs.size());
  for (size_t i = 0; i < r.prev_kvs.size(); ++i)
    to_rpc(r.prev_kvs[i], kvs[i]);
}

void to_rpc(const TxnResponse& r, rpc::TxnResponse::Builder b) {
  b.initHeader().setRevision(r.revision);
  b.setSucceeded(r.succeeded);
  auto ops = b.initResponses(r.responses.size());
  for (size_t i = 0; i < r.responses.size(); ++i) {
    std::visit(
        [&](const auto& op) {
          using T = std::decay_t<decltype(op)>;
          if constexpr (std::is_same_v<T, RangeResponse>) to_rpc(op, ops[i].initRange());
          if constexpr (std::is_same_v<T, PutResponse>) to_rpc(op, ops[i].initPut());
          if constexpr (std::is_same_v<T, DeleteRangeResponse>) {
            to_rpc(op, ops[i].initDeleteRange());
          }
        },
        r.responses[i]);
  }
}

void to_rpc(const Event& e, rpc::Event::Builder b) {
  b.setType(e.type == EventType::del ? rpc::EventType::DELETE : rpc::EventType::PUT);
  to_rpc(e.kv, b.initKv());
  if (e.prev_kv) to_rpc(*e.prev_kv, b.initPrevKv());
}

void to_rpc(const Error& e, rpc::Error::Builder b) {
  b.setCode(to_rpc(e.code));
  b.setMessage(e.message);
  b.setCompactRevision(e.compact_revision);
  b.setCurrentRevision(e.current_revision);
}

rpc::ErrorCode to_rpc(ErrorCode code) {
  switch (code) {
    case ErrorCode::ok:
      return rpc::ErrorCode::OK;
    case ErrorCode::invalid_argument:
      return rpc::ErrorCode::INVALID_ARGUMENT;
    case ErrorCode::empty_key:
      return rpc::ErrorCode::EMPTY_KEY;
    case ErrorCode::key_too_large:
      return rpc::ErrorCode::KEY_TOO_LARGE;
    case ErrorCode::value_too_large:
      return rpc::ErrorCode::VALUE_TOO_LARGE;
    case ErrorCode::request_too_large:
      return rpc::ErrorCode::REQUEST_TOO_LARGE;
    case ErrorCode::too_many_ops:
      return rpc::ErrorCode::TOO_MANY_OPS;
    case ErrorCode::duplicate_key:
      return rpc::ErrorCode::DUPLICATE_KEY;
    case ErrorCode::range_end_before_key:
      return rpc::ErrorCode::RANGE_END_BEFORE_KEY;
    case ErrorCode::compacted:
      return rpc::ErrorCode::COMPACTED;
    case ErrorCode::future_revision:
      return rpc::ErrorCode::FUTURE_REVISION;
    case ErrorCode::lease_not_found:
      return rpc::ErrorCode::LEASE_NOT_FOUND;
    case ErrorCode::too_many_watchers:
      return rpc::ErrorCode::TOO_MANY_WATCHERS;
    case ErrorCode::not_leader:
      return rpc::ErrorCode::NOT_LEADER;
    case ErrorCode::timeout:
      return rpc::ErrorCode::TIMEOUT;
    case ErrorCode::shutting_down:
      return rpc::ErrorCode::SHUTTING_DOWN;
    case ErrorCode::permission_denied:
      return rpc::ErrorCode::PERMISSION_DENIED;
    case ErrorCode::key_not_found:
      return rpc::ErrorCode::KEY_NOT_FOUND;
    case ErrorCode::unavailable:
      return rpc::ErrorCode::UNAVAILABLE;
    case ErrorCode::overloaded:
      return rpc::ErrorCode::OVERLOADED;
    case ErrorCode::outcome_unknown:
      return rpc::ErrorCode::OUTCOME_UNKNOWN;
    case ErrorCode::removed:
      return rpc::ErrorCode::REMOVED;
    case ErrorCode::fenced:
      return rpc::ErrorCode::FENCED;
    case ErrorCode::lock_not_held:
      return rpc::ErrorCode::LOCK_NOT_HELD;
    case ErrorCode::ttl_out_of_range:
      return rpc::ErrorCode::TTL_OUT_OF_RANGE;
    case ErrorCode::too_many_leases:
      return rpc::ErrorCode::TOO_MANY_LEASES;
    case ErrorCode::lease_exists:
      return rpc::ErrorCode::LEASE_EXISTS;
    case ErrorCode::semaphore_max_mismatch:
      return rpc::ErrorCode::SEMAPHORE_MAX_MISMATCH;
    case ErrorCode::internal:
      return rpc::ErrorCode::INTERNAL;
  }
  return rpc::ErrorCode::INTERNAL;
}

ErrorCode from_rpc(rpc::ErrorCode code) {
  switch (code) {
    case rpc::ErrorCode::OK:
      return ErrorCode::ok;
    case rpc::ErrorCode::INVALID_ARGUMENT:
      return ErrorCode::invalid_argument;
    case rpc::ErrorCode::EMPTY_KEY:
      return ErrorCode::empty_key;
    case rpc::ErrorCode::KEY_TOO_LARGE:
      return ErrorCode::key_too_large;
    case rpc::ErrorCode::VALUE_TOO_LARGE:
      return ErrorCode::value_too_large;
    case rpc::ErrorCode::REQUEST_TOO_LARGE:
      return ErrorCode::request_too_large;
    case rpc::ErrorCode::TOO_MANY_OPS:
      return ErrorCode::too_many_ops;
    case rpc::ErrorCode::DUPLICATE_KEY:
      return ErrorCode::duplicate_key;
    case rpc::ErrorCode::RANGE_END_BEFORE_KEY:
      return ErrorCode::range_end_before_key;
    case rpc::ErrorCode::COMPACTED:
      return ErrorCode::compacted;
    case rpc::ErrorCode::FUTURE_REVISION:
      return ErrorCode::future_revision;
    case rpc::ErrorCode::LEASE_NOT_FOUND:
      return ErrorCode::lease_not_found;
    case rpc::ErrorCode::TOO_MANY_WATCHERS:
      return ErrorCode::too_many_watchers;
    case rpc::ErrorCode::NOT_LEADER:
      return ErrorCode::not_leader;
    case rpc::ErrorCode::TIMEOUT:
      return ErrorCode::timeout;
    case rpc::ErrorCode::SHUTTING_DOWN:
      return ErrorCode::shutting_down;
    case rpc::ErrorCode::PERMISSION_DENIED:
      return ErrorCode::permission_denied;
    case rpc::ErrorCode::KEY_NOT_FOUND:
      return ErrorCode::key_not_found;
    case rpc::ErrorCode::UNAVAILABLE:
      return ErrorCode::unavailable;
    case rpc::ErrorCode::OVERLOADED:
      return ErrorCode::overloaded;
    case rpc::ErrorCode::OUTCOME_UNKNOWN:
      return ErrorCode::outcome_unknown;
    case rpc::ErrorCode::REMOVED:
      return ErrorCode::removed;
    case rpc::ErrorCode::FENCED:
      return ErrorCode::fenced;
    case rpc::ErrorCode::LOCK_NOT_HELD:
      return ErrorCode::lock_not_held;
    case rpc::ErrorCode::TTL_OUT_OF_RANGE:
      return ErrorCode::ttl_out_of_range;
    case rpc::ErrorCode::TOO_MANY_LEASES:
      return ErrorCode::too_many_leases;
    case rpc::ErrorCode::LEASE_EXISTS:
      return ErrorCode::lease_exists;
    case rpc::ErrorCode::SEMAPHORE_MAX_MISMATCH:
      return ErrorCode::semaphore_max_mismatch;
    case rpc::ErrorCode::INTERNAL:
      return ErrorCode::internal;
  }
  return ErrorCode::internal;
}

}  // namespace keel::agent
