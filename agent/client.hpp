#pragma once
// The C++ client library: a synchronous connection to the local agent's Unix socket. A
// Client belongs to the thread that created it; the Clients of one thread share that
// thread's KJ event loop.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/model/kv_types.hpp"

namespace keel::client {

struct StatusInfo {
  int64_t revision = 0;
  int64_t compact_revision = 0;
  uint64_t applied_index = 0;
  uint64_t log_syncs = 0;
  uint64_t log_entries = 0;
  uint64_t watchers = 0;
  uint64_t connections = 0;
  int64_t peer_uid = -1;
  int64_t peer_pid = -1;
  std::string version;
  std::string data_dir;
  // Raft, as that member sees it.
  uint64_t member_id = 0;
  std::string name;
  std::string role;
  uint64_t leader = 0;
  std::string leader_name;
  uint64_t raft_term = 0;
  uint64_t commit_index = 0;
  uint64_t last_index = 0;
  uint64_t cluster_id = 0;
  uint64_t cluster_time_ms = 0;    // leader-stamped cluster time as of applied_index
  uint64_t dropped_peer_msgs = 0;  // peer messages the Raft core refused
  std::string dropped_by_reason;
  uint64_t leases_renewing = 0;  // leases this agent renews
  uint64_t renew_messages = 0;   // batched renewal entries it proposed since start
  uint64_t leases_renewed = 0;   // renewals they carried
  uint64_t time_entries = 0;     // time entries it appended as leader
  // The relay tree (learner agents): parent (0 = none), path to a voter, lag, children fed.
  uint64_t upstream = 0;
  std::vector<uint64_t> upstream_path;
  uint64_t lag_entries = 0;
  uint64_t lag_ms = 0;
  uint64_t relay_children = 0;
  uint32_t server_thread = 0;   // the agent's thread serving this connection
  uint32_t server_threads = 0;  // of how many (server.threads)
  std::optional<Error> error;   // cluster_status(): the member did not answer
};

struct MemberInfo {
  uint64_t id = 0;
  std::string name;
  std::string peer_address;
  bool learner = false;        // a Raft learner, or a learner agent (relay_parent set)
  uint64_t relay_parent = 0;   // learner agents: the agent that feeds it
  uint64_t applied_index = 0;  // learner agents: as last reported up the tree
};

struct WatchOptions {
  std::string key;
  std::string range_end;
  int64_t start_revision = 0;
  bool prev_kv = false;
  bool no_put = false;
  bool no_delete = false;
  bool progress_notify = false;
};

// Called for each delivered batch; header_revision = every event up to it was delivered.
// Return false to end the watch.
using EventsFn = std::function<bool(int64_t header_revision, const std::vector<storage::Event>&)>;
using ProgressFn = std::function<bool(int64_t header_revision)>;

struct LeaseInfo {
  int64_t id = 0;
  int64_t ttl_ms = 0;
  int64_t remaining_ms = 0;  // as of the agent's replica (cluster time)
  std::vector<std::string> keys;
  std::vector<std::string> locks;
};

class Client;

// A lease this client holds: the agent renews it while this object lives. Destroying it (or
// the process dying) revokes a session lease at once; a kept one then ends after its TTL.
// Must not outlive its Client; same thread.
class Lease {
 public:
  ~Lease();
  int64_t id() const { return id_; }
  int64_t ttl_ms() const { return ttl_ms_; }
  Result<LeaseInfo> info(bool keys);
  Status revoke();
  // Runs the event loop up to timeout_ms; true once the lease has ended.
  Result<bool> wait_ended(int64_t timeout_ms);

  struct Impl;
  Lease(std::unique_ptr<Impl> impl, int64_t id, int64_t ttl_ms);

