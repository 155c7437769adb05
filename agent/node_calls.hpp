#pragma once
// Calls from the KJ event-loop thread into the node thread, as promises that resolve back on
// the calling thread. Shared by the KV and primitives services.
#include <kj/async.h>

#include <memory>
#include <utility>

#include "cluster/node/node.hpp"

namespace keel::agent {

// Runs `call(node, done)`; the promise resolves on this thread with what the node thread
// passed to done. If the node drops `done` without calling it, the promise breaks.
template <typename T, typename Call>
kj::Promise<T> from_node(node::Node& node, Call&& call) {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<T>();
  auto fulfiller =
      std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<T>>>(kj::mv(paf.fulfiller));
  call(node, [fulfiller](T value) { (*fulfiller)->fulfill(std::move(value)); });
  return kj::mv(paf.promise);
}

// Proposes a validated command; resolves with its result once applied on this member.
inline kj::Promise<Result<storage::CommandResult>> propose(node::Node& node,
                                                           storage::Command command) {
  return from_node<Result<storage::CommandResult>>(
      node, [command = std::move(command)](node::Node& n, auto done) mutable {
        n.propose(std::move(command), std::move(done));
      });
}

}  // namespace keel::agent
