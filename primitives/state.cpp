// The primitives' state machine (state.hpp has the rules and the row layout).
// Deterministic: no clock, no randomness; every time is a stamp passed in by apply.
#include "primitives/state.hpp"

#include <algorithm>

#include "cluster/model/bytes.hpp"

namespace keel::primitives {
namespace {

using storage::ApplyTxn;
using namespace keel::bytes;

std::string key1(char kind, uint64_t a) {
  std::string k(1, kind);
  put_be64(k, a);
  return k;
}
std::string key2(char kind, uint64_t a, uint64_t b) {
  std::string k = key1(kind, a);
  put_be64(k, b);
  return k;
}
std::string key_s(char kind, uint64_t a, std::string_view s) {
  std::string k = key1(kind, a);
  k.append(s);
  return k;
}
std::string lock_key(std::string_view name) {
  std::string k(1, 'C');
  k.append(name);
  return k;
}
// The first key after every key that starts with `prefix` (prefix is never all 0xff here).
std::string after(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff)
    prefix.pop_back();
  if (!prefix.empty()) prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

Error corrupt(const std::string& what) {
  return make_error(ErrorCode::internal, "corrupt primitives row: " + what);
}

struct LeaseRow {
  int64_t ttl_ms = 0;
  uint64_t expiry_ms = 0;
};
std::string encode_lease(const LeaseRow& l) {
  std::string v;
  put_varint(v, static_cast<uint64_t>(l.ttl_ms));
  put_varint(v, l.expiry_ms);
  return v;
}
bool decode_lease(std::string_view in, LeaseRow* l) {
  uint64_t ttl = 0;
  if (!get_varint(&in, &ttl) || !get_varint(&in, &l->expiry_ms) || !in.empty()) return false;
  l->ttl_ms = static_cast<int64_t>(ttl);
  return true;
}

Result<std::optional<LeaseRow>> read_lease(ApplyTxn& tx, int64_t id) {
  std::string v;
  auto found = tx.get(key1('L', static_cast<uint64_t>(id)), &v);
  if (!found) return std::move(found).error();
  if (!*found) return std::optional<LeaseRow>();
  LeaseRow l;
  if (!decode_lease(v, &l)) return corrupt("lease " + std::to_string(id));
  return std::optional<LeaseRow>(l);
}

Result<std::optional<Lock>> read_lock(ApplyTxn& tx, const std::string& name) {
  std::string v;
  auto found = tx.get(lock_key(name), &v);
  if (!found) return std::move(found).error();
  if (!*found) return std::optional<Lock>();
  Lock l;
  if (!decode_lock(v, &l)) return corrupt("lock '" + name + "'");
  return std::optional<Lock>(std::move(l));
}

// Stores the lock, or deletes its row when nothing is left of it.
Status write_lock(ApplyTxn& tx, const std::string& name, const Lock& lock) {
  if (lock.holder == 0 && lock.waiters.empty() && lock.delay_until_ms == 0) {
    return tx.del(lock_key(name));  // the token counter is global: nothing is lost
  }
  return tx.put(lock_key(name), encode_lock(lock));
}

Result<int64_t> next_token(ApplyTxn& tx) {
  std::string v;
  auto found = tx.get("t", &v);
  if (!found) return std::move(found).error();
  uint64_t t = 0;
  if (*found) {
    std::string_view in = v;
    if (!get_varint(&in, &t) || !in.empty()) return corrupt("token counter");
  }
  t++;
  std::string out;
  put_varint(out, t);
  if (auto st = tx.put("t", out); !st) return std::move(st).error();
  return static_cast<int64_t>(t);
}

Error lease_not_found(int64_t id) {
  return make_error(ErrorCode::lease_not_found, "lease " + std::to_string(id) + " not found");
}

// Keys with `prefix`, the rest after it returned (the prefix's be64 part is fixed length).
Result<std::vector<std::string>> suffixes(ApplyTxn& tx, const std::string& prefix) {
  std::vector<std::string> out;
  auto st = tx.scan(prefix, after(prefix), [&](std::string_view k, std::string_view) {
    out.emplace_back(k.substr(prefix.size()));
    return true;
  });
  if (!st) return std::move(st).error();
  return out;
}

}  // namespace

std::string encode_lock(const Lock& l) {
  std::string v;
  put_varint(v, static_cast<uint64_t>(l.holder));
  put_varint(v, static_cast<uint64_t>(l.token));
  put_varint(v, static_cast<uint64_t>(l.holder_delay_ms));
  put_varint(v, l.delay_until_ms);
  put_varint(v, l.waiters.size());
  for (const auto& w : l.waiters) {
    put_varint(v, static_cast<uint64_t>(w.lease));
    put_varint(v, static_cast<uint64_t>(w.delay_ms));
  }
  return v;
}

bool decode_lock(std::string_view in, Lock* l) {
  uint64_t f[5];
  for (auto& x : f) {
    if (!get_varint(&in, &x)) return false;
  }
  l->holder = static_cast<int64_t>(f[0]);
  l->token = static_cast<int64_t>(f[1]);
  l->holder_delay_ms = static_cast<int64_t>(f[2]);
  l->delay_until_ms = f[3];
  if (f[4] > in.size() / 2) return false;  // each waiter takes at least 2 bytes
  l->waiters.clear();
  l->waiters.reserve(f[4]);
  for (uint64_t i = 0; i < f[4]; i++) {
    uint64_t lease = 0, delay = 0;
    if (!get_varint(&in, &lease) || !get_varint(&in, &delay)) return false;
    l->waiters.push_back(Waiter{static_cast<int64_t>(lease), static_cast<int64_t>(delay)});
  }
  return in.empty();
}

namespace {
void put_str(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}
bool get_str(std::string_view* in, std::string* s) {
  uint64_t n = 0;
  if (!get_varint(in, &n) || n > in->size()) return false;
  s->assign(in->data(), n);
  in->remove_prefix(n);
  return true;
}
void put_slots(std::string& out, const std::vector<SemSlot>& slots) {
  put_varint(out, slots.size());
  for (const auto& x : slots) {
    put_str(out, x.holder_id);
    put_varint(out, static_cast<uint64_t>(x.lease));
    put_varint(out, x.since_ms);
    put_str(out, x.metadata);
  }
}
bool get_slots(std::string_view* in, std::vector<SemSlot>* slots) {
  uint64_t n = 0;
  if (!get_varint(in, &n) || n > in->size() / 4) return false;  // >= 4 bytes per slot
  slots->clear();
  slots->reserve(n);
  for (uint64_t i = 0; i < n; i++) {
    SemSlot x;
    uint64_t lease = 0;
    if (!get_str(in, &x.holder_id) || !get_varint(in, &lease) || !get_varint(in, &x.since_ms) ||
        !get_str(in, &x.metadata))
      return false;
    x.lease = static_cast<int64_t>(lease);
    slots->push_back(std::move(x));
  }
  return true;
}
std::string sem_key(std::string_view name) {
  std::string k(1, 'S');
  k.append(name);
  return k;
}
}  // namespace

std::string encode_semaphore(const Semaphore& sem) {
  std::string v;
  put_varint(v, static_cast<uint64_t>(sem.max));
  put_slots(v, sem.holders);
  put_slots(v, sem.waiters);
  return v;
}

bool decode_semaphore(std::string_view in, Semaphore* sem) {
  uint64_t max = 0;
  if (!get_varint(&in, &max)) return false;
  sem->max = static_cast<int64_t>(max);
  return get_slots(&in, &sem->holders) && get_slots(&in, &sem->waiters) && in.empty();
}

namespace {
Result<std::optional<Semaphore>> read_sem(ApplyTxn& tx, const std::string& name) {
  std::string v;
  auto found = tx.get(sem_key(name), &v);
  if (!found) return std::move(found).error();
  if (!*found) return std::optional<Semaphore>();
  Semaphore sem;
  if (!decode_semaphore(v, &sem)) return corrupt("semaphore '" + name + "'");
  return std::optional<Semaphore>(std::move(sem));
}

bool has_lease(const Semaphore& sem, int64_t lease) {
  auto uses = [&](const SemSlot& x) { return x.lease == lease; };
  return std::any_of(sem.holders.begin(), sem.holders.end(), uses) ||
         std::any_of(sem.waiters.begin(), sem.waiters.end(), uses);
}

// Fills free slots from the queue, then stores the semaphore (or deletes it when empty) and
// drops the G row of every lease in `touched` that no longer has an entry in it.
Status write_sem(ApplyTxn& tx, const std::string& name, Semaphore& sem, uint64_t now_ms,
                 const std::vector<int64_t>& touched) {
  while (static_cast<int64_t>(sem.holders.size()) < sem.max && !sem.waiters.empty()) {
    SemSlot x = std::move(sem.waiters.front());
    sem.waiters.erase(sem.waiters.begin());
    x.since_ms = now_ms;
    sem.holders.push_back(std::move(x));
  }
  for (int64_t lease : touched) {
    if (!has_lease(sem, lease)) {
      if (auto st = tx.del(key_s('G', static_cast<uint64_t>(lease), name)); !st) return st;
    }
  }
  if (sem.holders.empty() && sem.waiters.empty()) return tx.del(sem_key(name));
  return tx.put(sem_key(name), encode_semaphore(sem));
}
}  // namespace

Result<storage::CommandResult> State::sem_acquire(const storage::SemAcquireRequest& q,
                                                  uint64_t now_ms, ApplyTxn& tx) {
  auto lease = read_lease(tx, q.lease);
  if (!lease) return std::move(lease).error();
  if (!*lease) return lease_not_found(q.lease);
  auto found = read_sem(tx, q.name);
  if (!found) return std::move(found).error();
  Semaphore sem = *found ? std::move(**found) : Semaphore{q.max, {}, {}};
  if (sem.max != q.max) {
    return make_error(ErrorCode::semaphore_max_mismatch,
                      "semaphore '" + q.name + "' has max " + std::to_string(sem.max) +
                          "; this acquire asked for max " + std::to_string(q.max));
  }
  storage::SemAcquireResponse resp;
  std::vector<int64_t> touched;
  auto same = [&](const SemSlot& x) { return x.holder_id == q.holder_id; };
  auto held = std::find_if(sem.holders.begin(), sem.holders.end(), same);
  auto queued = std::find_if(sem.waiters.begin(), sem.waiters.end(), same);
  SemSlot* entry = nullptr;
  if (held != sem.holders.end()) {
    resp.acquired = true;  // its own slot back
    entry = &*held;
  } else if (queued != sem.waiters.end()) {
    entry = &*queued;  // still waiting
  } else if (static_cast<int64_t>(sem.holders.size()) < sem.max && sem.waiters.empty()) {
    sem.holders.push_back(SemSlot{q.holder_id, q.lease, now_ms, q.metadata});
    resp.acquired = true;
  } else if (q.wait) {
    sem.waiters.push_back(SemSlot{q.holder_id, q.lease, now_ms, q.metadata});
  } else {
    resp.holders = static_cast<int64_t>(sem.holders.size());
    resp.revision = tx.revision();
    return storage::CommandResult(resp);  // all taken; nothing changes
  }
  if (entry != nullptr && entry->lease != q.lease) {  // rebound to the asker's lease
    touched.push_back(entry->lease);
    entry->lease = q.lease;
    entry->metadata = q.metadata;
  }
  if (auto st = tx.put(key_s('G', static_cast<uint64_t>(q.lease), q.name), ""); !st)
    return std::move(st).error();
  if (auto st = write_sem(tx, q.name, sem, now_ms, touched); !st) return std::move(st).error();
  resp.holders = static_cast<int64_t>(sem.holders.size());
  resp.revision = tx.revision();
  return storage::CommandResult(resp);
}

Result<storage::CommandResult> State::sem_release(const storage::SemReleaseRequest& q,
                                                  uint64_t now_ms, ApplyTxn& tx) {
  auto found = read_sem(tx, q.name);
  if (!found) return std::move(found).error();
  auto not_held = make_error(ErrorCode::lock_not_held, "holder '" + q.holder_id +
                                                           "' neither holds nor waits for a slot "
                                                           "of semaphore '" +
                                                           q.name + "'");
  if (!*found) return not_held;
  Semaphore sem = std::move(**found);
  std::vector<int64_t> touched;
  for (auto* list : {&sem.holders, &sem.waiters}) {
    for (auto it = list->begin(); it != list->end();) {
      if (it->holder_id == q.holder_id && (q.lease == 0 || it->lease == q.lease)) {
        touched.push_back(it->lease);
        it = list->erase(it);
      } else {
        ++it;
      }
    }
  }
  if (touched.empty()) return not_held;
  if (auto st = write_sem(tx, q.name, sem, now_ms, touched); !st) return std::move(st).error();
  return storage::CommandResult(storage::SemReleaseResponse{tx.revision()});
}

Status State::sem_drop_lease(const std::string& name, int64_t lease, uint64_t now_ms,
                             ApplyTxn& tx) {
  auto found = read_sem(tx, name);
  if (!found) return std::move(found).error();
  if (!*found) return tx.del(key_s('G', static_cast<uint64_t>(lease), name));
  Semaphore sem = std::move(**found);
  auto uses = [&](const SemSlot& x) { return x.lease == lease; };
  std::erase_if(sem.holders, uses);
  std::erase_if(sem.waiters, uses);
  return write_sem(tx, name, sem, now_ms, {lease});
}

// ---- apply ----

Status State::advance(uint64_t now_ms, ApplyTxn& tx) {
  // Leases whose expiry has come, in expiry order.
  std::vector<int64_t> due;
  auto st = tx.scan("E", key1('E', now_ms + 1), [&](std::string_view k, std::string_view) {
    if (k.size() == 17) due.push_back(static_cast<int64_t>(get_be64(k.data() + 9)));
    return true;
  });
  if (!st) return st;
  for (int64_t id : due) {
    if (auto e = end_lease(id, /*expired=*/true, now_ms, tx); !e) return e;
  }
  // Lock-delays that are over: the next waiter gets the lock.
  std::vector<std::pair<std::string, std::string>> over;  // (row key, lock name)
  st = tx.scan("D", key1('D', now_ms + 1), [&](std::string_view k, std::string_view) {
    if (k.size() >= 9) over.emplace_back(std::string(k), std::string(k.substr(9)));
    return true;
  });
  if (!st) return st;
  for (const auto& [row, name] : over) {
    changed_ = true;
    if (auto d = tx.del(row); !d) return d;
    auto lock = read_lock(tx, name);
    if (!lock) return std::move(lock).error();
    if (!*lock || (*lock)->holder != 0 || (*lock)->delay_until_ms > now_ms) continue;
    Lock l = std::move(**lock);
    l.delay_until_ms = 0;
    if (auto g = give_to_next(name, l, tx); !g) return g;
  }
  return ok_status();
}

// Pops the first waiter into the holder's place (or leaves the lock free) and stores it.
Status State::give_to_next(const std::string& name, Lock& lock, ApplyTxn& tx) {
  lock.holder = 0;
  lock.holder_delay_ms = 0;
  if (!lock.waiters.empty()) {
    const Waiter w = lock.waiters.front();
    lock.waiters.erase(lock.waiters.begin());
    auto token = next_token(tx);
    if (!token) return std::move(token).error();
    lock.holder = w.lease;
    lock.holder_delay_ms = w.delay_ms;
    lock.token = *token;
  }
  return write_lock(tx, name, lock);
}

Status State::end_lease(int64_t id, bool expired, uint64_t now_ms, ApplyTxn& tx) {
  changed_ = true;
  auto lease = read_lease(tx, id);
  if (!lease) return std::move(lease).error();
  if (!*lease) return lease_not_found(id);
  const auto uid = static_cast<uint64_t>(id);
  // Its keys go in one revision; then its attachment rows.
  auto keys = suffixes(tx, key1('K', uid));
  if (!keys) return std::move(keys).error();
  if (auto st = tx.delete_keys(*keys); !st) return st;
  for (const auto& k : *keys) {
    if (auto st = tx.del(key_s('K', uid, k)); !st) return st;
  }
  // Its locks pass on; its places in queues go.
  auto names = suffixes(tx, key1('H', uid));
  if (!names) return std::move(names).error();
  for (const auto& name : *names) {
    if (auto st = tx.del(key_s('H', uid, name)); !st) return st;
    auto lock = read_lock(tx, name);
    if (!lock) return std::move(lock).error();
    if (!*lock) continue;
    Lock l = std::move(**lock);
    if (l.holder == id) {
      if (expired && l.holder_delay_ms > 0) {
        l.holder = 0;
        l.delay_until_ms = now_ms + static_cast<uint64_t>(l.holder_delay_ms);
        l.holder_delay_ms = 0;
        if (auto st = tx.put(key_s('D', l.delay_until_ms, name), ""); !st) return st;
        if (auto st = write_lock(tx, name, l); !st) return st;
      } else if (auto st = give_to_next(name, l, tx); !st) {
        return st;
      }
    } else {
      std::erase_if(l.waiters, [&](const Waiter& w) { return w.lease == id; });
      if (auto st = write_lock(tx, name, l); !st) return st;
    }
  }
  // Its semaphore slots free themselves (and go to the waiters).
  auto sems = suffixes(tx, key1('G', uid));
  if (!sems) return std::move(sems).error();
  for (const auto& name : *sems) {
    if (auto st = sem_drop_lease(name, id, now_ms, tx); !st) return st;
  }
  if (auto st = tx.del(key2('E', (*lease)->expiry_ms, uid)); !st) return st;
  return tx.del(key1('L', uid));
}

Result<storage::CommandResult> State::apply(const storage::Command& command, uint64_t now_ms,
                                            ApplyTxn& tx) {
  using namespace storage;
  // Grants and renewals never change who holds what (the agent re-reads its clients' locks
  // on every epoch, so renewals, the most frequent command, must not move it).
  if (!std::holds_alternative<LeaseGrantRequest>(command) &&
      !std::holds_alternative<LeaseRenewRequest>(command))
    changed_ = true;
  if (auto* g = std::get_if<LeaseGrantRequest>(&command)) {
    auto lease = read_lease(tx, g->id);
    if (!lease) return std::move(lease).error();
    if (*lease) {
      return make_error(ErrorCode::lease_exists,
                        "lease " + std::to_string(g->id) + " is already granted");
    }
    LeaseRow row{g->ttl_ms, now_ms + static_cast<uint64_t>(g->ttl_ms)};
    const auto uid = static_cast<uint64_t>(g->id);
    if (auto st = tx.put(key1('L', uid), encode_lease(row)); !st) return std::move(st).error();
    if (auto st = tx.put(key2('E', row.expiry_ms, uid), ""); !st) return std::move(st).error();
    return CommandResult(LeaseGrantResponse{g->id, g->ttl_ms, tx.revision()});
  }
  if (auto* r = std::get_if<LeaseRevokeRequest>(&command)) {
    if (auto st = end_lease(r->id, /*expired=*/false, now_ms, tx); !st)
      return std::move(st).error();
    return CommandResult(LeaseRevokeResponse{tx.revision()});
  }
  if (auto* n = std::get_if<LeaseRenewRequest>(&command)) {
    LeaseRenewResponse resp;
    resp.ttl_ms.reserve(n->ids.size());
    for (int64_t id : n->ids) {
      auto lease = read_lease(tx, id);
      if (!lease) return std::move(lease).error();
      if (!*lease) {
        resp.ttl_ms.push_back(0);
        continue;
      }
      LeaseRow row = **lease;
      resp.ttl_ms.push_back(row.ttl_ms);
      const uint64_t expiry = now_ms + static_cast<uint64_t>(row.ttl_ms);
      if (expiry <= row.expiry_ms) continue;  // never shortened
      const auto uid = static_cast<uint64_t>(id);
      if (auto st = tx.del(key2('E', row.expiry_ms, uid)); !st) return std::move(st).error();
      row.expiry_ms = expiry;
      if (auto st = tx.put(key2('E', row.expiry_ms, uid), ""); !st) return std::move(st).error();
      if (auto st = tx.put(key1('L', uid), encode_lease(row)); !st) return std::move(st).error();
    }
    return CommandResult(std::move(resp));
  }
  if (auto* q = std::get_if<LockRequest>(&command)) {
    auto lease = read_lease(tx, q->lease);
    if (!lease) return std::move(lease).error();
    if (!*lease) return lease_not_found(q->lease);
    auto found = read_lock(tx, q->name);
    if (!found) return std::move(found).error();
    Lock l = *found ? std::move(**found) : Lock{};
    LockResponse resp;
    resp.revision = tx.revision();
    if (l.holder == q->lease) {  // asked again: still ours
      resp.acquired = true;
      resp.token = l.token;
      return CommandResult(resp);
    }
    for (const auto& w : l.waiters) {
      if (w.lease == q->lease) return CommandResult(resp);  // still queued
    }
    const auto hold_key = key_s('H', static_cast<uint64_t>(q->lease), q->name);
    if (l.holder == 0 && l.delay_until_ms <= now_ms && l.waiters.empty()) {
      auto token = next_token(tx);
      if (!token) return std::move(token).error();
      l.holder = q->lease;
      l.token = *token;
      l.holder_delay_ms = q->delay_ms;
      l.delay_until_ms = 0;
      if (auto st = tx.put(hold_key, ""); !st) return std::move(st).error();
      if (auto st = write_lock(tx, q->name, l); !st) return std::move(st).error();
      resp.acquired = true;
      resp.token = l.token;
      return CommandResult(resp);
    }
    if (q->wait) {
      l.waiters.push_back(Waiter{q->lease, q->delay_ms});
      if (auto st = tx.put(hold_key, ""); !st) return std::move(st).error();
      if (auto st = write_lock(tx, q->name, l); !st) return std::move(st).error();
    }
    return CommandResult(resp);
  }
  if (auto* a = std::get_if<SemAcquireRequest>(&command)) return sem_acquire(*a, now_ms, tx);
  if (auto* r = std::get_if<SemReleaseRequest>(&command)) return sem_release(*r, now_ms, tx);
  const auto& u = std::get<UnlockRequest>(command);
  auto found = read_lock(tx, u.name);
  if (!found) return std::move(found).error();
  const auto not_held = make_error(
      ErrorCode::lock_not_held,
      "lease " + std::to_string(u.lease) + " neither holds nor waits for lock '" + u.name + "'");
  if (!*found) return not_held;
  Lock l = std::move(**found);
  const auto hold_key = key_s('H', static_cast<uint64_t>(u.lease), u.name);
  if (l.holder == u.lease) {
    if (auto st = tx.del(hold_key); !st) return std::move(st).error();
    if (auto st = give_to_next(u.name, l, tx); !st) return std::move(st).error();
    return CommandResult(UnlockResponse{tx.revision()});
  }
  const size_t before = l.waiters.size();
  std::erase_if(l.waiters, [&](const Waiter& w) { return w.lease == u.lease; });
  if (l.waiters.size() == before) return not_held;
  if (auto st = tx.del(hold_key); !st) return std::move(st).error();
  if (auto st = write_lock(tx, u.name, l); !st) return std::move(st).error();
  return CommandResult(UnlockResponse{tx.revision()});
}

Status State::check_lease(int64_t lease, ApplyTxn& tx) {
  auto row = read_lease(tx, lease);
  if (!row) return std::move(row).error();
  if (!*row) return lease_not_found(lease);
  return ok_status();
}

Status State::key_lease_changed(std::string_view key, int64_t old_lease, int64_t new_lease,
                                ApplyTxn& tx) {
  if (old_lease != 0) {
    if (auto st = tx.del(key_s('K', static_cast<uint64_t>(old_lease), key)); !st) return st;
  }
  if (new_lease != 0) return tx.put(key_s('K', static_cast<uint64_t>(new_lease), key), "");
  return ok_status();
}

Status State::check_fence(const storage::Fence& fence, ApplyTxn& tx) {
  auto lock = read_lock(tx, fence.lock);
  if (!lock) return std::move(lock).error();
  if (!*lock || (*lock)->holder == 0) {
    return make_error(ErrorCode::fenced, "fence: lock '" + fence.lock + "' is not held; token " +
                                             std::to_string(fence.token) + " is stale");
  }
  if ((*lock)->token != fence.token) {
    return make_error(ErrorCode::fenced, "fence: token " + std::to_string(fence.token) +
                                             " is not the current holder's of lock '" + fence.lock +
                                             "' (" + std::to_string((*lock)->token) + ")");
  }
  return ok_status();
}

Result<uint64_t> State::first_deadline(ApplyTxn& tx) {
  uint64_t next = UINT64_MAX;
  for (const char* kind : {"E", "D"}) {
    auto st = tx.scan(kind, after(kind), [&](std::string_view k, std::string_view) {
      if (k.size() >= 9) next = std::min(next, get_be64(k.data() + 1));
      return false;
    });
    if (!st) return std::move(st).error();
  }
  return next;
}

Status State::before_commit(ApplyTxn& tx) {
  auto next = first_deadline(tx);
  if (!next) return std::move(next).error();
  staged_deadline_ms_ = *next;
  return ok_status();
}

void State::committed() {
  deadline_ms_.store(staged_deadline_ms_);
  if (changed_) epoch_.fetch_add(1);
  changed_ = false;
}

Status State::reload(ApplyTxn& tx) {
  auto next = first_deadline(tx);
  if (!next) return std::move(next).error();
  deadline_ms_.store(*next);
  return ok_status();
}

// ---- reads ----

Result<std::optional<LeaseInfo>> State::lease_info(storage::Reader& reader, int64_t id,
                                                   bool want_keys) {
  const auto uid = static_cast<uint64_t>(id);
  std::optional<LeaseRow> row;
  bool bad = false;
  LeaseInfo info;
  info.id = id;
  // Three scans, each one consistent snapshot: a lease that ends between them shows with
  // fewer keys or locks, never with rows of another lease.
  auto ms = reader.ext_scan(key1('L', uid), after(key1('L', uid)),
                            [&](std::string_view, std::string_view v) {
                              LeaseRow r;
                              if (decode_lease(v, &r))
                                row = r;
                              else
                                bad = true;
                              return false;
                            });
  if (!ms) return std::move(ms).error();
  if (bad) return corrupt("lease " + std::to_string(id));
  if (!row) return std::optional<LeaseInfo>();
  info.ttl_ms = row->ttl_ms;
  info.expiry_ms = row->expiry_ms;
  info.cluster_ms = *ms;
  info.remaining_ms = row->expiry_ms > *ms ? static_cast<int64_t>(row->expiry_ms - *ms) : 0;
  const std::string hp = key1('H', uid);
  auto st = reader.ext_scan(hp, after(hp), [&](std::string_view k, std::string_view) {
    info.locks.emplace_back(k.substr(hp.size()));
    return true;
  });
  if (!st) return std::move(st).error();
  if (want_keys) {
    const std::string kp = key1('K', uid);
    st = reader.ext_scan(kp, after(kp), [&](std::string_view k, std::string_view) {
      info.keys.emplace_back(k.substr(kp.size()));
      return true;
    });
    if (!st) return std::move(st).error();
  }
  return std::optional<LeaseInfo>(std::move(info));
}

Result<std::vector<int64_t>> State::list_leases(storage::Reader& reader) {
  std::vector<int64_t> ids;
  auto st = reader.ext_scan("L", "M", [&](std::string_view k, std::string_view) {
    if (k.size() == 9) ids.push_back(static_cast<int64_t>(get_be64(k.data() + 1)));
    return true;
  });
  if (!st) return std::move(st).error();
  return ids;
}

Result<std::optional<Lock>> State::lock_info(storage::Reader& reader, const std::string& name) {
  const std::string k = lock_key(name);
  std::optional<Lock> out;
  bool bad = false;
  auto st = reader.ext_scan(k, k + '\0', [&](std::string_view, std::string_view v) {
    Lock l;
    if (decode_lock(v, &l))
      out = std::move(l);
    else
      bad = true;
    return false;
  });
  if (!st) return std::move(st).error();
  if (bad) return corrupt("lock '" + name + "'");
  return out;
}

Result<std::optional<Semaphore>> State::semaphore_info(storage::Reader& reader,
                                                       const std::string& name) {
  const std::string k = sem_key(name);
  std::optional<Semaphore> out;
  bool bad = false;
  auto st = reader.ext_scan(k, k + '\0', [&](std::string_view, std::string_view v) {
    Semaphore sem;
    if (decode_semaphore(v, &sem))
      out = std::move(sem);
    else
      bad = true;
    return false;
  });
  if (!st) return std::move(st).error();
  if (bad) return corrupt("semaphore '" + name + "'");
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> State::dump(storage::Reader& reader) {
  std::vector<std::pair<std::string, std::string>> rows;
  auto st = reader.ext_scan("", "", [&](std::string_view k, std::string_view v) {
    rows.emplace_back(std::string(k), std::string(v));
    return true;
  });
  if (!st) return std::move(st).error();
  return rows;
}

}  // namespace keel::primitives