 private:
  std::unique_ptr<Impl> impl_;
  int64_t id_;
  int64_t ttl_ms_;
};

struct LockOptions {
  int64_t lease = 0;       // 0: the agent grants a session lease of ttl_ms for this lock
  int64_t ttl_ms = 0;      // 0: the agent's lease.default_ttl_ms
  bool wait = true;        // false: tryLock
  int64_t timeout_ms = 0;  // with wait: give up after this long (error timeout); 0 = never
  int64_t delay_ms = -1;   // lock-delay after this holder's lease expires; -1 = agent default
};

// A held lock. Destroying it unlocks (and revokes its own session lease). Must not outlive
// its Client; same thread.
class LockHandle {
 public:
  ~LockHandle();
  const std::string& name() const { return name_; }
  int64_t token() const { return token_; }
  int64_t lease() const { return lease_; }
  Status unlock();
  // Runs the event loop up to timeout_ms; true once this holder has lost the lock.
  Result<bool> wait_lost(int64_t timeout_ms);

  struct Impl;
  LockHandle(std::unique_ptr<Impl> impl, std::string name, int64_t token, int64_t lease);

 private:
  std::unique_ptr<Impl> impl_;
  std::string name_;
  int64_t token_;
  int64_t lease_;
};

struct SemOptions {
  int64_t max = 0;        // slots; the semaphore's first acquirer sets it
  std::string holder_id;  // who holds the slot; the same id asking again gets it back
  std::string metadata;   // shown by sem_holders
  int64_t lease = 0;      // 0: the agent grants a session lease of ttl_ms for this slot
  int64_t ttl_ms = 0;     // 0: the agent's lease.default_ttl_ms
  bool wait = true;
  int64_t timeout_ms = 0;  // with wait: give up after this long (error timeout); 0 = never
};

// A held semaphore slot. Destroying it releases the slot (and revokes its own session
// lease). Must not outlive its Client; same thread.
class SemHandle {
 public:
  ~SemHandle();
  const std::string& name() const { return name_; }
  const std::string& holder_id() const { return holder_id_; }
  int64_t lease() const { return lease_; }
  Status release();
  Result<bool> wait_lost(int64_t timeout_ms);

  struct Impl;
  SemHandle(std::unique_ptr<Impl> impl, std::string name, std::string holder_id, int64_t lease);

 private:
  std::unique_ptr<Impl> impl_;
  std::string name_;
  std::string holder_id_;
  int64_t lease_;
};

struct SemHolderInfo {
  std::string holder_id;
  int64_t lease = 0;
  uint64_t since_ms = 0;  // cluster time
  std::string metadata;
};
struct SemInfo {
  int64_t max = 0;  // 0: nobody holds or waits for it
  std::vector<SemHolderInfo> holders;
  std::vector<SemHolderInfo> waiters;
};

struct LeaderKey {
  std::string name;
  std::string key;  // name + "/" + hex(lease): holds the leader's value
  int64_t revision = 0;
  int64_t lease = 0;
};

// Leadership won by Client::campaign. Destroying it resigns. Must not outlive its Client.
class Leadership {
 public:
  ~Leadership();
  const LeaderKey& key() const { return key_; }
  Result<int64_t> proclaim(const std::string& value);  // the put's revision
  Status resign();
  Result<bool> wait_lost(int64_t timeout_ms);

  struct Impl;
  Leadership(std::unique_ptr<Impl> impl, LeaderKey key);

 private:
  std::unique_ptr<Impl> impl_;
  LeaderKey key_;
};

struct CampaignOptions {
  int64_t lease = 0;   // 0: a session lease of ttl_ms bound to the Leadership
  int64_t ttl_ms = 0;  // 0: the agent's lease.default_ttl_ms
  int64_t timeout_ms = 0;
};

struct FenceCheck {
  bool valid = false;
  int64_t current_token = 0;  // 0 = the lock is not held
};

// The header of the last Range, Put, DeleteRange or Txn reply: which replica served it and
// how current it was (possibly_stale: a serializable read from an agent with no current
// upstream, e.g. a learner cut off from the voters).
struct ReplyHeader {
  int64_t revision = 0;
  uint64_t member_id = 0;
  uint64_t raft_term = 0;
  uint64_t applied_index = 0;
  uint64_t cluster_time_ms = 0;
  bool possibly_stale = false;
};

class Client {
 public:
  // Errors: internal with "cannot connect to keeld at PATH: ..." when nothing serves there.
  static Result<std::unique_ptr<Client>> connect(const std::string& socket_path);
  ~Client();

