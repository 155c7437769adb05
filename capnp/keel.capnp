@0xea3e31998c0dcef6;
# keel's client API: what local programs speak to their host's agent over the Unix socket.
# Field names follow etcd v3 (JSON names are etcdctl's), so etcd users find what they know.
# Expected failures come back as `error` in the results (never as an exception); an exception
# means a bug or a broken connection.

using Cxx = import "/capnp/c++.capnp";
using Json = import "/capnp/compat/json.capnp";
$Cxx.namespace("keel::rpc");

struct KeyValue {
  key @0 :Data $Json.base64;
  value @1 :Data $Json.base64;
  createRevision @2 :Int64 $Json.name("create_revision");
  modRevision @3 :Int64 $Json.name("mod_revision");
  version @4 :Int64;
  lease @5 :Int64;
}

struct ResponseHeader {
  revision @0 :Int64;     # store revision the reply reflects
  memberId @1 :UInt64 $Json.name("member_id");
  raftTerm @2 :UInt64 $Json.name("raft_term");
  # Range and write replies: the replica that served it, as of the reply. possiblyStale: a
  # serializable read from an agent that knows no current upstream (a learner cut off from
  # the voters, or a member without a leader); appliedIndex and clusterTimeMs say how old.
  appliedIndex @3 :UInt64 $Json.name("applied_index");
  clusterTimeMs @4 :UInt64 $Json.name("cluster_time_ms");
  possiblyStale @5 :Bool $Json.name("possibly_stale");
}

enum ErrorCode {
  ok @0;
  invalidArgument @1;
  emptyKey @2;
  keyTooLarge @3;
  valueTooLarge @4;
  requestTooLarge @5;
  tooManyOps @6;
  duplicateKey @7;
  rangeEndBeforeKey @8;
  compacted @9;
  futureRevision @10;
  leaseNotFound @11;
  tooManyWatchers @12;
  notLeader @13;
  timeout @14;
  shuttingDown @15;
  permissionDenied @16;
  internal @17;
  keyNotFound @18;
  unavailable @19;
  overloaded @20;
  outcomeUnknown @21;
  removed @22;
  fenced @23;
  lockNotHeld @24;
  ttlOutOfRange @25;
  tooManyLeases @26;
  leaseExists @27;
  semaphoreMaxMismatch @28;
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;                 # human-readable; names the field or limit at fault
  compactRevision @2 :Int64 $Json.name("compact_revision");  # with `compacted`
  currentRevision @3 :Int64 $Json.name("current_revision");  # with `futureRevision`
}

# A fencing token (Chubby's sequencer): the write applies only while `token` is the current
# holder's token of lock `lock`, else error `fenced`. An empty lock = no fence.
struct Fence {
  lock @0 :Data;
  token @1 :Int64;
}

enum SortOrder { none @0; ascend @1; descend @2; }
enum SortTarget { key @0; version @1; create @2; mod @3; value @4; }

# Ranges follow etcd: rangeEnd empty = the key alone; rangeEnd = one zero byte = all keys
# >= key; otherwise [key, rangeEnd).
struct RangeRequest {
  key @0 :Data;
  rangeEnd @1 :Data;
  revision @2 :Int64;              # 0 = current
  limit @3 :Int64;                 # 0 = none
  sortOrder @4 :SortOrder;
  sortTarget @5 :SortTarget;
  keysOnly @6 :Bool;
  countOnly @7 :Bool;
  minModRevision @8 :Int64;
  maxModRevision @9 :Int64;
  minCreateRevision @10 :Int64;
  maxCreateRevision @11 :Int64;
  serializable @12 :Bool;          # local read; may be stale in a cluster
  skipCount @13 :Bool;             # continuation pages: do not count the range again
}

struct RangeResponse {
  header @0 :ResponseHeader;
  kvs @1 :List(KeyValue);
  more @2 :Bool;
  count @3 :Int64;
  # Non-empty when the reply reached the page size (limits.max_response_bytes): ask again with
  # key = continueKey, the same rangeEnd, revision = header.revision, skipCount = true.
  continueKey @4 :Data $Json.base64 $Json.name("continue_key");
}

struct PutRequest {
  key @0 :Data;
  value @1 :Data;
  lease @2 :Int64;
  prevKv @3 :Bool;
  ignoreValue @4 :Bool;
  ignoreLease @5 :Bool;
  fence @6 :Fence;                 # optional: applies only while this token holds the lock
}
struct PutResponse {
  header @0 :ResponseHeader;
  prevKv @1 :KeyValue $Json.name("prev_kv");   # set when requested and the key existed
}

