// keelctl against a real keeld: every subcommand, both output formats, exit statuses.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace keel;
using namespace keel::test;

TEST_CASE("put, get, del, txn, compact and watch through keelctl", "[integration][keelctl]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  const auto& s = keeld.socket();

  auto r = keelctl(s, {"put", "greeting", "hello"});
  CHECK(r.status == 0);
  CHECK(r.out == "OK\n");

  r = keelctl(s, {"get", "greeting"});
  CHECK(r.status == 0);
  CHECK(r.out == "greeting\nhello\n");

  r = keelctl(s, {"put", "greeting"}, "from stdin");
  CHECK(r.status == 0);
  r = keelctl(s, {"get", "greeting", "--print-value-only"});
  CHECK(r.out == "from stdin\n");

  for (const char* k : {"svc/a", "svc/b", "svc/c"})
    REQUIRE(keelctl(s, {"put", k, k}).status == 0);
  r = keelctl(s, {"get", "svc/", "--prefix", "--keys-only"});
  CHECK(r.out == "svc/a\nsvc/b\nsvc/c\n");
  r = keelctl(s, {"get", "svc/", "--prefix", "--count-only"});
  CHECK(r.out == "3\n");
  r = keelctl(s, {"get", "svc/", "--prefix", "--limit", "2", "--keys-only"});
  CHECK(r.out == "svc/a\nsvc/b\n");
  r = keelctl(s,
              {"get", "svc/", "--prefix", "--sort-by", "KEY", "--order", "DESCEND", "--keys-only"});
  CHECK(r.out == "svc/c\nsvc/b\nsvc/a\n");
  r = keelctl(s, {"get", "svc/b", "--from-key", "--keys-only"});
  CHECK(r.out == "svc/b\nsvc/c\n");
  r = keelctl(s, {"get", "svc/a", "svc/c", "--keys-only"});
  CHECK(r.out == "svc/a\nsvc/b\n");

  // Revision 2 was the first put of greeting.
  r = keelctl(s, {"get", "greeting", "--rev", "2", "--print-value-only"});
  CHECK(r.out == "hello\n");

  r = keelctl(s, {"-w", "json", "get", "greeting"});
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("\"key\":\"Z3JlZXRpbmc=\""));  // base64("greeting")
  CHECK_THAT(r.out, Catch::Contains("\"create_revision\""));
  CHECK_THAT(r.out, Catch::Contains("\"count\""));

  r = keelctl(s, {"txn"},
              "value(\"greeting\") = \"from stdin\"\n\nput greeting swapped\nget greeting\n\n"
              "put greeting lost\n");
  CHECK(r.status == 0);
  CHECK(r.out == "SUCCESS\n\nOK\n\ngreeting\nswapped\n");
  r = keelctl(s, {"txn"}, "version(\"greeting\") = \"1\"\n\nput greeting no\n\nput other yes\n");
  CHECK(r.out == "FAILURE\n\nOK\n");

  r = keelctl(s, {"del", "svc/", "--prefix", "--prev-kv"});
  CHECK(r.status == 0);
  CHECK(r.out == "3\nsvc/a\nsvc/a\nsvc/b\nsvc/b\nsvc/c\nsvc/c\n");

  // History replays from a revision: puts of greeting were at revisions 2 and 3.
  r = keelctl(s, {"watch", "greeting", "--rev", "2", "--max-events", "2"});
  CHECK(r.status == 0);
  CHECK(r.out == "PUT\ngreeting\nhello\nPUT\ngreeting\nfrom stdin\n");
  r = keelctl(s, {"watch", "svc/", "--prefix", "--rev", "1", "--max-events", "4"});
  CHECK(r.out == "PUT\nsvc/a\nsvc/a\nPUT\nsvc/b\nsvc/b\nPUT\nsvc/c\nsvc/c\nDELETE\nsvc/a\n");

  r = keelctl(s, {"compact", "4"});
  CHECK(r.status == 0);
  CHECK(r.out == "compacted revision 4\n");
  r = keelctl(s, {"get", "greeting", "--rev", "2"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("compacted"));
  r = keelctl(s, {"watch", "greeting", "--rev", "2"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("compacted"));

  r = keelctl(s, {"status"});
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("compact_revision: 4"));
  CHECK_THAT(r.out, Catch::Contains("you: uid " + std::to_string(getuid())));

  CHECK(keeld.terminate() == 0);
}

