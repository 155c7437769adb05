#!/usr/bin/env bash
# run.sh: keel's coordination primitives on a 3-member cluster on 127.0.0.1, and the lease
# keepalive load beside etcd 3.4's own `benchmark lease-keepalive`; prints one table.
#
#   tests/bench/primitives/run.sh [--build-dir DIR] [--smoke] [--keel-only] [--no-install]
#                                 [--cache DIR] [--leases N] [--window S] [--keep]
#
# keel figures come from prim_bench (prim_bench.cpp here; see its header): lock + unlock,
# lock hand-off through 16 waiters, lease grants, and N leases held by the agents (default
# 30,000, 10,000 per agent, TTL 10 s) over a 20 s window. Then keel is stopped and a
# 3-member etcd 3.4 (Debian's etcd-server, as tests/bench/cluster/run.sh starts it) holds
# leases with etcd's tools/benchmark lease-keepalive (built offline once by
# tests/bench/cluster/setup-etcd.sh): the same number when the tool can, else fewer (it
# grants them all at once). Figures are noisy on a busy machine; nothing is asserted.
#
# --smoke: tiny counts (200 leases, 2 s windows), keel only; checks that every figure line
# is printed. Used by ctest; fails only when a phase fails.
#
# Every process is started by this script and stopped by PID (trap on exit); data dirs live
# in one mktemp dir, removed at the end unless --keep. Ports: keel 25800+i (peer), etcd
# 25810+i (client) and 25820+i (peer); --smoke adds 100.

# Functions named keel_* / etcd_* are called through variables: not unreachable.
# shellcheck disable=SC2317
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/bench/lib.sh
source "$here/../lib.sh"
src="$(cd "$here/../../.." && pwd)"
build="$src/build"
smoke=0
keel_only=0
install=1
cache=/var/cache/keel-bench
leases=""
window=""
keep=0

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$(cd "${2:?}" && pwd)"; shift ;;
    --smoke) smoke=1 ;;
    --keel-only) keel_only=1 ;;
    --no-install) install=0 ;;
    --cache) cache="${2:?}"; shift ;;
    --leases) leases="${2:?}"; shift ;;
    --window) window="${2:?}"; shift ;;
    --keep) keep=1 ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

keeld="$build/agent/keeld"
keelctl="$build/agent/keelctl"
prim_bench="$build/tests/bench/primitives/prim_bench"
for b in "$keeld" "$keelctl" "$prim_bench"; do
  [ -x "$b" ] || { echo "run.sh: $b is missing; build first (ninja prim_bench keeld keelctl)" >&2; exit 1; }
done

# ---- sizes ------------------------------------------------------------------------------
ttl_ms=10000
if [ "$smoke" = 1 ]; then
  leases="${leases:-200}" window="${window:-2}"
  bench_args=(--smoke --window "$window" --leases "$leases")
  ttl_ms=2000
  port_shift=100
  keel_only=1
else
  leases="${leases:-30000}" window="${window:-20}"
  bench_args=(--seconds 4 --clients 16 --waiters 16 --rounds 6 --leases "$leases"
    --ttl-ms "$ttl_ms" --window "$window" --idle 5 --warmup 2 --threads-per-agent 8)
  port_shift=0
fi
etcd_conns=100

t_begin=$SECONDS

# ---- etcd availability --------------------------------------------------------------------
etcd_bench=""
with_etcd=0
etcd_why=""
if [ "$keel_only" = 0 ]; then
  if [ -x "$cache/benchmark" ] && command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
    etcd_bench="$cache/benchmark"
  elif [ "$install" = 1 ]; then
    log "etcd or its benchmark tool is missing: tests/bench/cluster/setup-etcd.sh $cache"
    etcd_bench="$("$src/tests/bench/cluster/setup-etcd.sh" "$cache" | tail -1)" || etcd_bench=""
  fi
  if [ -n "$etcd_bench" ] && [ -x "$etcd_bench" ]; then
    with_etcd=1
  else
    etcd_why="etcd or its benchmark tool is not installed (tests/bench/cluster/setup-etcd.sh)"
  fi
else
  etcd_why="$([ "$smoke" = 1 ] && echo "smoke run" || echo "--keel-only")"
fi

