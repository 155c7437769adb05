#pragma once
// Conversions between the RPC messages (capnp/keel.capnp) and the store's types. Only agent/
// converts Cap'n Proto types; everything below it sees keel::storage types.
#include <capnp/keel.capnp.h>

#include <optional>

#include "cluster/model/kv_types.hpp"

namespace keel::agent {

std::string to_string(capnp::Data::Reader data);
capnp::Data::Reader as_data(const std::string& bytes);

// RPC -> store. Enum values unknown to this build give invalid_argument naming the field.
Result<storage::RangeRequest> from_rpc(rpc::RangeRequest::Reader r);
Result<storage::PutRequest> from_rpc(rpc::PutRequest::Reader r);
Result<storage::DeleteRangeRequest> from_rpc(rpc::DeleteRangeRequest::Reader r);
Result<storage::TxnRequest> from_rpc(rpc::TxnRequest::Reader r);
storage::KeyValue from_rpc(rpc::KeyValue::Reader r);
storage::RangeResponse from_rpc(rpc::RangeResponse::Reader r);
storage::PutResponse from_rpc(rpc::PutResponse::Reader r);
storage::DeleteRangeResponse from_rpc(rpc::DeleteRangeResponse::Reader r);
storage::TxnResponse from_rpc(rpc::TxnResponse::Reader r);
storage::Event from_rpc(rpc::Event::Reader r);
Error from_rpc(rpc::Error::Reader r);

// store -> RPC.
void to_rpc(const storage::KeyValue& kv, rpc::KeyValue::Builder b);
void to_rpc(const storage::RangeRequest& r, rpc::RangeRequest::Builder b);
void to_rpc(const storage::PutRequest& r, rpc::PutRequest::Builder b);
void to_rpc(const storage::DeleteRangeRequest& r, rpc::DeleteRangeRequest::Builder b);
void to_rpc(const storage::TxnRequest& r, rpc::TxnRequest::Builder b);
void to_rpc(const storage::RangeResponse& r, rpc::RangeResponse::Builder b);
void to_rpc(const storage::PutResponse& r, rpc::PutResponse::Builder b);
void to_rpc(const storage::DeleteRangeResponse& r, rpc::DeleteRangeResponse::Builder b);
void to_rpc(const storage::TxnResponse& r, rpc::TxnResponse::Builder b);
void to_rpc(const storage::Event& e, rpc::Event::Builder b);
void to_rpc(const Error& e, rpc::Error::Builder b);
// A request's fence; none when its lock name is empty.
std::optional<storage::Fence> fence_of(rpc::Fence::Reader r);
void to_rpc(const storage::Fence& f, rpc::Fence::Builder b);

rpc::ErrorCode to_rpc(ErrorCode code);
ErrorCode from_rpc(rpc::ErrorCode code);

}  // namespace keel::agent