  const ReplyHeader& last_header() const;

  // One page, as the agent returns it (see RangeResponse::continue_key).
  Result<storage::RangeResponse> range(const storage::RangeRequest& request,
                                       bool skip_count = false);
  // Every page of a key-ordered range at one revision: calls `page` per page, so memory
  // stays at one page whatever the size of the range. Returns the first page's response
  // with no kvs (revision, count, more as for the whole range).
  Result<storage::RangeResponse> range_all(const storage::RangeRequest& request,
                                           const std::function<void(const storage::KeyValue&)>& kv);
  Result<storage::PutResponse> put(const storage::PutRequest& request);
  Result<storage::DeleteRangeResponse> delete_range(const storage::DeleteRangeRequest& request);
  Result<storage::TxnResponse> txn(const storage::TxnRequest& request);
  // Fenced writes: applied only while `fence.token` is the lock's current holder's token.
  Result<storage::PutResponse> put(const storage::PutRequest& request, const storage::Fence& fence);
  Result<storage::DeleteRangeResponse> delete_range(const storage::DeleteRangeRequest& request,
                                                    const storage::Fence& fence);

  // ---- leases and locks (README "Leases and locks") ----
  // keep = false: a session lease, revoked when the Lease is destroyed or this client dies.
  Result<std::unique_ptr<Lease>> lease_grant(int64_t ttl_ms, bool keep = false);
  Status lease_revoke(int64_t id);
  Result<LeaseInfo> lease_time_to_live(int64_t id, bool keys);
  Result<std::vector<int64_t>> lease_list();
  // Renews an existing lease while the returned Lease lives (destroying it does not revoke).
  Result<std::unique_ptr<Lease>> lease_keep_alive(int64_t id);
  // The handle, or nullptr when a tryLock (wait = false) found the lock held.
  Result<std::unique_ptr<LockHandle>> lock(const std::string& name, const LockOptions& options);
  Status unlock(const std::string& name, int64_t lease);
  Result<FenceCheck> check_fence(const std::string& name, int64_t token);
  // The handle, or nullptr when wait = false and every slot is taken.
  Result<std::unique_ptr<SemHandle>> sem_acquire(const std::string& name,
                                                 const SemOptions& options);
  Status sem_release(const std::string& name, const std::string& holder_id);
  Result<SemInfo> sem_holders(const std::string& name);
  // Elections (etcd's v3election): blocks until this candidate leads (or timeout).
  Result<std::unique_ptr<Leadership>> campaign(const std::string& name, const std::string& value,
                                               const CampaignOptions& options);
  // The current leader and its value; key_not_found when there is none.
  Result<std::pair<LeaderKey, std::string>> leader(const std::string& name);
  // Observes an election: calls `on_leader(key, value)` for the leader now (if any), then
  // for each value a leader publishes (a new leader, or a proclaim), once each, in order,
  // until it returns false (ok) or the watch ends with an error.
  Status observe(
      const std::string& name,
      const std::function<bool(const std::string& key, const std::string& value)>& on_leader);
  Result<int64_t> compact(int64_t revision, bool physical);  // returns the header revision
  Result<StatusInfo> status();
  // Every member's status, this member's first (an unreachable member has `error` set).
  Result<std::vector<StatusInfo>> cluster_status();
  Result<std::vector<MemberInfo>> member_list();
  Result<std::vector<MemberInfo>> member_add(const std::string& name,
                                             const std::string& peer_address);
  Result<std::vector<MemberInfo>> member_promote(const std::string& name);
  Result<std::vector<MemberInfo>> member_remove(const std::string& name);
  // Blocks, delivering events until `on_events` or `on_progress` returns false (ok) or the
  // agent cancels the watch (its error, e.g. compacted with compact_revision).
  Status watch(const WatchOptions& options, const EventsFn& on_events,
               const ProgressFn& on_progress = nullptr);

  struct Impl;

 private:
  friend class Lease;
  friend class LockHandle;
  friend class SemHandle;
  friend class Leadership;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::client
