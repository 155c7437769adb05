// The snapshot sink's chunk parser on random and mutated chunks (they come from a peer): every
// chunk is stored or refused with invalid_argument, never a crash, and the store it belongs
// to is unchanged. Deterministic (seeded); run under ASan + UBSan in CI.
#include "cluster/raft/rand.hpp"
#include "tests/unit/storage/helpers.hpp"

namespace keel::storage {
namespace {

TEST_CASE("snapshot: the sink survives random and mutated chunks", "[snapshot][fuzz]") {
  test::Store a;
  for (int i = 0; i < 40; i++)
    a.put("k" + std::to_string(i), std::string(30, static_cast<char>('a' + i % 26)));
  a.del("k3");
  // Real chunks to mutate.
  std::vector<std::string> real;
  {
    auto src = a.store().snapshot_source();
    REQUIRE(src.ok());
    std::string chunk;
    while ((*src)->next(300, &chunk).value())
      real.push_back(chunk);
  }
  REQUIRE(real.size() > 3);

  test::Store b;
  b.put("mine", "stays");
  raft::Rng rng(7);
  int refused = 0, stored = 0;
  for (int round = 0; round < 200; round++) {
    auto sink = b.store().snapshot_sink();
    REQUIRE(sink.ok());
    for (int i = 0; i < 20; i++) {
      std::string chunk = real[rng.below(real.size())];
      const int edits = static_cast<int>(rng.below(4));
      for (int e = 0; e < edits && !chunk.empty(); e++) {
        switch (rng.below(3)) {
          case 0:
            chunk[rng.below(chunk.size())] = static_cast<char>(rng.below(256));
            break;
          case 1:
            chunk.resize(rng.below(chunk.size()));
            break;
          default:
            chunk.insert(rng.below(chunk.size()), 1 + rng.below(8),
                         static_cast<char>(rng.below(256)));
        }
      }
      auto st = (*sink)->add(chunk);
      if (st.ok()) {
        stored++;
      } else {
        CHECK(st.error().code == ErrorCode::invalid_argument);
        refused++;
      }
    }
    (void)(*sink)->finish();  // a valid state row or not: either way no crash
  }
  CHECK(refused > 0);
  CHECK(stored > 0);
  // Nothing was installed: the store is as it was.
  CHECK(b.get("mine") == "stays");
  CHECK(b.get("k1") == "<none>");
}

}  // namespace
}  // namespace keel::storage
