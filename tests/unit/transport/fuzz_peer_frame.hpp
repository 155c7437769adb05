#pragma once
// The peer-frame decoder fuzz body, shared by the ctest replay (fuzz_replay_test.cpp) and the
// libFuzzer target (fuzz_peer_frame.cpp, clang + -DKEEL_FUZZ=ON).
#include <cstddef>
#include <cstdint>

namespace keel::transport::test {

struct FuzzOutcome {
  bool decoded = false;   // the input was a well-formed frame body
  size_t valid_msgs = 0;  // Raft messages in it that pass validate()
};

// Decodes `data` as a frame body and as a byte stream of frames; every decoded frame must
// re-encode to an equal frame. Aborts on a violated property; never throws.
FuzzOutcome fuzz_peer_frame_one(const uint8_t* data, size_t size);

}  // namespace keel::transport::test