# ---- processes and cleanup ----------------------------------------------------------------
root="$(mktemp -d /tmp/keel-prim-bench.XXXXXX)"
declare -a KPID=(0 0 0) EPID=(0 0 0)

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for i in 0 1 2; do
    stop_pid "${KPID[$i]}"
    stop_pid "${EPID[$i]}"
  done
  if [ "$rc" != 0 ]; then
    for f in "$root"/*.log; do
      [ -f "$f" ] || continue
      echo "---- tail of $f" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if [ "$keep" = 1 ]; then log "kept $root"; else rm -rf "$root"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---- keel -------------------------------------------------------------------------------
kpeer() { echo $((25800 + port_shift + $1)); }
ksock() { echo "$root/keel/k$1/keel.sock"; }
kcluster="k0=127.0.0.1:$(kpeer 0),k1=127.0.0.1:$(kpeer 1),k2=127.0.0.1:$(kpeer 2)"
keel_sockets="$(ksock 0),$(ksock 1),$(ksock 2)"
# 10,000 leases per agent is the default limit exactly; room for the benchmark's own.
kconf="$root/keel.toml"
cat >"$kconf" <<EOF
[limits]
max_leases_per_agent = 100000

[lease]
renew_tick_ms = 200
min_ttl_ms = 2000
EOF

keel_start() {
  local i=$1
  mkdir -p "$root/keel/k$i"
  "$keeld" --config "$kconf" --name "k$i" --initial-cluster "$kcluster" \
    --initial-cluster-state new --initial-cluster-token keel-prim-bench \
    --listen-peer "127.0.0.1:$(kpeer "$i")" --advertise-peer "127.0.0.1:$(kpeer "$i")" \
    --data-dir "$root/keel/k$i" --socket "$(ksock "$i")" --log-level warn \
    >>"$root/keel-k$i.log" 2>&1 &
  KPID[i]=$!
}
keel_ready() {  # member i takes a put and a linearizable read finds it
  timeout 2 "$keelctl" --socket "$(ksock "$1")" put "ready-$1" v >/dev/null 2>&1 &&
    timeout 2 "$keelctl" --socket "$(ksock "$1")" get "ready-$1" 2>/dev/null | grep -q .
}

# ---- etcd -------------------------------------------------------------------------------
eclient() { echo $((25810 + port_shift + $1)); }
epeer() { echo $((25820 + port_shift + $1)); }
ecluster="e0=http://127.0.0.1:$(epeer 0),e1=http://127.0.0.1:$(epeer 1),e2=http://127.0.0.1:$(epeer 2)"
etcd_endpoints="127.0.0.1:$(eclient 0),127.0.0.1:$(eclient 1),127.0.0.1:$(eclient 2)"

etcd_start() {
  local i=$1
  mkdir -p "$root/etcd"
  etcd --name "e$i" --data-dir "$root/etcd/e$i" \
    --listen-client-urls "http://127.0.0.1:$(eclient "$i")" \
    --advertise-client-urls "http://127.0.0.1:$(eclient "$i")" \
    --listen-peer-urls "http://127.0.0.1:$(epeer "$i")" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(epeer "$i")" \
    --initial-cluster "$ecluster" --initial-cluster-state new \
    --initial-cluster-token keel-prim-bench >>"$root/etcd-e$i.log" 2>&1 &
  EPID[i]=$!
}
etcd_leader() {  # index of the member that says it leads, or nothing
  local i
  for i in 0 1 2; do
    # endpoint, id, version, db size, is leader, is learner, term, index, applied, errors
    if timeout 2 etcdctl --endpoints="127.0.0.1:$(eclient "$i")" endpoint status -w simple \
      2>/dev/null | awk -F', ' '$5 == "true" {found = 1} END {exit !found}'; then
      echo "$i"
      return
    fi
  done
}
etcd_leader_changes() {  # member i's etcd_server_leader_changes_seen_total
  curl -sf --max-time 2 "http://127.0.0.1:$(eclient "$1")/metrics" 2>/dev/null |
    awk '/^etcd_server_leader_changes_seen_total/ {print $2}'
}
etcd_ready() {
  timeout 2 etcdctl --endpoints="127.0.0.1:$(eclient "$1")" put "ready-$1" v >/dev/null 2>&1
}
# etcd's lease-keepalive: each of --clients goroutines grants one lease (TTL 100 s) and then
# sends KeepAliveOnce requests in a closed loop until --total were sent. Prints a key=value
# line: total, secs (the tool's Total, which includes the grants), rate (its Requests/sec),
# p50/p99 (us), errors, and the leader's CPU ticks over the run.
etcd_keepalive() {  # leader clients total
  local leader=$1 clients=$2 total=$3 out c0 c1 a0 a1 t0 t1 errors lc0 lc1
  lc0="$(etcd_leader_changes "$leader")"
  c0=$(cpu_ticks "${EPID[$leader]}")
  a0=$(($(cpu_ticks "${EPID[0]}") + $(cpu_ticks "${EPID[1]}") + $(cpu_ticks "${EPID[2]}")))
  t0=${EPOCHREALTIME/./}
  out="$("$etcd_bench" --endpoints="$etcd_endpoints" --conns="$etcd_conns" --clients="$clients" \
    --precise lease-keepalive --total="$total" 2>"$root/etcd-bench.err")" || {
    # Its progress bar and gRPC chatter go to stderr too: only the reason.
    grep -a -o -m1 'panic: .*' "$root/etcd-bench.err" | cut -c1-160 >&2 ||
      echo "it failed and printed no panic" >&2
    return 1
  }
  t1=${EPOCHREALTIME/./}
  c1=$(cpu_ticks "${EPID[$leader]}")
  a1=$(($(cpu_ticks "${EPID[0]}") + $(cpu_ticks "${EPID[1]}") + $(cpu_ticks "${EPID[2]}")))
  lc1="$(etcd_leader_changes "$leader")"
  # A new leader or failed requests make the figures meaningless: such a run fails.
  if [ -z "$lc0" ] || [ "$lc0" != "$lc1" ]; then
    echo "the leader changed during the run (etcd_server_leader_changes_seen_total ${lc0:-?} -> ${lc1:-?}), requests/s $(echo "$out" | awk '/Requests\/sec:/ {printf "%.0f", $2}')" >&2
    return 1
  fi
  errors="$(echo "$out" | sed -n '/Error distribution/,$p' | awk '/\[[0-9]+\]/ {gsub(/[][]/, "", $1); n += $1} END {print n + 0}')"
  if [ "$errors" != 0 ]; then
    echo "$errors of $total requests failed: $(echo "$out" | sed -n '/Error distribution/,$p' |
      sed -n 's/^ *\[\([0-9]*\)\][[:space:]]*/\1 x /p' | head -3 | paste -sd';' | cut -c1-200)" >&2
    return 1
  fi
  awk -v ticks=$((c1 - c0)) -v all_ticks=$((a1 - a0)) -v wall_us=$((t1 - t0)) -v errors="$errors" -v total="$total" \
    -v clients="$clients" '
    /Requests\/sec:/ {rate = $2}
    /Total:/ {secs = $2}
    $1 == "50%" {p50 = $3 * 1e6}
    $1 == "99%" {p99 = $3 * 1e6}
    END {printf "clients=%d total=%d secs=%.2f rate=%.0f p50_us=%.0f p99_us=%.0f errors=%d ticks=%d all_ticks=%d wall_s=%.2f\n",
      clients, total, secs, rate, p50, p99, errors, ticks, all_ticks, wall_us / 1e6}
  ' <<<"$out"
}
etcd_up() {  # a fresh 3-member etcd; sets el (the leader's index)
  local i k ok
  rm -rf "$root/etcd"
  for i in 0 1 2; do etcd_start "$i"; done
  for i in 0 1 2; do
    ok=0
    for ((k = 0; k < 300; k++)); do
      if etcd_ready "$i"; then ok=1; break; fi
      kill -0 "${EPID[$i]}" 2>/dev/null || die "etcd member $i exited during start-up"
      sleep 0.1
    done
    [ "$ok" = 1 ] || die "etcd member $i not ready within 30 s"
  done
  el=""
  for ((k = 0; k < 100; k++)); do el="$(etcd_leader)"; [ -n "$el" ] && break; sleep 0.1; done
  [ -n "$el" ] || die "etcd: no leader"
  log "etcd: 3 fresh members ready; leader e$el"
}
etcd_down() {
  local i
  for i in 0 1 2; do stop_pid "${EPID[$i]}"; EPID[i]=0; done
}