struct DeleteRangeRequest {
  key @0 :Data;
  rangeEnd @1 :Data;
  prevKv @2 :Bool;
  fence @3 :Fence;
}
struct DeleteRangeResponse {
  header @0 :ResponseHeader;
  deleted @1 :Int64;
  prevKvs @2 :List(KeyValue) $Json.name("prev_kvs");
}

enum CompareTarget { version @0; create @1; mod @2; value @3; lease @4; }
enum CompareResult { equal @0; notEqual @1; less @2; greater @3; }

# Holds for a range when it holds for every key in it. A missing key has version, create,
# mod and lease 0; a value compare on a missing key is false.
struct Compare {
  result @0 :CompareResult;
  target @1 :CompareTarget;
  key @2 :Data;
  rangeEnd @3 :Data;
  number @4 :Int64;                # version, create, mod or lease
  value @5 :Data;                  # value
}

struct RequestOp {
  union {
    range @0 :RangeRequest;
    put @1 :PutRequest;
    deleteRange @2 :DeleteRangeRequest;
  }
}
struct ResponseOp {
  union {
    range @0 :RangeResponse;
    put @1 :PutResponse;
    deleteRange @2 :DeleteRangeResponse;
  }
}

struct TxnRequest {
  compare @0 :List(Compare);
  success @1 :List(RequestOp);
  failure @2 :List(RequestOp);
  fences @3 :List(Fence);          # all must hold, else the txn fails with `fenced`
}
struct TxnResponse {
  header @0 :ResponseHeader;
  succeeded @1 :Bool;
  responses @2 :List(ResponseOp);
}

struct CompactRequest {
  revision @0 :Int64;
  physical @1 :Bool;               # reply only once the history is physically removed
}
struct CompactResponse {
  header @0 :ResponseHeader;
}

struct WatchRequest {
  key @0 :Data;
  rangeEnd @1 :Data;
  startRevision @2 :Int64;         # 0 = changes after the current revision
  prevKv @3 :Bool;
  noPut @4 :Bool;
  noDelete @5 :Bool;
  progressNotify @6 :Bool;         # periodic progress() while idle (watch.progress_interval_ms)
}

enum EventType { put @0; delete @1; }
struct Event {
  type @0 :EventType;
  kv @1 :KeyValue;                 # for a delete: key and modRevision (= the delete's revision)
  prevKv @2 :KeyValue $Json.name("prev_kv");
}

# Implemented by the client. Events arrive in revision order, each exactly once, whole
# revisions per call; the stream is flow-controlled, so a slow client slows its own watch and
# never grows the agent's memory.
interface Watcher {
  events @0 (header :ResponseHeader, events :List(Event)) -> stream;
  # Every event up to header.revision has been delivered.
  progress @1 (header :ResponseHeader) -> stream;
  # The watch ended (compacted while behind, agent shutting down). Resume from the revision
  # after the last event received with a new watch.
  canceled @2 (error :Error);
}

# Dropping the handle cancels the watch.
interface WatchHandle {
  cancel @0 ();
  requestProgress @1 ();
}

