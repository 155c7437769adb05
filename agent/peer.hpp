#pragma once
// Who is on the other end of a connection, from SO_PEERCRED (-1 = unknown).
#include <cstdint>

namespace keel::agent {

struct Peer {
  int64_t uid = -1;
  int64_t pid = -1;
};

}  // namespace keel::agent
