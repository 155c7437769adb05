#pragma once
// The coordination primitives' replicated state machine: leases and locks with fencing
// tokens, decided from cluster time in the log (LogCabin's ClusterClock). The store drives
// it (storage::StateExtension) inside the same WiredTiger transaction as the KV changes it
// causes, so every replica, voter or learner, reaches the same rows at the same index.
//
// Rules (what a client can rely on; README "Leases and locks"):
//  - A lease ends at (cluster time of its grant or last renewal entry) + ttl_ms; a renewal
//    never shortens it. Cluster time stops while there is no leader, so a failover extends
//    a lease by at most the failover time and never restarts it.
//  - When a lease ends (revoke or expiry) its keys are deleted in one revision, and every
//    lock it holds passes to the lock's next waiter (FIFO; exactly one is woken).
//  - Fencing tokens come from one counter for all locks: a new holder's token is greater
//    than every token handed out before, across holders and leader changes.
//  - Lock-delay: when the holder's lease *expires* (not on unlock or revoke), the lock stays
//    free of any holder for the holder's delay_ms before the next waiter gets it.
//
// Rows in table:ext (keys start with a one-letter kind; be64 numbers sort numerically):
//   "t"                      -> varint: the last fencing token handed out
//   "L" be64(lease)          -> varint ttl_ms, varint expiry_ms
//   "E" be64(expiry) be64(lease) -> "": the expiry queue
//   "K" be64(lease) key      -> "": keys attached to the lease
//   "H" be64(lease) name     -> "": locks the lease holds or waits for
//   "C" name                 -> Lock (encode_lock)
//   "D" be64(until) name     -> "": lock-delay timers
//   "S" name                 -> Semaphore (encode_semaphore)
//   "G" be64(lease) name     -> "": semaphores the lease holds a slot of or waits for
//
// Semaphores: a slot is bound to its holder's lease and ends with it (a dead machine never
// keeps a slot); freed slots go to waiters in FIFO order.
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/storage/mvcc_store.hpp"

namespace keel::primitives {

struct Waiter {
  int64_t lease = 0;
  int64_t delay_ms = 0;
  bool operator==(const Waiter&) const = default;
};

struct Lock {
  int64_t holder = 0;  // lease; 0 = free (maybe in lock-delay)
  int64_t token = 0;   // the holder's fencing token (the last one when free)
  int64_t holder_delay_ms = 0;
  uint64_t delay_until_ms = 0;  // while free after an expiry: no holder before this
  std::vector<Waiter> waiters;  // FIFO
  bool operator==(const Lock&) const = default;
};

struct SemSlot {
  std::string holder_id;
  int64_t lease = 0;
  uint64_t since_ms = 0;  // cluster time it took the slot (or, waiting, joined the queue)
  std::string metadata;
  bool operator==(const SemSlot&) const = default;
};

struct Semaphore {
  int64_t max = 0;
  std::vector<SemSlot> holders;  // at most max
  std::vector<SemSlot> waiters;  // FIFO
  bool operator==(const Semaphore&) const = default;
};

struct LeaseInfo {
  int64_t id = 0;
  int64_t ttl_ms = 0;
  uint64_t expiry_ms = 0;          // cluster time at which it ends
  uint64_t cluster_ms = 0;         // cluster time of the replica read
  int64_t remaining_ms = 0;        // expiry - cluster time of the read (>= 0)
  std::vector<std::string> keys;   // with want_keys
  std::vector<std::string> locks;  // locks it holds or waits for
};

class State final : public storage::StateExtension {
 public:
  // ---- StateExtension (node thread, inside apply) ----
  Status advance(uint64_t cluster_ms, storage::ApplyTxn& tx) override;
  Result<storage::CommandResult> apply(const storage::Command& command, uint64_t cluster_ms,
                                       storage::ApplyTxn& tx) override;
  Status check_lease(int64_t lease, storage::ApplyTxn& tx) override;
  Status key_lease_changed(std::string_view key, int64_t old_lease, int64_t new_lease,
                           storage::ApplyTxn& tx) override;
  Status check_fence(const storage::Fence& fence, storage::ApplyTxn& tx) override;
  Status before_commit(storage::ApplyTxn& tx) override;
  void committed() override;
  void rolled_back() override { changed_ = false; }
  Status reload(storage::ApplyTxn& tx) override;
  uint64_t next_deadline_ms() const override { return deadline_ms_.load(); }
  // Counts committed batches that may have changed who holds a lock or slot, or ended a
  // lease (any thread; grants and renewals do not move it): the agent re-reads the locks
  // its clients wait for or hold when it moves.
  int64_t epoch() const { return epoch_.load(); }

  // ---- reads from a replica (any thread, through its own Reader) ----
  static Result<std::optional<LeaseInfo>> lease_info(storage::Reader& reader, int64_t id,
                                                     bool want_keys);
  static Result<std::vector<int64_t>> list_leases(storage::Reader& reader);
  static Result<std::optional<Lock>> lock_info(storage::Reader& reader, const std::string& name);
  static Result<std::optional<Semaphore>> semaphore_info(storage::Reader& reader,
                                                         const std::string& name);
  // Every row of table:ext, in key order (tests compare replicas with it).
  static Result<std::vector<std::pair<std::string, std::string>>> dump(storage::Reader& reader);

 private:
  Status end_lease(int64_t id, bool expired, uint64_t now_ms, storage::ApplyTxn& tx);
  Status give_to_next(const std::string& name, Lock& lock, storage::ApplyTxn& tx);
  Result<storage::CommandResult> sem_acquire(const storage::SemAcquireRequest& q, uint64_t now_ms,
                                             storage::ApplyTxn& tx);
  Result<storage::CommandResult> sem_release(const storage::SemReleaseRequest& q, uint64_t now_ms,
                                             storage::ApplyTxn& tx);
  // Removes every entry of `lease` from semaphore `name` and fills the free slots.
  Status sem_drop_lease(const std::string& name, int64_t lease, uint64_t now_ms,
                        storage::ApplyTxn& tx);
  Result<uint64_t> first_deadline(storage::ApplyTxn& tx);

  uint64_t staged_deadline_ms_ = UINT64_MAX;
  bool changed_ = false;  // this batch ran a primitive command or ended something
  std::atomic<int64_t> epoch_{1};
  std::atomic<uint64_t> deadline_ms_{UINT64_MAX};
};

// Row codecs, exposed for tests.
std::string encode_lock(const Lock& lock);
bool decode_lock(std::string_view in, Lock* lock);
std::string encode_semaphore(const Semaphore& sem);
bool decode_semaphore(std::string_view in, Semaphore* sem);

}  // namespace keel::primitives