struct Status {
  header @0 :ResponseHeader;
  version @1 :Text;
  dataDir @2 :Text $Json.name("data_dir");
  compactRevision @3 :Int64 $Json.name("compact_revision");
  appliedIndex @4 :UInt64 $Json.name("applied_index");
  logSyncs @5 :UInt64 $Json.name("log_syncs");          # fsyncs of the log since start
  logEntries @6 :UInt64 $Json.name("log_entries");      # log entries written since start
  watchers @7 :UInt64;
  connections @8 :UInt64;
  peerUid @9 :Int64 $Json.name("peer_uid");             # the caller, from SO_PEERCRED; -1 unknown
  peerPid @10 :Int64 $Json.name("peer_pid");
  # Raft, as this member sees it.
  memberId @11 :UInt64 $Json.name("member_id");
  name @12 :Text;
  role @13 :Text;                                       # leader follower candidate learner removed ...
  leader @14 :UInt64;                                   # member id; 0 = none known
  raftTerm @15 :UInt64 $Json.name("raft_term");
  commitIndex @16 :UInt64 $Json.name("commit_index");
  lastIndex @17 :UInt64 $Json.name("last_index");
  clusterId @18 :UInt64 $Json.name("cluster_id");
  leaderName @19 :Text $Json.name("leader_name");
  error @20 :Error;                                     # clusterStatus: this member did not answer
  clusterTimeMs @21 :UInt64 $Json.name("cluster_time_ms");  # cluster time as of applied_index
  droppedPeerMsgs @22 :UInt64 $Json.name("dropped_peer_msgs");  # refused by the Raft core
  droppedByReason @23 :Text $Json.name("dropped_by_reason");    # "reason=count ..."
  # This agent's lease renewal (one batched message per lease.renew_tick_ms when any is due).
  leasesRenewing @24 :UInt64 $Json.name("leases_renewing");     # leases it renews now
  renewMessages @25 :UInt64 $Json.name("renew_messages");       # renewal entries it proposed
  leasesRenewed @26 :UInt64 $Json.name("leases_renewed");       # lease renewals they carried
  timeEntries @27 :UInt64 $Json.name("time_entries");           # time entries it appended as leader
  # The relay tree (README "Learners"): a learner agent's parent (0 = none: detached) and its
  # path to a voter (parent first), its lag behind what its parent knows is committed, and
  # how many learners this agent feeds.
  upstream @28 :UInt64;
  upstreamPath @29 :List(UInt64) $Json.name("upstream_path");
  lagEntries @30 :UInt64 $Json.name("lag_entries");
  lagMs @31 :UInt64 $Json.name("lag_ms");
  relayChildren @32 :UInt64 $Json.name("relay_children");
  # The server thread serving this connection (0-based) of how many (server.threads).
  serverThread @33 :UInt32 $Json.name("server_thread");
  serverThreads @34 :UInt32 $Json.name("server_threads");
}

struct Member {
  id @0 :UInt64;
  name @1 :Text;
  peerAddress @2 :Text $Json.name("peer_address");
  learner @3 :Bool;                                   # a Raft learner, or a learner agent
  relayParent @4 :UInt64 $Json.name("relay_parent");  # learner agents: who feeds it
  appliedIndex @5 :UInt64 $Json.name("applied_index"); # learner agents: as last reported
}

# ---- leases and locks (times in cluster time: README "Leases and locks") ----

struct LeaseInfo {
  id @0 :Int64;
  ttlMs @1 :Int64 $Json.name("ttl_ms");
  remainingMs @2 :Int64 $Json.name("remaining_ms");   # as of the replica's cluster time
  keys @3 :List(Data);                                 # with keys = true
  locks @4 :List(Data);                                # locks it holds or waits for
}

# A lease the agent renews while this capability is held (one batched renewal per agent per
# interval). Dropping it, or the connection closing: a session lease is revoked at once; a
# kept lease (keep = true at grant, or leaseKeepAlive) just stops being renewed and ends
# after its TTL.
interface Lease {
  info @0 (keys :Bool) -> (info :LeaseInfo, error :Error);
  revoke @1 () -> (error :Error);
  # Resolves when the lease has ended (revoked, expired, or a renewal found it gone).
  ended @2 () -> (error :Error);
}

# A held lock. Dropping it unlocks (and revokes the lock's own session lease, if the agent
# granted one for it).
interface LockHandle {
  unlock @0 () -> (error :Error);
  # Resolves when this holder has lost the lock (its lease ended, or it was unlocked).
  lost @1 () -> (error :Error);
}

struct SemHolder {
  holderId @0 :Text $Json.name("holder_id");
  leaseId @1 :Int64 $Json.name("lease_id");
  sinceMs @2 :UInt64 $Json.name("since_ms");   # cluster time it took the slot (or queued)
  metadata @3 :Data;
}

# A held semaphore slot. Dropping it releases the slot (and revokes its own session lease,
# if the agent granted one for it).
interface SemHandle {
  release @0 () -> (error :Error);
  # Resolves when this holder has lost the slot (its lease ended, or it was released).
  lost @1 () -> (error :Error);
}

# An election's leader (etcd's v3election LeaderKey): `key` is name + "/" + the lease id in
# hex, holding the leader's value, attached to its lease; `revision` is its put's.
struct LeaderKey {
  name @0 :Data;
  key @1 :Data;
  revision @2 :Int64;
  lease @3 :Int64;
}

# Leadership won by campaign. Dropping it resigns (and revokes its own session lease).
interface Leadership {
  # Sets a new value while still the leader (fenced: refused once leadership is lost).
  proclaim @0 (value :Data) -> (revision :Int64, error :Error);
  resign @1 () -> (error :Error);
  # Resolves when leadership is lost (lease ended, or resigned).
  lost @2 () -> (error :Error);
}