for p in $(kpeer 0) $(kpeer 1) $(kpeer 2); do port_free "$p" || die "port $p is in use"; done
if [ "$with_etcd" = 1 ]; then
  for i in 0 1 2; do
    for p in $(eclient "$i") $(epeer "$i"); do port_free "$p" || die "port $p is in use"; done
  done
fi
log "root $root; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); etcd: $([ "$with_etcd" = 1 ] && echo yes || echo "no ($etcd_why)")"

# ---- keel -------------------------------------------------------------------------------
for i in 0 1 2; do keel_start "$i"; done
for i in 0 1 2; do
  ok=0
  for ((k = 0; k < 300; k++)); do  # bounded: 30 s
    if keel_ready "$i"; then ok=1; break; fi
    kill -0 "${KPID[$i]}" 2>/dev/null || die "keel member $i exited during start-up"
    sleep 0.1
  done
  [ "$ok" = 1 ] || die "keel member $i not ready within 30 s"
done
log "keel: 3 members ready"

out_file="$root/prim_bench.out"
"$prim_bench" --socket "$keel_sockets" "${bench_args[@]}" >"$out_file" ||
  { cat "$out_file" >&2; die "prim_bench"; }
mapfile -t lines <"$out_file"
for l in "${lines[@]}"; do log "prim_bench: $l"; done
line() {  # the figure line that starts with $1
  local l
  for l in "${lines[@]}"; do
    if [ "${l%% *}" = "$1" ]; then
      echo "$l"
      return 0
    fi
  done
  return 1
}
nclients=16
[ "$smoke" = 1 ] && nclients=4
for f in lock_c1 "lock_c$nclients" handoff grant_revoke_c1 "grant_revoke_c$nclients" \
  grant_expire_c1 "grant_expire_c$nclients" keepalive; do
  line "$f" >/dev/null || die "prim_bench printed no $f line"
