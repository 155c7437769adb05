// libFuzzer entry point (clang, -DKEEL_FUZZ=ON): fuzz_peer_frame CORPUS_DIR
#include "tests/unit/transport/fuzz_peer_frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)keel::transport::test::fuzz_peer_frame_one(data, size);
  return 0;
}