# The bootstrap capability of every connection.
interface Keel {
  range @0 (request :RangeRequest) -> (response :RangeResponse, error :Error);
  put @1 (request :PutRequest) -> (response :PutResponse, error :Error);
  deleteRange @2 (request :DeleteRangeRequest) -> (response :DeleteRangeResponse, error :Error);
  txn @3 (request :TxnRequest) -> (response :TxnResponse, error :Error);
  compact @4 (request :CompactRequest) -> (response :CompactResponse, error :Error);
  watch @5 (request :WatchRequest, watcher :Watcher) -> (handle :WatchHandle, watchId :Int64, error :Error);
  status @6 () -> (status :Status);
  # Membership: single-server changes, applied before the reply.
  memberList @7 () -> (members :List(Member), error :Error);
  memberAdd @8 (name :Text, peerAddress :Text) -> (members :List(Member), error :Error);
  memberPromote @9 (name :Text) -> (members :List(Member), error :Error);
  memberRemove @10 (name :Text) -> (members :List(Member), error :Error);
  # Every member's status, asked over the peer connections (this member first).
  clusterStatus @11 () -> (statuses :List(Status));

  # Grants a lease of ttlMs (lease.min_ttl_ms .. lease.max_ttl_ms). keep = false: a session
  # lease, revoked as soon as `lease` is dropped or this connection closes.
  leaseGrant @12 (ttlMs :Int64, keep :Bool) -> (lease :Lease, id :Int64, ttlMs :Int64, error :Error);
  leaseRevoke @13 (id :Int64) -> (error :Error);
  leaseTimeToLive @14 (id :Int64, keys :Bool) -> (info :LeaseInfo, error :Error);
  leaseList @15 () -> (ids :List(Int64), error :Error);
  # Renews an existing lease while `lease` is held; dropping it does not revoke it.
  leaseKeepAlive @16 (id :Int64) -> (lease :Lease, ttlMs :Int64, error :Error);
  # Acquires `name` for lease `leaseId`, or, with leaseId 0, for a new session lease of ttlMs
  # (0 = lease.default_ttl_ms) bound to the handle. wait = false: tryLock (acquired false when
  # held). wait = true: queued FIFO until acquired or timeoutMs (0 = no timeout) passes
  # (error timeout; the place in the queue is given up). delayMs: lock-delay after this
  # holder's lease expires (-1 = lock.default_delay_ms).
  lock @17 (name :Data, leaseId :Int64, ttlMs :Int64, wait :Bool, timeoutMs :Int64, delayMs :Int64)
      -> (handle :LockHandle, acquired :Bool, token :Int64, leaseId :Int64, error :Error);
  # Whether `token` is the current holder's token of lock `name` (linearizable): a service
  # outside keel checks a client's fencing token with it (Chubby's CheckSequencer).
  checkFence @18 (name :Data, token :Int64) -> (valid :Bool, currentToken :Int64, error :Error);
  # Releases a lock held (or left waiting) by lease leaseId, from any connection.
  unlock @19 (name :Data, leaseId :Int64) -> (error :Error);
  # Takes a slot of semaphore `name` (max slots, set by its first acquirer while it exists:
  # another max is semaphoreMaxMismatch) for holderId, with lease leaseId or, with 0, a new
  # session lease of ttlMs bound to the handle. The same holderId asking again gets its own
  # slot back. wait/timeoutMs as for lock.
  semAcquire @20 (name :Data, max :Int64, holderId :Text, metadata :Data, leaseId :Int64,
                  ttlMs :Int64, wait :Bool, timeoutMs :Int64)
      -> (handle :SemHandle, acquired :Bool, holders :Int64, leaseId :Int64, error :Error);
  semRelease @21 (name :Data, holderId :Text) -> (error :Error);
  # Linearizable. A semaphore nobody holds or waits for has max 0 and no holders.
  semHolders @22 (name :Data) -> (max :Int64, holders :List(SemHolder), waiters :List(SemHolder), error :Error);
  # Elections: candidates queue FIFO (on a lock named "election/" + name); the winner's value
  # is the key name + "/" + hex(lease). Blocks until leader or timeoutMs (0 = no limit).
  # leaseId 0: a session lease of ttlMs bound to `leadership`.
  campaign @23 (name :Data, value :Data, leaseId :Int64, ttlMs :Int64, timeoutMs :Int64)
      -> (leadership :Leadership, leader :LeaderKey, error :Error);
  # The current leader (linearizable); error keyNotFound when there is none.
  leader @24 (name :Data) -> (leader :LeaderKey, value :Data, error :Error, valueRevision :Int64);
}