done
ka="$(line keepalive)"
# keeld logs at warn and above (--log-level warn) while running: a failed renewal shows here.
klog_lines=$(cat "$root"/keel-k*.log | wc -l)
klog_first="$(cat "$root"/keel-k*.log | head -1 | cut -c1-160)"
for i in 0 1 2; do stop_pid "${KPID[$i]}"; KPID[i]=0; done  # quiet machine for etcd
log "keel: stopped"

# ---- etcd: the same number of leases, etcd's lease-keepalive --------------------------------
declare -A E
e_leases=""  # the lease count etcd's tool could hold
e_failed=""  # the counts it could not, and why
if [ "$with_etcd" = 1 ]; then
  # The tool grants its leases all at once (one per client) and panics on the first refused
  # grant, and that many clients in a closed loop may overload the cluster (request
  # timeouts, lost leader): then fewer, down to a thirtieth. Any failed request fails a try.
  # A fresh cluster per try, so no lease of a failed try (TTL 100 s) expires during a later one.
  for c in "$leases" $((leases / 3)) $((leases / 6)) $((leases / 10)) $((leases / 30)); do
    [ "$c" -ge 1 ] || continue
    main=""
    etcd_up
    # Run 1: --total = the lease count (the grants and about one keepalive per lease), to size
    # run 2 and to subtract the start-up (grants, stream set-up) from it.
    log "etcd: lease-keepalive --clients=$c --total=$c (start-up run)"
    if cal="$(etcd_keepalive "$el" "$c" "$c" 2>"$root/why")"; then
      log "etcd: $cal"
      total=$(awk -v r="$(field rate "$cal")" -v w="$window" -v n="$c" \
        'BEGIN {t = int(r * w * 1.3); if (t < 3 * n) t = 3 * n; printf "%d", t}')
      log "etcd: lease-keepalive --clients=$c --total=$total"
      if main="$(etcd_keepalive "$el" "$c" "$total" 2>"$root/why")"; then
        log "etcd: $main"
        # Run 1's rate includes the grants: when run 2 was much shorter than the window, once
        # more with its marginal rate.
        total=$(awk -v t1="$(field total "$cal")" -v s1="$(field secs "$cal")" \
          -v t2="$(field total "$main")" -v s2="$(field secs "$main")" -v w="$window" 'BEGIN {
            if (s2 >= 0.75 * w || s2 <= s1) exit
            printf "%d", t1 + (t2 - t1) / (s2 - s1) * w}')
        if [ -n "$total" ]; then
          log "etcd: lease-keepalive --clients=$c --total=$total (run 2 took $(field secs "$main") s)"
          main="$(etcd_keepalive "$el" "$c" "$total" 2>"$root/why")" || main=""
          if [ -n "$main" ]; then log "etcd: $main"; fi
        fi
      fi
      if [ -n "$main" ]; then
        E[leader_rss]=$(awk -v k="$(rss_kib "${EPID[$el]}")" 'BEGIN {printf "%.0f", k / 1024}')
        e_leases=$c
        etcd_down
        break
      fi
    fi
    why="$(head -1 "$root/why")"
    log "etcd: lease-keepalive with --clients=$c failed: ${why:-no reason printed}"
    e_failed="${e_failed:+$e_failed; }--clients=$c: ${why:-failed}"
    etcd_down
  done
  if [ -z "$e_leases" ]; then
    with_etcd=0
    etcd_why="etcd's benchmark lease-keepalive failed at every lease count tried ($e_failed)"
  fi
