// keelctl: the command line for keel. Exit status: 0 success, 1 the operation failed,
// 2 usage error. Output: human-readable (etcdctl's layout) or JSON with -w json.
#include <capnp/compat/json.h>
#include <capnp/keel.capnp.h>
#include <capnp/message.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "agent/client.hpp"
#include "agent/convert.hpp"
#include "agent/run_locked.hpp"
#include "agent/txn_text.hpp"

namespace {

using namespace keel;
using namespace keel::storage;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

struct UsageError {
  std::string message;
};

std::string default_socket() {
  if (const char* env = std::getenv("KEEL_SOCKET"); env && *env) return env;
  if (access("/run/keel/keel.sock", F_OK) == 0) return "/run/keel/keel.sock";
  return "./var/keel.sock";
}

struct Globals {
  std::string socket = default_socket();
  std::string write_out = "simple";
  bool json() const { return write_out == "json"; }
};

int report(const Error& e) {
  std::fprintf(stderr, "Error: %s: %s\n", error_code_name(e.code), e.message.c_str());
  return kExitFailed;
}

std::unique_ptr<client::Client> connect_or_exit(const Globals& g) {
  auto c = client::Client::connect(g.socket);
  if (!c) {
    report(c.error());
    std::exit(kExitFailed);
  }
  return std::move(c).value();
}

void write_bytes(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

template <typename Builder>
std::string to_json(Builder b) {
  capnp::JsonCodec codec;
  codec.handleByAnnotation<typename Builder::Builds>();
  return codec.encode(b.asReader()).cStr();
}

std::string kv_json(const KeyValue& kv) {
  capnp::MallocMessageBuilder m;
  auto b = m.initRoot<rpc::KeyValue>();
  agent::to_rpc(kv, b);
  return to_json(b);
}

void print_kv(const KeyValue& kv, bool value_only, bool keys_only) {
  if (!value_only) write_bytes(kv.key);
  if (!keys_only) write_bytes(kv.value);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string status_json(const client::StatusInfo& st) {
  auto num = [](auto v) { return "\"" + std::to_string(v) + "\""; };
  std::string out = "{\"name\":" + json_string(st.name) + ",\"member_id\":" + num(st.member_id) +
                    ",\"cluster_id\":" + num(st.cluster_id);
  if (st.error) {
    return out + ",\"error\":{\"code\":" + json_string(error_code_name(st.error->code)) +
           ",\"message\":" + json_string(st.error->message) + "}}";
  }
  out += ",\"role\":" + json_string(st.role) + ",\"leader\":" + num(st.leader) +
         ",\"leader_name\":" + json_string(st.leader_name) + ",\"raft_term\":" + num(st.raft_term) +
         ",\"commit_index\":" + num(st.commit_index) +
         ",\"applied_index\":" + num(st.applied_index) + ",\"last_index\":" + num(st.last_index) +
         ",\"cluster_time_ms\":" + num(st.cluster_time_ms) +
         ",\"dropped_peer_msgs\":" + num(st.dropped_peer_msgs) +
         ",\"dropped_by_reason\":" + json_string(st.dropped_by_reason) +
         ",\"leases_renewing\":" + num(st.leases_renewing) +
         ",\"renew_messages\":" + num(st.renew_messages) +
         ",\"leases_renewed\":" + num(st.leases_renewed) +
         ",\"time_entries\":" + num(st.time_entries) + ",\"upstream\":" + num(st.upstream) +
         ",\"lag_entries\":" + num(st.lag_entries) + ",\"lag_ms\":" + num(st.lag_ms) +
         ",\"relay_children\":" + num(st.relay_children) +
         ",\"server_thread\":" + num(st.server_thread) +
         ",\"server_threads\":" + num(st.server_threads) + ",\"revision\":" + num(st.revision) +
         ",\"compact_revision\":" + num(st.compact_revision) +
         ",\"version\":" + json_string(st.version) + ",\"data_dir\":" + json_string(st.data_dir) +
         ",\"log_syncs\":" + num(st.log_syncs) + ",\"log_entries\":" + num(st.log_entries) +
         ",\"watchers\":" + num(st.watchers) + ",\"connections\":" + num(st.connections) +
         ",\"peer_uid\":" + num(st.peer_uid) + ",\"peer_pid\":" + num(st.peer_pid) + "}";
  return out;
}

std::string fmt_id(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

void print_status(const client::StatusInfo& st, bool with_caller) {
  std::printf(
      "name: %s\nmember_id: %016llx\nrole: %s\nleader: %s (%016llx)\nraft_term: %llu\n"
      "commit_index: %llu\napplied_index: %llu\nlast_index: %llu\ncluster_time_ms: %llu\n"
      "dropped_peer_msgs: %llu%s%s\n",
      st.name.c_str(), static_cast<unsigned long long>(st.member_id), st.role.c_str(),
      st.leader_name.empty() ? "none" : st.leader_name.c_str(),
      static_cast<unsigned long long>(st.leader), static_cast<unsigned long long>(st.raft_term),
      static_cast<unsigned long long>(st.commit_index),
      static_cast<unsigned long long>(st.applied_index),
      static_cast<unsigned long long>(st.last_index),
      static_cast<unsigned long long>(st.cluster_time_ms),
      static_cast<unsigned long long>(st.dropped_peer_msgs),
      st.dropped_by_reason.empty() ? "" : " ", st.dropped_by_reason.c_str());
  std::printf(
      "version: %s\ndata_dir: %s\nrevision: %lld\ncompact_revision: %lld\n"
      "log_syncs: %llu\nlog_entries: %llu\nwatchers: %llu\nconnections: %llu\n",
      st.version.c_str(), st.data_dir.c_str(), static_cast<long long>(st.revision),
      static_cast<long long>(st.compact_revision), static_cast<unsigned long long>(st.log_syncs),
      static_cast<unsigned long long>(st.log_entries), static_cast<unsigned long long>(st.watchers),
      static_cast<unsigned long long>(st.connections));
  std::printf(
      "leases_renewing: %llu\nrenew_messages: %llu\nleases_renewed: %llu\n"
      "time_entries: %llu\n",
      static_cast<unsigned long long>(st.leases_renewing),
      static_cast<unsigned long long>(st.renew_messages),
      static_cast<unsigned long long>(st.leases_renewed),
      static_cast<unsigned long long>(st.time_entries));
  if (st.role == "learner" || st.relay_children != 0) {
    std::string path;
    for (auto id : st.upstream_path)
      path += (path.empty() ? "" : " ") + fmt_id(id);
    std::printf(
        "upstream: %s\nupstream_path: %s\nlag_entries: %llu\nlag_ms: %llu\n"
        "relay_children: %llu\n",
        st.upstream ? fmt_id(st.upstream).c_str() : "none", path.c_str(),
        static_cast<unsigned long long>(st.lag_entries), static_cast<unsigned long long>(st.lag_ms),
        static_cast<unsigned long long>(st.relay_children));
  }
  if (with_caller) {
    std::printf("server_thread: %u of %u\n", st.server_thread, st.server_threads);
    std::printf("you: uid %lld pid %lld\n", static_cast<long long>(st.peer_uid),
                static_cast<long long>(st.peer_pid));
  }
}

// ---- range arguments shared by get, del, watch ----------------------------------------
struct RangeArgs {
  std::string key;
  std::string range_end;
  bool prefix = false;
  bool from_key = false;
  bool has_end = false;
};

void add_range_args(CLI::App* cmd, RangeArgs& a, bool from_key) {
  cmd->add_option("key", a.key, "key (bytes)")->required();
  cmd->add_option("range_end", a.range_end, "end of the range [key, range_end)");
  cmd->add_flag("--prefix", a.prefix, "every key with the prefix `key`");
  if (from_key) cmd->add_flag("--from-key", a.from_key, "every key >= key");
}

std::pair<std::string, std::string> resolve_range(CLI::App* cmd, const RangeArgs& a) {
  int modes = (cmd->count("range_end") > 0) + a.prefix + a.from_key;
  if (modes > 1) throw UsageError{"range_end, --prefix and --from-key exclude each other"};
  if (a.prefix) {
    // An empty prefix means every key, as in etcdctl.
    if (a.key.empty()) return {std::string(1, '\0'), std::string(1, '\0')};
    return {a.key, prefix_end(a.key)};
  }
  if (a.from_key) return {a.key.empty() ? std::string(1, '\0') : a.key, std::string(1, '\0')};
  return {a.key, a.range_end};
}

SortTarget parse_sort_target(const std::string& s) {
  std::string u;
  for (char c : s)
    u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (u == "KEY") return SortTarget::key;
  if (u == "VERSION") return SortTarget::version;
  if (u == "CREATE") return SortTarget::create;
  if (u == "MODIFY" || u == "MOD") return SortTarget::mod;
  if (u == "VALUE") return SortTarget::value;
  throw UsageError{"--sort-by must be one of CREATE, KEY, MODIFY, VALUE, VERSION; got " + s};
}

SortOrder parse_order(const std::string& s) {
  std::string u;
  for (char c : s)
    u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (u == "ASCEND") return SortOrder::ascend;
  if (u == "DESCEND") return SortOrder::descend;
  throw UsageError{"--order must be ASCEND or DESCEND; got " + s};
}

// ---- output -----------------------------------------------------------------------------
void print_range(const RangeResponse& r, bool value_only, bool keys_only, bool count_only) {
  if (count_only) {
    std::printf("%lld\n", static_cast<long long>(r.count));
    return;
  }
  for (const auto& kv : r.kvs)
    print_kv(kv, value_only, keys_only);
}

void print_response_op(const ResponseOp& op) {
  if (auto* r = std::get_if<RangeResponse>(&op)) print_range(*r, false, false, false);
  if (auto* p = std::get_if<PutResponse>(&op)) {
    std::puts("OK");
    if (p->prev_kv) print_kv(*p->prev_kv, false, false);
  }
  if (auto* d = std::get_if<DeleteRangeResponse>(&op)) {
    std::printf("%lld\n", static_cast<long long>(d->deleted));
    for (const auto& kv : d->prev_kvs)
      print_kv(kv, false, false);
  }
}

// The reply as JSON, its header as the agent sent it (client::Client::last_header).
template <typename Response, typename Builder>
void print_json(const Response& r, const client::ReplyHeader& h) {
  capnp::MallocMessageBuilder m;
  auto b = m.initRoot<Builder>();
  agent::to_rpc(r, b);
  auto out = b.getHeader();
  out.setMemberId(h.member_id);
  out.setRaftTerm(h.raft_term);
  out.setAppliedIndex(h.applied_index);
  out.setClusterTimeMs(h.cluster_time_ms);
  out.setPossiblyStale(h.possibly_stale);
  std::puts(to_json(b).c_str());
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

// "NAME:TOKEN" (the name may itself hold ':'; the token is after the last one).
Fence parse_fence(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw UsageError{"--fence must be NAME:TOKEN; got " + text};
  try {
    size_t used = 0;
    int64_t token = std::stoll(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) throw std::invalid_argument("trailing");
    return Fence{text.substr(0, colon), token};
  } catch (const std::exception&) {
    throw UsageError{"--fence token must be a number; got " + text.substr(colon + 1)};
  }
}

void print_lease(const client::LeaseInfo& info, bool json, bool keys) {
  if (json) {
    std::string out = "{\"id\":\"" + std::to_string(info.id) + "\",\"ttl_ms\":\"" +
                      std::to_string(info.ttl_ms) + "\",\"remaining_ms\":\"" +
                      std::to_string(info.remaining_ms) + "\",\"keys\":[";
    for (size_t i = 0; i < info.keys.size(); ++i)
      out += (i ? "," : "") + json_string(info.keys[i]);
    out += "],\"locks\":[";
    for (size_t i = 0; i < info.locks.size(); ++i)
      out += (i ? "," : "") + json_string(info.locks[i]);
    std::printf("%s]}\n", out.c_str());
    return;
  }
  std::printf("lease %lld granted with TTL(%llds), remaining(%llds)\n",
              static_cast<long long>(info.id), static_cast<long long>(info.ttl_ms / 1000),
              static_cast<long long>(info.remaining_ms / 1000));
  if (keys) {
    for (const auto& k : info.keys)
      write_bytes(k);
  }
  for (const auto& l : info.locks)
    std::printf("lock %s\n", l.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"keelctl: the command line for keel"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand: keelctl get k -w json
  Globals g;
  app.add_option("--socket", g.socket,
                 "agent socket (env KEEL_SOCKET; default /run/keel/keel.sock if present, "
                 "else ./var/keel.sock)");
  app.add_option("-w,--write-out", g.write_out, "output format: simple or json")
      ->check(CLI::IsMember({"simple", "json"}));

  // put
  auto* put =
      app.add_subcommand("put", "put KEY [VALUE]: store a value (read from stdin if omitted)");
  PutRequest put_req;
  bool have_value = false;
  put->add_option("key", put_req.key)->required();
  put->add_option("value", put_req.value);
  put->add_option("--lease", put_req.lease, "lease id (hex with 0x, or decimal)");
  put->add_flag("--prev-kv", put_req.prev_kv, "print the previous key-value pair");
  put->add_flag("--ignore-value", put_req.ignore_value, "keep the current value");
  put->add_flag("--ignore-lease", put_req.ignore_lease, "keep the current lease");
  std::string put_fence, del_fence;
  put->add_option("--fence", put_fence,
                  "NAME:TOKEN: apply only while TOKEN is lock NAME's current holder's");

  // get
  auto* get = app.add_subcommand("get", "get KEY [RANGE_END]: read keys");
  RangeArgs get_args;
  add_range_args(get, get_args, true);
  RangeRequest get_req;
  std::string sort_by = "KEY", order, consistency = "l";
  bool print_value_only = false;
  get->add_option("--rev", get_req.revision, "read at this revision (0 = current)");
  get->add_option("--limit", get_req.limit, "at most this many keys");
  get->add_option("--sort-by", sort_by, "CREATE, KEY, MODIFY, VALUE or VERSION");
  get->add_option("--order", order, "ASCEND or DESCEND");
  get->add_flag("--keys-only", get_req.keys_only, "keys only, no values");
  get->add_flag("--count-only", get_req.count_only, "only the number of keys");
  get->add_flag("--print-value-only", print_value_only, "values only");
  get->add_option("--consistency", consistency, "l (linearizable) or s (serializable)")
      ->check(CLI::IsMember({"l", "s"}));
  get->add_option("--min-mod-rev", get_req.min_mod_revision, "only keys modified at or after");
  get->add_option("--max-mod-rev", get_req.max_mod_revision, "only keys modified at or before");
  get->add_option("--min-create-rev", get_req.min_create_revision, "only keys created at or after");
  get->add_option("--max-create-rev", get_req.max_create_revision,
                  "only keys created at or before");

  // del
  auto* del = app.add_subcommand("del", "del KEY [RANGE_END]: delete keys");
  RangeArgs del_args;
  add_range_args(del, del_args, true);
  bool del_prev = false;
  del->add_flag("--prev-kv", del_prev, "print the deleted key-value pairs");
  del->add_option("--fence", del_fence, "NAME:TOKEN: as for put");

  // txn
  auto* txn = app.add_subcommand(
      "txn", "txn: read compares, success ops and failure ops from stdin (blank-line separated)");

  // watch
  auto* watch = app.add_subcommand("watch", "watch KEY [RANGE_END]: print changes as they happen");
  RangeArgs watch_args;
  add_range_args(watch, watch_args, false);
  client::WatchOptions wo;
  int64_t max_events = 0;
  watch->add_option("--rev", wo.start_revision, "replay history from this revision");
  watch->add_flag("--prev-kv", wo.prev_kv, "include the previous key-value pair");
  watch->add_flag("--progress-notify", wo.progress_notify, "print progress notifications");
  watch->add_flag("--no-put", wo.no_put, "leave out puts");
  watch->add_flag("--no-delete", wo.no_delete, "leave out deletes");
  watch->add_option("--max-events", max_events, "exit 0 after this many events (0 = never)");

  // compact
  auto* compact = app.add_subcommand("compact", "compact REVISION: drop history below REVISION");
  int64_t compact_rev = 0;
  bool physical = false;
  compact->add_option("revision", compact_rev)->required();
  compact->add_flag("--physical", physical, "return once the history is physically removed");

  // status
  auto* status = app.add_subcommand("status", "status: the agent's state");
  auto* endpoint = app.add_subcommand("endpoint", "endpoint status [--cluster]");
  endpoint->require_subcommand(1);
  auto* endpoint_status = endpoint->add_subcommand("status", "this member's Raft status");
  bool endpoint_cluster = false;
  endpoint_status->add_flag("--cluster", endpoint_cluster, "every member's, asked by this agent");

  // member
  auto* member = app.add_subcommand("member", "member list|add|promote|remove");
  member->require_subcommand(1);
  std::string member_name, member_peer;
  auto* member_list = member->add_subcommand("list", "the members: id, name, peer address, role");
  auto* member_add = member->add_subcommand("add", "add NAME PEER_ADDRESS: add as a learner");
  member_add->add_option("name", member_name)->required();
  member_add->add_option("peer_address", member_peer, "host:port the members dial")->required();
  auto* member_promote = member->add_subcommand("promote", "promote NAME: learner to voter");
  member_promote->add_option("name", member_name)->required();
  auto* member_remove = member->add_subcommand("remove", "remove NAME");
  member_remove->add_option("name", member_name)->required();

  // lease
  auto* lease = app.add_subcommand("lease", "lease grant|revoke|timetolive|list|keep-alive");
  lease->require_subcommand(1);
  int64_t lease_ttl_s = 0, lease_id = 0;
  bool lease_keys = false;
  auto* lease_grant = lease->add_subcommand(
      "grant",
      "grant TTL: a lease of TTL seconds; it ends TTL after keelctl exits, unless renewed "
      "(keep-alive) or revoked");
  lease_grant->add_option("ttl", lease_ttl_s, "seconds")->required();
  auto* lease_revoke = lease->add_subcommand("revoke", "revoke ID: end it now (its keys go)");
  lease_revoke->add_option("id", lease_id)->required();
  auto* lease_ttl = lease->add_subcommand("timetolive", "timetolive ID [--keys]: remaining TTL");
  lease_ttl->add_option("id", lease_id)->required();
  lease_ttl->add_flag("--keys", lease_keys, "list the keys attached to it");
  auto* lease_list = lease->add_subcommand("list", "every lease");
  auto* lease_keep =
      lease->add_subcommand("keep-alive", "keep-alive ID: renew it until interrupted");
  lease_keep->add_option("id", lease_id)->required();

  // lock, unlock, check-fence
  auto* lock = app.add_subcommand(
      "lock",
      "lock NAME [-- CMD ARGS...]: hold a lock and print its fencing token, or run CMD "
      "while it is held (KEEL_LOCK_NAME, KEEL_LOCK_TOKEN set; stopped if the lock is lost)");
  std::string lock_name;
  std::vector<std::string> lock_cmd;
  double lock_ttl_s = 0, lock_timeout_s = 0, lock_delay_s = -1, lock_grace_s = 5;
  int64_t lock_lease = 0;
  bool lock_try = false;
  lock->add_option("name", lock_name)->required();
  lock->add_option("cmd", lock_cmd, "the command, after --");
  lock->add_option("--ttl", lock_ttl_s,
                   "seconds: TTL of the lock's session lease (default lease.default_ttl_ms)");
  lock->add_option("--lease", lock_lease, "hold it with this lease instead of a session lease");
  lock->add_option("--timeout", lock_timeout_s, "seconds to wait for it (0 = no limit)");
  lock->add_flag("--try", lock_try, "do not wait: exit 1 at once if it is held");
  lock->add_option("--delay", lock_delay_s,
                   "seconds of lock-delay after this holder's lease expires (default "
                   "lock.default_delay_ms)");
  lock->add_option("--grace", lock_grace_s,
                   "seconds between SIGTERM and SIGKILL when the lock is lost (default 5)");
  auto* unlock = app.add_subcommand("unlock", "unlock NAME LEASE: release a lock held by LEASE");
  unlock->add_option("name", lock_name)->required();
  unlock->add_option("lease", lock_lease)->required();
  auto* check_fence = app.add_subcommand(
      "check-fence", "check-fence NAME TOKEN: exit 0 if TOKEN is lock NAME's current holder's");
  int64_t fence_token = 0;
  check_fence->add_option("name", lock_name)->required();
  check_fence->add_option("token", fence_token)->required();

  // sem
  auto* sem = app.add_subcommand("sem", "sem acquire|release|holders: semaphores (reboot slots)");
  sem->require_subcommand(1);
  std::string sem_name, sem_id = host_name(), sem_meta;
  int64_t sem_max = 0;
  double sem_ttl_s = 0, sem_timeout_s = 0, sem_grace_s = 5;
  int64_t sem_lease = 0;
  bool sem_try = false;
  std::vector<std::string> sem_cmd;
  auto* sem_acquire = sem->add_subcommand(
      "acquire",
      "acquire NAME --max N [-- CMD ARGS...]: take a slot and hold it (or run CMD "
      "while it is held; KEEL_SEM_NAME, KEEL_SEM_HOLDER set)");
  sem_acquire->add_option("name", sem_name)->required();
  sem_acquire->add_option("cmd", sem_cmd, "the command, after --");
  sem_acquire->add_option("--max", sem_max, "slots (set by the semaphore's first acquirer)")
      ->required();
  sem_acquire->add_option("--id", sem_id, "holder id (default: this host's name)");
  sem_acquire->add_option("--metadata", sem_meta, "shown by sem holders");
  sem_acquire->add_option("--ttl", sem_ttl_s, "seconds: TTL of the slot's session lease");
  sem_acquire->add_option("--lease", sem_lease, "hold it with this lease instead");
  sem_acquire->add_option("--timeout", sem_timeout_s, "seconds to wait for a slot (0 = no limit)");
  sem_acquire->add_flag("--try", sem_try, "do not wait: exit 1 at once if every slot is taken");
  sem_acquire->add_option("--grace", sem_grace_s, "seconds between SIGTERM and SIGKILL");
  auto* sem_release = sem->add_subcommand("release", "release NAME [--id ID]: give up a slot");
  sem_release->add_option("name", sem_name)->required();
  sem_release->add_option("--id", sem_id, "holder id (default: this host's name)");
  auto* sem_holders = sem->add_subcommand("holders", "holders NAME: who holds a slot, who waits");
  sem_holders->add_option("name", sem_name)->required();

  // elect
  auto* elect =
      app.add_subcommand("elect",
                         "elect NAME VALUE: campaign, then lead until interrupted (resign); "
                         "elect --listen NAME: print each leader's value, in order");
  std::string elect_name, elect_value;
  bool elect_listen = false;
  double elect_ttl_s = 0, elect_timeout_s = 0;
  elect->add_option("name", elect_name)->required();
  elect->add_option("value", elect_value);
  elect->add_flag("-l,--listen", elect_listen, "observe the election instead of campaigning");
  elect->add_option("--ttl", elect_ttl_s, "seconds: TTL of the candidate's session lease");
  elect->add_option("--timeout", elect_timeout_s, "seconds to wait for leadership (0 = no limit)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }

  try {
    if (put->parsed()) {
      have_value = put->count("value") > 0;
      if (!have_value && !put_req.ignore_value) {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        put_req.value = ss.str();
      }
      auto c = connect_or_exit(g);
      auto r = put_fence.empty() ? c->put(put_req) : c->put(put_req, parse_fence(put_fence));
      if (!r) return report(r.error());
      if (g.json()) {
        print_json<PutResponse, rpc::PutResponse>(*r, c->last_header());
      } else {
        std::puts("OK");
        if (r->prev_kv) print_kv(*r->prev_kv, false, false);
      }
      return 0;
    }
    if (get->parsed()) {
      std::tie(get_req.key, get_req.range_end) = resolve_range(get, get_args);
      get_req.sort_target = parse_sort_target(sort_by);
      if (!order.empty())
        get_req.sort_order = parse_order(order);
      else if (get->count("--sort-by"))
        get_req.sort_order = SortOrder::ascend;
      get_req.serializable = consistency == "s";
      auto c = connect_or_exit(g);
      bool key_ordered =
          get_req.sort_order != SortOrder::descend &&
          (get_req.sort_target == SortTarget::key || get_req.sort_order == SortOrder::none);
      if (!key_ordered) {
        auto r = c->range(get_req);
        if (!r) return report(r.error());
        if (g.json())
          print_json<RangeResponse, rpc::RangeResponse>(*r, c->last_header());
        else
          print_range(*r, print_value_only, get_req.keys_only, get_req.count_only);
        return 0;
      }
      // Key-ordered: stream page by page, whatever the size of the range.
      bool first = true;
      if (g.json()) std::fputs("{\"kvs\":[", stdout);
      auto r = c->range_all(get_req, [&](const KeyValue& kv) {
        if (g.json()) {
          std::fputs(first ? "" : ",", stdout);
          std::fputs(kv_json(kv).c_str(), stdout);
        } else {
          print_kv(kv, print_value_only, get_req.keys_only);
        }
        first = false;
      });
      if (!r) {
        if (g.json()) std::puts("]}");
        return report(r.error());
      }
      if (g.json()) {
        const auto& h = c->last_header();
        std::printf(
            "],\"header\":{\"revision\":\"%lld\",\"member_id\":\"%llu\",\"raft_term\":\"%llu\","
            "\"applied_index\":\"%llu\",\"cluster_time_ms\":\"%llu\",\"possibly_stale\":%s},"
            "\"more\":%s,\"count\":\"%lld\"}\n",
            static_cast<long long>(r->revision), static_cast<unsigned long long>(h.member_id),
            static_cast<unsigned long long>(h.raft_term),
            static_cast<unsigned long long>(h.applied_index),
            static_cast<unsigned long long>(h.cluster_time_ms), h.possibly_stale ? "true" : "false",
            r->more ? "true" : "false", static_cast<long long>(r->count));
      } else if (get_req.count_only) {
        std::printf("%lld\n", static_cast<long long>(r->count));
      }
      return 0;
    }
    if (del->parsed()) {
      DeleteRangeRequest d;
      std::tie(d.key, d.range_end) = resolve_range(del, del_args);
      d.prev_kv = del_prev;
      auto c = connect_or_exit(g);
      auto r = del_fence.empty() ? c->delete_range(d) : c->delete_range(d, parse_fence(del_fence));
      if (!r) return report(r.error());
      if (g.json())
        print_json<DeleteRangeResponse, rpc::DeleteRangeResponse>(*r, c->last_header());
      else
        print_response_op(*r);
      return 0;
    }
    if (txn->parsed()) {
      auto t = agent::parse_txn(std::cin);
      if (!t) throw UsageError{t.error().message};
      auto c = connect_or_exit(g);
      auto r = c->txn(*t);
      if (!r) return report(r.error());
      if (g.json()) {
        print_json<TxnResponse, rpc::TxnResponse>(*r, c->last_header());
      } else {
        std::puts(r->succeeded ? "SUCCESS" : "FAILURE");
        for (const auto& op : r->responses) {
          std::puts("");
          print_response_op(op);
        }
      }
      return 0;
    }
    if (watch->parsed()) {
      std::tie(wo.key, wo.range_end) = resolve_range(watch, watch_args);
      auto c = connect_or_exit(g);
      int64_t seen = 0;
      auto st = c->watch(
          wo,
          [&](int64_t revision, const std::vector<Event>& events) {
            for (const auto& e : events) {
              if (g.json()) {
                capnp::MallocMessageBuilder m;
                auto b = m.initRoot<rpc::Event>();
                agent::to_rpc(e, b);
                std::printf("{\"revision\":\"%lld\",\"event\":%s}\n",
                            static_cast<long long>(revision), to_json(b).c_str());
              } else {
                std::puts(e.type == EventType::put ? "PUT" : "DELETE");
                if (e.prev_kv) print_kv(*e.prev_kv, false, false);
                print_kv(e.kv, false, e.type == EventType::del);
              }
              if (max_events > 0 && ++seen >= max_events) {
                std::fflush(stdout);
                return false;
              }
            }
            std::fflush(stdout);
            return true;
          },
          [&](int64_t revision) {
            if (g.json())
              std::printf("{\"progress\":{\"revision\":\"%lld\"}}\n",
                          static_cast<long long>(revision));
            else
              std::printf("progress notify: revision %lld\n", static_cast<long long>(revision));
            std::fflush(stdout);
            return true;
          });
      if (!st) return report(st.error());
      return 0;
    }
    if (compact->parsed()) {
      auto c = connect_or_exit(g);
      auto r = c->compact(compact_rev, physical);
      if (!r) return report(r.error());
      if (g.json())
        std::printf("{\"header\":{\"revision\":\"%lld\"}}\n", static_cast<long long>(*r));
      else
        std::printf("compacted revision %lld\n", static_cast<long long>(compact_rev));
      return 0;
    }
    if (status->parsed()) {
      auto c = connect_or_exit(g);
      auto r = c->status();
      if (!r) return report(r.error());
      if (g.json()) {
        std::printf("%s\n", status_json(*r).c_str());
      } else {
        print_status(*r, true);
      }
      return 0;
    }
    if (endpoint_status->parsed()) {
      auto c = connect_or_exit(g);
      std::vector<client::StatusInfo> all;
      if (endpoint_cluster) {
        auto r = c->cluster_status();
        if (!r) return report(r.error());
        all = std::move(r).value();
      } else {
        auto r = c->status();
        if (!r) return report(r.error());
        all.push_back(std::move(r).value());
      }
      int rc = 0;
      if (g.json()) {
        std::string out = "[";
        for (size_t i = 0; i < all.size(); ++i)
          out += (i ? "," : "") + status_json(all[i]);
        std::printf("%s]\n", out.c_str());
      } else {
        std::printf("%-16s %-16s %-10s %-16s %8s %10s %10s %10s\n", "NAME", "ID", "ROLE", "LEADER",
                    "TERM", "COMMIT", "APPLIED", "REVISION");
        for (const auto& st : all) {
          if (st.error) {
            std::printf("%-16s %016llx %s: %s\n", st.name.c_str(),
                        static_cast<unsigned long long>(st.member_id),
                        error_code_name(st.error->code), st.error->message.c_str());
            continue;
          }
          std::printf("%-16s %016llx %-10s %-16s %8llu %10llu %10llu %10lld\n", st.name.c_str(),
                      static_cast<unsigned long long>(st.member_id), st.role.c_str(),
                      st.leader_name.empty() ? "-" : st.leader_name.c_str(),
                      static_cast<unsigned long long>(st.raft_term),
                      static_cast<unsigned long long>(st.commit_index),
                      static_cast<unsigned long long>(st.applied_index),
                      static_cast<long long>(st.revision));
        }
      }
      for (const auto& st : all)
        if (st.error) rc = kExitFailed;
      return rc;
    }
    if (member->parsed()) {
      auto c = connect_or_exit(g);
      Result<std::vector<client::MemberInfo>> r = std::vector<client::MemberInfo>{};
      if (member_list->parsed())
        r = c->member_list();
      else if (member_add->parsed())
        r = c->member_add(member_name, member_peer);
      else if (member_promote->parsed())
        r = c->member_promote(member_name);
      else if (member_remove->parsed())
        r = c->member_remove(member_name);
      if (!r) return report(r.error());
      if (g.json()) {
        std::string out = "{\"members\":[";
        for (size_t i = 0; i < r->size(); ++i) {
          const auto& m = (*r)[i];
          out += std::string(i ? "," : "") + "{\"id\":\"" + std::to_string(m.id) +
                 "\",\"name\":" + json_string(m.name) +
                 ",\"peer_address\":" + json_string(m.peer_address) +
                 ",\"learner\":" + (m.learner ? "true" : "false") + ",\"relay_parent\":\"" +
                 std::to_string(m.relay_parent) + "\",\"applied_index\":\"" +
                 std::to_string(m.applied_index) + "\"}";
        }
        std::printf("%s]}\n", out.c_str());
      } else {
        for (const auto& m : *r) {
          if (m.relay_parent != 0) {  // a learner agent, fed by the relay tree
            std::printf("%016llx, %s, %s, learner, fed by %016llx, applied %llu\n",
                        static_cast<unsigned long long>(m.id), m.name.c_str(),
                        m.peer_address.c_str(), static_cast<unsigned long long>(m.relay_parent),
                        static_cast<unsigned long long>(m.applied_index));
            continue;
          }
          std::printf("%016llx, %s, %s, %s\n", static_cast<unsigned long long>(m.id),
                      m.name.c_str(), m.peer_address.c_str(), m.learner ? "learner" : "voter");
        }
      }
      return 0;
    }
    if (lease->parsed()) {
      auto c = connect_or_exit(g);
      if (lease_grant->parsed()) {
        auto l = c->lease_grant(lease_ttl_s * 1000, /*keep=*/true);
        if (!l) return report(l.error());
        if (g.json())
          std::printf("{\"id\":\"%lld\",\"ttl_ms\":\"%lld\"}\n", static_cast<long long>((*l)->id()),
                      static_cast<long long>((*l)->ttl_ms()));
        else
          std::printf("lease %lld granted with TTL(%llds)\n", static_cast<long long>((*l)->id()),
                      static_cast<long long>((*l)->ttl_ms() / 1000));
        return 0;
      }
      if (lease_revoke->parsed()) {
        if (auto st = c->lease_revoke(lease_id); !st) return report(st.error());
        if (g.json())
          std::printf("{\"id\":\"%lld\",\"revoked\":true}\n", static_cast<long long>(lease_id));
        else
          std::printf("lease %lld revoked\n", static_cast<long long>(lease_id));
        return 0;
      }
      if (lease_ttl->parsed()) {
        auto info = c->lease_time_to_live(lease_id, lease_keys);
        if (!info) return report(info.error());
        print_lease(*info, g.json(), lease_keys);
        return 0;
      }
      if (lease_list->parsed()) {
        auto ids = c->lease_list();
        if (!ids) return report(ids.error());
        if (g.json()) {
          std::string out = "{\"leases\":[";
          for (size_t i = 0; i < ids->size(); ++i)
            out += std::string(i ? "," : "") + "\"" + std::to_string((*ids)[i]) + "\"";
          std::printf("%s]}\n", out.c_str());
        } else {
          std::printf("found %zu leases\n", ids->size());
          for (int64_t id : *ids)
            std::printf("%lld\n", static_cast<long long>(id));
        }
        return 0;
      }
      if (lease_keep->parsed()) {
        auto l = c->lease_keep_alive(lease_id);
        if (!l) return report(l.error());
        std::printf("lease %lld kept alive with TTL(%llds)\n", static_cast<long long>(lease_id),
                    static_cast<long long>((*l)->ttl_ms() / 1000));
        std::fflush(stdout);
        // Renewed by the agent until interrupted (the default SIGINT ends the process).
        for (;;) {
          auto ended = (*l)->wait_ended(1000);
          if (!ended) return report(ended.error());
          if (*ended) {
            std::fprintf(stderr, "Error: lease %lld has ended\n", static_cast<long long>(lease_id));
            return kExitFailed;
          }
        }
      }
    }
    if (lock->parsed()) {
      client::LockOptions lo;
      lo.lease = lock_lease;
      lo.ttl_ms = static_cast<int64_t>(lock_ttl_s * 1000);
      lo.wait = !lock_try;
      lo.timeout_ms = static_cast<int64_t>(lock_timeout_s * 1000);
      lo.delay_ms = lock_delay_s < 0 ? -1 : static_cast<int64_t>(lock_delay_s * 1000);
      client::RunOptions ro;
      ro.grace_ms = static_cast<int64_t>(lock_grace_s * 1000);
      auto c = connect_or_exit(g);
      auto h = c->lock(lock_name, lo);
      if (!h) return report(h.error());
      if (!*h) {
        std::fprintf(stderr, "Error: lock '%s' is held by another holder\n", lock_name.c_str());
        return kExitFailed;
      }
      if (lock_cmd.empty()) {
        if (g.json())
          std::printf("{\"name\":%s,\"token\":\"%lld\",\"lease\":\"%lld\"}\n",
                      json_string(lock_name).c_str(), static_cast<long long>((*h)->token()),
                      static_cast<long long>((*h)->lease()));
        else
          std::printf("%s token=%lld lease=%lld\n", lock_name.c_str(),
                      static_cast<long long>((*h)->token()), static_cast<long long>((*h)->lease()));
        std::fflush(stdout);
      }
      return client::run_locked(client::holding(**h), lock_cmd, ro);
    }
    if (sem->parsed()) {
      auto c = connect_or_exit(g);
      if (sem_acquire->parsed()) {
        client::SemOptions so;
        so.max = sem_max;
        so.holder_id = sem_id;
        so.metadata = sem_meta;
        so.lease = sem_lease;
        so.ttl_ms = static_cast<int64_t>(sem_ttl_s * 1000);
        so.wait = !sem_try;
        so.timeout_ms = static_cast<int64_t>(sem_timeout_s * 1000);
        auto h = c->sem_acquire(sem_name, so);
        if (!h) return report(h.error());
        if (!*h) {
          std::fprintf(stderr, "Error: every slot of semaphore '%s' is taken\n", sem_name.c_str());
          return kExitFailed;
        }
        if (sem_cmd.empty()) {
          if (g.json())
            std::printf("{\"name\":%s,\"holder_id\":%s,\"lease\":\"%lld\"}\n",
                        json_string(sem_name).c_str(), json_string(sem_id).c_str(),
                        static_cast<long long>((*h)->lease()));
          else
            std::printf("%s holder=%s lease=%lld\n", sem_name.c_str(), sem_id.c_str(),
                        static_cast<long long>((*h)->lease()));
          std::fflush(stdout);
        }
        client::RunOptions ro;
        ro.grace_ms = static_cast<int64_t>(sem_grace_s * 1000);
        return client::run_locked(client::holding(**h), sem_cmd, ro);
      }
      if (sem_release->parsed()) {
        if (auto st = c->sem_release(sem_name, sem_id); !st) return report(st.error());
        if (!g.json()) std::printf("released %s (holder %s)\n", sem_name.c_str(), sem_id.c_str());
        return 0;
      }
      auto r = c->sem_holders(sem_name);
      if (!r) return report(r.error());
      auto row_json = [](const client::SemHolderInfo& h) {
        return "{\"holder_id\":" + json_string(h.holder_id) + ",\"lease\":\"" +
               std::to_string(h.lease) + "\",\"since_ms\":\"" + std::to_string(h.since_ms) +
               "\",\"metadata\":" + json_string(h.metadata) + "}";
      };
      if (g.json()) {
        std::string out = "{\"max\":\"" + std::to_string(r->max) + "\",\"holders\":[";
        for (size_t i = 0; i < r->holders.size(); ++i)
          out += (i ? "," : "") + row_json(r->holders[i]);
        out += "],\"waiters\":[";
        for (size_t i = 0; i < r->waiters.size(); ++i)
          out += (i ? "," : "") + row_json(r->waiters[i]);
        std::printf("%s]}\n", out.c_str());
      } else {
        std::printf("max %lld, %zu held, %zu waiting\n", static_cast<long long>(r->max),
                    r->holders.size(), r->waiters.size());
        for (const auto& h : r->holders)
          std::printf("holder %s lease %lld since %llu ms %s\n", h.holder_id.c_str(),
                      static_cast<long long>(h.lease), static_cast<unsigned long long>(h.since_ms),
                      h.metadata.c_str());
        for (const auto& h : r->waiters)
          std::printf("waiter %s lease %lld\n", h.holder_id.c_str(),
                      static_cast<long long>(h.lease));
      }
      return 0;
    }
    if (elect->parsed()) {
      auto c = connect_or_exit(g);
      auto print = [&](const std::string& key, const std::string& value) {
        if (g.json()) {
          std::printf("{\"key\":%s,\"value\":%s}\n", json_string(key).c_str(),
                      json_string(value).c_str());
        } else {
          write_bytes(key);
          write_bytes(value);
        }
        std::fflush(stdout);
      };
      if (elect_listen) {
        // Observe: the leader now, then every value a leader publishes, in order.
        auto st = c->observe(elect_name, [&](const std::string& key, const std::string& value) {
          print(key, value);
          return true;
        });
        if (!st) return report(st.error());
        return 0;
      }
      if (elect->count("value") == 0) throw UsageError{"elect NAME VALUE (or --listen NAME)"};
      client::CampaignOptions co;
      co.ttl_ms = static_cast<int64_t>(elect_ttl_s * 1000);
      co.timeout_ms = static_cast<int64_t>(elect_timeout_s * 1000);
      auto l = c->campaign(elect_name, elect_value, co);
      if (!l) return report(l.error());
      print((*l)->key().key, elect_value);
      client::Holding held{"leadership of '" + elect_name + "'", {}, [&l](int64_t ms) {
                             return (*l)->wait_lost(ms);
                           }};
      int rc = client::run_locked(held, {}, client::RunOptions{});
      if (rc == 0) (void)(*l)->resign();
      return rc;
    }
    if (unlock->parsed()) {
      auto c = connect_or_exit(g);
      if (auto st = c->unlock(lock_name, lock_lease); !st) return report(st.error());
      if (!g.json()) std::printf("unlocked %s\n", lock_name.c_str());
      return 0;
    }
    if (check_fence->parsed()) {
      auto c = connect_or_exit(g);
      auto r = c->check_fence(lock_name, fence_token);
      if (!r) return report(r.error());
      if (g.json())
        std::printf("{\"valid\":%s,\"current_token\":\"%lld\"}\n", r->valid ? "true" : "false",
                    static_cast<long long>(r->current_token));
      else
        std::printf("%s (current token %lld)\n", r->valid ? "valid" : "stale",
                    static_cast<long long>(r->current_token));
      return r->valid ? 0 : kExitFailed;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "Error: %s\n", e.message.c_str());
    return kExitUsage;
  }
  return kExitUsage;
}