TEST_CASE("keelctl exit statuses: 0 ok, 1 failed, 2 usage", "[integration][keelctl]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  const auto& s = keeld.socket();
  CHECK(keelctl(s, {"get", "nothing"}).status == 0);
  CHECK(keelctl(s, {"get", "nothing"}).out.empty());
  auto r = keelctl(s, {"get", "x", "--rev", "1000"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("future_revision"));
  CHECK(keelctl(s, {"get"}).status == 2);
  CHECK(keelctl(s, {"frobnicate"}).status == 2);
  CHECK(keelctl(s, {"get", "x", "--sort-by", "COLOUR"}).status == 2);
  CHECK(keelctl(s, {"get", "a", "b", "--prefix"}).status == 2);
  CHECK(keelctl(s, {"txn"}, "nonsense(\"k\") = 1\n").status == 2);
  r = keelctl(s, {"put", "", "v"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("empty_key"));
  r = keelctl(dir.path + "/no-such.sock", {"get", "x"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("cannot connect"));
}

TEST_CASE("the socket is created 0660 and every connection knows its peer", "[integration]") {
  TempDir dir;
  Keeld keeld(dir.path);
  REQUIRE(keeld.start());
  struct stat st {};
  REQUIRE(stat(keeld.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0660);
  auto c = keeld.client();
  REQUIRE(c);
  auto status = c->status();
  REQUIRE(status.ok());
  CHECK(status->peer_uid == static_cast<int64_t>(getuid()));
  CHECK(status->peer_pid == static_cast<int64_t>(getpid()));
  CHECK(status->connections >= 1);
}

TEST_CASE("ranges larger than a reply page are fetched page by page at one revision",
          "[integration][keelctl][paging]") {
  TempDir dir;
  Keeld keeld(dir.path, "[limits]\nmax_response_bytes = 4096\n");
  REQUIRE(keeld.start());
  auto c = keeld.client();
  REQUIRE(c);
  constexpr int kKeys = 2000;
  std::string expected;
  for (int i = 0; i < kKeys; ++i) {
    char key[32];
    std::snprintf(key, sizeof(key), "page/%05d", i);
    storage::PutRequest p;
    p.key = key;
    p.value = std::string(100, 'v');
    REQUIRE(c->put(p).ok());
    expected += std::string(key) + "\n";
  }
  // One RPC returns one page and says where to continue.
  storage::RangeRequest all;
  all.key = "page/";
  all.range_end = storage::prefix_end("page/");
  auto first = c->range(all);
  REQUIRE(first.ok());
  // The first page is not counted past itself (that would scan the whole range on the
  // agent's event loop); a whole-range read through range_all counts every key.
  CHECK(first->count == static_cast<int64_t>(first->kvs.size()));
  CHECK(first->more);
  CHECK_FALSE(first->continue_key.empty());
  CHECK(first->kvs.size() < 100);

  auto r = keelctl(keeld.socket(), {"get", "page/", "--prefix", "--keys-only"});
  CHECK(r.status == 0);
  CHECK(r.out == expected);
  r = keelctl(keeld.socket(), {"get", "page/", "--prefix", "--limit", "150", "--keys-only"});
  CHECK(r.out == expected.substr(0, 150 * 11));
  r = keelctl(keeld.socket(), {"get", "page/", "--prefix", "--count-only"});
  CHECK(r.out == std::to_string(kKeys) + "\n");
  size_t visited = 0;
  auto whole = c->range_all(all, [&](const storage::KeyValue&) { ++visited; });
  REQUIRE(whole.ok());
  CHECK(whole->count == kKeys);
  CHECK(visited == static_cast<size_t>(kKeys));
  r = keelctl(keeld.socket(), {"get", "page/", "--prefix", "--keys-only", "-w", "json"});
  CHECK_THAT(r.out, Catch::Contains("\"count\":\"" + std::to_string(kKeys) + "\""));
  // A reply cut by --limit counts what it returns (etcd would count the whole range).
  auto limited = all;
  limited.limit = 5;
  auto five = c->range(limited);
  REQUIRE(five.ok());
  CHECK(five->kvs.size() == 5);
  CHECK(five->more);
  CHECK(five->count == 5);
  // Sorting by something other than the key must fit in one page.
  r = keelctl(keeld.socket(), {"get", "page/", "--prefix", "--sort-by", "VERSION"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("limit"));
}

TEST_CASE("the socket mode is configurable", "[integration]") {
  TempDir dir;
  Keeld keeld(dir.path, "socket_mode = \"0600\"\n");
  REQUIRE(keeld.start());
  struct stat st {};
  REQUIRE(stat(keeld.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}