fi

# ---- report -----------------------------------------------------------------------------
ms() { awk -v v="$1" 'BEGIN {if (v == "" || v == "-") print "-"; else printf "%.2f", v / 1000}'; }
row() { printf '| %-58s | %14s | %9s | %9s | %-44s |\n' "$@"; }
hz=$(getconf CLK_TCK)
lk1="$(line lock_c1)" lkn="$(line "lock_c$nclients")" ho="$(line handoff)"
gr1="$(line grant_revoke_c1)" grn="$(line "grant_revoke_c$nclients")"
ge1="$(line grant_expire_c1)" gen="$(line "grant_expire_c$nclients")"
echo
echo "keel primitives, 3 members on 127.0.0.1, $(nproc) cores, $(date -u +%FT%TZ)$([ "$smoke" = 1 ] && echo ' (SMOKE: tiny counts, figures meaningless)')"
echo "keeld: [lease] renew_tick_ms = 200, min_ttl_ms = 2000; [limits] max_leases_per_agent = 100000; [raft] defaults"
echo "clients spread over the 3 members' sockets in turn; one thread and one connection per client"
echo
row "figure" "rate (/s)" "p50 (ms)" "p99 (ms)" "notes"
row "----------------------------------------------------------" "--------------" "---------" "---------" "--------------------------------------------"
row "1. lock + unlock, 1 client" "$(field rate "$lk1")" "$(ms "$(field p50_us "$lk1")")" "$(ms "$(field p99_us "$lk1")")" "pairs; lease granted once (LockOptions.lease)"
row "   lock + unlock, $nclients clients, distinct locks" "$(field rate "$lkn")" "$(ms "$(field p50_us "$lkn")")" "$(ms "$(field p99_us "$lkn")")" "pairs/s summed over clients"
row "2. hand-off, $(field waiters "$ho") waiters on one lock" "" "$(ms "$(field p50_us "$ho")")" "$(ms "$(field p99_us "$ho")")" "$(field samples "$ho") samples; max $(ms "$(field max_us "$ho")") ms"
row "3a. lease grant + revoke(), 1 client" "$(field rate "$gr1")" "$(ms "$(field grant_p50_us "$gr1")")" "$(ms "$(field grant_p99_us "$gr1")")" "revoke included; pair p50/p99 $(ms "$(field pair_p50_us "$gr1")")/$(ms "$(field pair_p99_us "$gr1")") ms"
row "    lease grant + revoke(), $nclients clients" "$(field rate "$grn")" "$(ms "$(field grant_p50_us "$grn")")" "$(ms "$(field grant_p99_us "$grn")")" "revoke included; pair p50/p99 $(ms "$(field pair_p50_us "$grn")")/$(ms "$(field pair_p99_us "$grn")") ms"
row "3b. lease grant, kept, left to expire, 1 client" "$(field rate "$ge1")" "$(ms "$(field grant_p50_us "$ge1")")" "$(ms "$(field grant_p99_us "$ge1")")" "revoke excluded: TTL $(field ttl_ms "$ge1") ms, never renewed"
row "    lease grant, kept, left to expire, $nclients clients" "$(field rate "$gen")" "$(ms "$(field grant_p50_us "$gen")")" "$(ms "$(field grant_p99_us "$gen")")" "revoke excluded (expiries run meanwhile)"
echo
echo "rate: grants/s for 3a and 3b (3a: each grant followed by a timed revoke(), so grants/s = pairs/s); p50/p99: the grant call."
echo "hand-off: from just before the holder's unlock call to the return of the next waiter's lock(); each new holder unlocks at once."
echo
w="$(field window_s "$ka")"
n="$(field leases "$ka")"
echo "4. keepalive: $n leases held (one Lease object each, session leases, TTL $(field ttl_ms "$ka") ms), $(field agents "$ka") agents, $(field conns "$ka") connections; window ${w} s"
row "figure" "keel" "etcd 3.4" "ratio" "notes"
row "----------------------------------------------------------" "--------------" "---------" "---------" "--------------------------------------------"
row "leases held" "$n" "${e_leases:--}" "" "etcd: one per client of its tool"
row "leases granted (s; grants/s)" "$(field grant_secs "$ka")" "" "" "$(field grant_rate "$ka") grants/s over $(field conns "$ka") connections"
row "renewal messages/s reaching the leader" "$(field renew_msgs_per_s "$ka")" "" "" "per agent $(field renew_msgs_per_s_by_agent "$ka")"
row "leases renewed/s" "$(field leases_renewed_per_s "$ka")" "" "" "at most $n x 3 / TTL = $(field expected_renewed_per_s "$ka")/s (each after TTL/3)"
row "time entries/s appended by the leader" "$(field time_entries_per_s "$ka")" "" "" "renewal entries already move cluster time"
row "dropped -> every lease revoked (s)" "$(field revoked_secs "$ka")" "" "" "session leases; checked with lease_list"
# etcd figures
e_ka_rate="-" e_cpu_pct="-" e_us_per_ka="-" e_us_per_lease_s="-" e_rss="-" e_p99="-"
e_main_rate="-" ratio="-" ratio_net="-" e_all_us_per_lease_s="-" ratio_all="-" e_natural_pct="-"
if [ "$with_etcd" = 1 ]; then
  # Marginal keepalive cost: the measured run minus the start-up run (both grant $e_leases
  # leases and set up their streams).
  read -r e_ka_rate e_us_per_ka e_cpu_pct e_all_us_per_ka < <(awk \
    -v t1="$(field total "$cal")" -v s1="$(field secs "$cal")" -v c1="$(field ticks "$cal")" \
    -v a1="$(field all_ticks "$cal")" -v t2="$(field total "$main")" -v s2="$(field secs "$main")" \
    -v c2="$(field ticks "$main")" -v a2="$(field all_ticks "$main")" -v hz="$hz" 'BEGIN {
      dn = t2 - t1; ds = s2 - s1; dc = (c2 - c1) / hz; da = (a2 - a1) / hz
      if (dn > 0 && ds > 0 && dc > 0 && da > 0)
        printf "%.0f %.1f %.1f %.1f\n", dn / ds, dc * 1e6 / dn, 100 * dc / ds, da * 1e6 / dn
      else  # run 2 alone, start-up included
        printf "- %.1f %.1f %.1f\n", (c2 / hz) * 1e6 / t2, 100 * (c2 / hz) / s2, (a2 / hz) * 1e6 / t2}')
  e_all_us_per_lease_s=$(awk -v u="$e_all_us_per_ka" -v t="$ttl_ms" 'BEGIN {printf "%.3f", u * 3000 / t}')
  ratio_all=$(awk -v k="$(field cluster_cpu_us_per_lease_s "$ka")" -v e="$e_all_us_per_lease_s" \
    'BEGIN {if (e + 0 > 0 && k + 0 >= 0) printf "%.4f", k / e; else print "-"}')
  e_main_rate="$(field rate "$main")"
  e_p99="$(ms "$(field p99_us "$main")")"
  e_rss="${E[leader_rss]}"
  # A held lease of TTL T under clientv3's KeepAlive gets one keepalive per T/3: 3/T per second.
  e_us_per_lease_s=$(awk -v u="$e_us_per_ka" -v t="$ttl_ms" 'BEGIN {printf "%.3f", u * 3000 / t}')
  e_natural_pct=$(awk -v u="$e_us_per_lease_s" -v n="$n" 'BEGIN {printf "%.1f", u * n / 1e4}')
  ratio=$(awk -v k="$(field cpu_us_per_lease_s "$ka")" -v e="$e_us_per_lease_s" \
    'BEGIN {if (e + 0 > 0 && k + 0 >= 0) printf "%.4f", k / e; else print "-"}')
  ratio_net=$(awk -v k="$(field net_cpu_us_per_lease_s "$ka")" -v e="$e_us_per_lease_s" \
    'BEGIN {if (e + 0 > 0 && k + 0 >= 0) printf "%.4f", k / e; else print "-"}')
fi
row "keepalive requests/s (etcd's tool, closed loop)" "" "$e_main_rate" "" "as the tool reports it (its Total includes the grants)"
row "   marginal keepalive requests/s" "" "$e_ka_rate" "" "p99 $e_p99 ms (measured run; closed loop, $e_leases in flight)"
row "leader CPU over the window (% of a core)" "$(field leader_cpu_pct "$ka")" "$e_cpu_pct" "" "keel: leader $(field leader "$ka"); idle $(field idle_cpu_pct "$ka")%"
row "   CPU of each member, keel (% of a core)" "$(field cpu_pct_by_member "$ka")" "" "" "members $(field members "$ka")"
row "   leader CPU for $n leases at TTL/3 renewals (% core)" "$(field leader_cpu_pct "$ka")" "$e_natural_pct" "" "etcd: per request x $n x 3/TTL (derived)"
row "leader CPU per keepalive request (us)" "" "$e_us_per_ka" "" "etcd: marginal"
row "leader CPU per held lease-second (us)" "$(field cpu_us_per_lease_s "$ka")" "$e_us_per_lease_s" "$ratio" "keel: raw; etcd: per request x 3/TTL"
row "   keel minus its idle leader CPU" "$(field net_cpu_us_per_lease_s "$ka")" "$e_us_per_lease_s" "$ratio_net" ""
row "CPU of all 3 members per held lease-second (us)" "$(field cluster_cpu_us_per_lease_s "$ka")" "$e_all_us_per_lease_s" "$ratio_all" "every keel replica applies the renewals"
row "leader RSS (MiB)" "$(field leader_rss_mib "$ka")" "$e_rss" "" "keel members: $(field rss_mib_by_member "$ka")"
echo
echo "keel: its renewal messages grow with the number of agents (3), not with the number of leases: each agent"
echo "  renews all of its clients' due leases in one message per lease.renew_tick_ms (200 ms), so the leader saw"
echo "  $(field renew_msgs_per_s "$ka") messages/s for $n leases (at most 3 agents x 5 ticks/s = 15/s, whatever the lease count)."
echo "  CPU figures are the leader keeld's utime+stime (/proc/PID/stat) over the window; 'raw' includes its idle Raft"
echo "  heartbeats and time entries, measured alone for $(field idle_s "$ka") s before the leases ($(field idle_cpu_pct "$ka")% of a core)."
echo "  keeld logs (warn and above, 3 members, before they were stopped): $klog_lines lines${klog_first:+; first: $klog_first}"
if [ "$with_etcd" = 1 ]; then
  echo "etcd: \`benchmark lease-keepalive\` cannot hold leases at a renewal cadence: each of its --clients goroutines"
  echo "  grants one lease (TTL 100 s, fixed) and then sends KeepAliveOnce (a new gRPC stream each) in a closed loop"
  echo "  until --total requests. Run with --clients=$e_leases (so $e_leases leases are held), --conns=$etcd_conns, all 3 endpoints;"
  [ -n "$e_failed" ] && echo "  Lease counts that failed (it grants all at once, panics on a refused grant; any failed request fails a try): $e_failed."
  echo "  etcd's cost per keepalive barely depends on the lease count: the leader renews in memory (a map lookup and an"
  echo "  O(log n) heap update; no Raft entry), so the figure for fewer leases carries over to $n."
  echo "  Start-up run --total=$(field total "$cal") ($(field secs "$cal") s), measured run --total=$(field total "$main") ($(field secs "$main") s); 'marginal' = their difference."
  echo "  A client holding a lease of TTL ${ttl_ms} ms with clientv3's KeepAlive sends one keepalive per TTL/3, so"
  echo "  etcd's leader CPU per held lease-second = CPU per keepalive x 3/TTL ($n leases: $(awk -v n="$n" -v t="$ttl_ms" 'BEGIN {printf "%.0f", n * 3000 / t}') keepalives/s); KeepAliveOnce's"
  echo "  per-request stream set-up makes this an upper bound for etcd. The tool shares the 2 cores with etcd."
  echo "ratio = keel / etcd (lower is better for keel)."
else
  echo "etcd: not measured: $etcd_why."
fi
echo
log "run took $((SECONDS - t_begin)) s"
[ "$smoke" = 1 ] && log "smoke run ok"
exit 0
