#!/usr/bin/env bash
# run.sh: learner agents (--role learner) fed by the relay tree, on real processes on
# 127.0.0.1: 3 voters and 0, 10, then 50 learners (relay.fanout 8, a 16 MiB WiredTiger cache
# each), and a 3-member etcd 3.4 for the local-read comparison, in one run.
#
#   tests/bench/learners/run.sh [--build-dir DIR] [--smoke] [--keel-only] [--counts "0 10 50"]
#                               [--cache DIR] [--keep]
#
# Per learner count: replicated put throughput and p50/p99 (kv_bench, 100 clients over 10
# connections to the voters), the leader's CPU per put and its TCP bytes sent per put (ss's
# bytes_sent over its sockets: to the voters and to the learners it feeds), the apply lag
# commit -> seen by a watcher on every learner (lag_probe, a put every 20 ms during the load),
# and learner RSS; then the leader's CPU and bytes per put again at one offered load for
# every count (kv_bench --rate), which a closed loop slowed by 50 agents on 2 cores does not
# give. Then serializable point reads of one key on a learner, 1 and 100 clients,
# beside etcd's `benchmark range --consistency=s` on its own 3 members, each system with only
# its own processes up (a learner's host runs one agent; 50 agents' timers, or etcd's idle
# members, on these 2 cores are not what a reader on a host competes with): keel's reads with
# 3 voters + 1 learner, then keel stops and etcd's 3 members serve theirs. socket_rtt prints a bare Unix-socket request-reply between two processes beside
# them: where one client's time goes before any keel work.
#
# --smoke: few operations, counts "0 2", no etcd; asserts nothing about times (ctest).
# Ports: voters 25800+i, learners 25900+j, etcd 25700+i (client) and 25750+i (peer); --smoke
# adds 1000. Every process is started here and stopped by PID on exit.
# shellcheck disable=SC2317
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/bench/lib.sh
source "$here/../lib.sh"
build="$here/../../../build"
smoke=0 keel_only=0 keep=0 counts="0 10 50" cache=/var/cache/keel-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$(cd "${2:?}" && pwd)"; shift ;;
    --smoke) smoke=1 ;;
    --keel-only) keel_only=1 ;;
    --counts) counts="${2:?}"; shift ;;
    --cache) cache="${2:?}"; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
keeld="$build/agent/keeld" keelctl="$build/agent/keelctl"
kv_bench="$build/tests/bench/kv/kv_bench" lag_probe="$build/tests/bench/learners/lag_probe"
socket_rtt="$build/tests/bench/learners/socket_rtt"
for b in "$keeld" "$keelctl" "$kv_bench" "$lag_probe" "$socket_rtt"; do
  [ -x "$b" ] || die "$b is missing; build first (packaging/build.sh)"
done
shift_=0 puts=30000 reads=50000 lag_s=4 paced_puts=8000 paced_rate=800
if [ "$smoke" = 1 ]; then
  shift_=1000 puts=300 reads=300 lag_s=1 paced_puts=200 paced_rate=400
  [ "$counts" = "0 10 50" ] && counts="0 2"
  keel_only=1
fi
etcd_bench="$cache/benchmark"
with_etcd=0
if [ "$keel_only" = 0 ]; then
  [ -x "$etcd_bench" ] && command -v etcd >/dev/null ||
    die "etcd or its benchmark tool is missing: tests/bench/cluster/setup-etcd.sh $cache, or --keel-only"
  with_etcd=1
fi

root="$(mktemp -d /tmp/keel-learner-bench.XXXXXX)"
declare -a VPID=(0 0 0) LPID=() EPID=(0 0 0)
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${LPID[@]}" "${VPID[@]}" "${EPID[@]}"; do stop_pid "$p"; done
  if [ "$rc" != 0 ]; then
    for p in "$root"/*.log; do [ -f "$p" ] && { echo "---- $p" >&2; tail -n 8 "$p" >&2; }; done
  fi
  if [ "$keep" = 1 ]; then log "kept $root"; else rm -rf "$root"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

vport() { echo $((25800 + shift_ + $1)); }
lport() { echo $((25900 + shift_ + $1)); }
vsock() { echo "$root/v$1/keel.sock"; }
lsock() { echo "$root/l$1/keel.sock"; }
voters="v0=127.0.0.1:$(vport 0),v1=127.0.0.1:$(vport 1),v2=127.0.0.1:$(vport 2)"
printf '[storage]\ncache_size_mb = 32\n[relay]\nfanout = 8\n' >"$root/voter.toml"
printf '[storage]\ncache_size_mb = 16\n[relay]\nfanout = 8\n' >"$root/learner.toml"
for i in 0 1 2; do port_free "$(vport "$i")" || die "port $(vport "$i") is in use"; done

for i in 0 1 2; do
  mkdir -p "$root/v$i"
  "$keeld" --config "$root/voter.toml" --name "v$i" --initial-cluster "$voters" \
    --initial-cluster-token keel-learner-bench --listen-peer "127.0.0.1:$(vport "$i")" \
    --data-dir "$root/v$i" --socket "$(vsock "$i")" --log-level warn >>"$root/v$i.log" 2>&1 &
  VPID[i]=$!
done
leader=""
for ((k = 0; k < 300; k++)); do
  [ -z "$leader" ] || break
  for i in 0 1 2; do
    if timeout 2 "$keelctl" --socket "$(vsock "$i")" status -w json 2>/dev/null |
      grep -q '"role":"leader"'; then leader=$i; fi
  done
  [ -n "$leader" ] || sleep 0.1
done
[ -n "$leader" ] || die "no leader within 30 s"
log "root $root; leader v$leader; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

start_learner() {
  local j=$1
  mkdir -p "$root/l$j"
  "$keeld" --config "$root/learner.toml" --role learner --name "l$j" --initial-cluster "$voters" \
    --initial-cluster-token keel-learner-bench --listen-peer "127.0.0.1:$(lport "$j")" \
    --data-dir "$root/l$j" --socket "$(lsock "$j")" --log-level warn >>"$root/l$j.log" 2>&1 &
  LPID[j]=$!
}
attached() {  # learners 0..n-1 all report a parent and have applied the leader's index
  local j want st
  want="$(timeout 2 "$keelctl" --socket "$(vsock "$leader")" status -w json 2>/dev/null |
    sed -n 's/.*"applied_index":"\{0,1\}\([0-9]*\).*/\1/p')"
  [ -n "$want" ] || return 1
  for ((j = 0; j < $1; j++)); do
    st="$(timeout 2 "$keelctl" --socket "$(lsock "$j")" status -w json 2>/dev/null)" || return 1
    grep -q '"upstream":"[1-9]' <<<"$st" || return 1
    [ "$(sed -n 's/.*"applied_index":"\{0,1\}\([0-9]*\).*/\1/p' <<<"$st")" -ge "$want" ] 2>/dev/null ||
      return 1
  done
}
tcp_sent() {  # bytes sent over the TCP sockets of pid $1 (ss's bytes_sent)
  ss -tinpH 2>/dev/null | awk -v pid="pid=$1," '
    index($0, pid) {mine = 1; next}
    mine && match($0, /bytes_sent:[0-9]+/) {sum += substr($0, RSTART + 11, RLENGTH - 11)}
    {mine = 0}
    END {printf "%d\n", sum}'
}
vsockets="$(vsock 0),$(vsock 1),$(vsock 2)"
lpid_of_leader="${VPID[$leader]}"
rows=()
have=0
for n in $counts; do
  for ((j = have; j < n; j++)); do start_learner "$j"; done
  have=$((n > have ? n : have))
  for ((k = 0; k < 600; k++)); do attached "$n" && break; sleep 0.1; done
  attached "$n" || die "$n learners not all attached and caught up within 60 s"
  log "$n learners attached and caught up"
  c0=$(cpu_ticks "$lpid_of_leader")
  b0=$(tcp_sent "$lpid_of_leader")
  lag="lag_p50_ms=- lag_p99_ms=-"
  if [ "$n" -gt 0 ]; then
    socks="$(for ((j = 0; j < n; j++)); do printf '%s,' "$(lsock "$j")"; done)"
    "$lag_probe" --voter "$(vsock "$leader")" --learners "$socks" --seconds "$lag_s" \
      >"$root/lag.$n" 2>>"$root/lag.log" &
    lagpid=$!
  fi
  out="$("$kv_bench" --socket "$vsockets" --workload put --clients 100 --conns 10 --ops "$puts")" ||
    die "put load with $n learners"
  if [ "$n" -gt 0 ]; then
    wait "$lagpid" || log "lag_probe reported missing events (see $root/lag.log)"
    lag="$(cat "$root/lag.$n")"
  fi
  c1=$(cpu_ticks "$lpid_of_leader")
  b1=$(tcp_sent "$lpid_of_leader")
  ops=$(field ops "$out")
  ticks_per_s=$(getconf CLK_TCK)
  cpu_us=$(awk -v d=$((c1 - c0)) -v t="$ticks_per_s" -v o="$ops" 'BEGIN {printf "%.1f", d * 1e6 / t / o}')
  egress=$(awk -v d=$((b1 - b0)) -v o="$ops" 'BEGIN {printf "%.0f", d / o}')
  # The same at one offered load for every learner count (--rate): the leader's CPU per put
  # without the batching that a faster run gets (with 50 learners on 2 cores the closed loop
  # above runs several times slower, so its per-put figure also carries smaller batches).
  c0=$(cpu_ticks "$lpid_of_leader")
  b0=$(tcp_sent "$lpid_of_leader")
  paced="$("$kv_bench" --socket "$vsockets" --workload put --clients 100 --conns 10 \
    --ops "$paced_puts" --rate "$paced_rate")" || die "paced put load with $n learners"
  c1=$(cpu_ticks "$lpid_of_leader")
  b1=$(tcp_sent "$lpid_of_leader")
  ops=$(field ops "$paced")
  cpu_paced=$(awk -v d=$((c1 - c0)) -v t="$ticks_per_s" -v o="$ops" 'BEGIN {printf "%.1f", d * 1e6 / t / o}')
  egress_paced=$(awk -v d=$((b1 - b0)) -v o="$ops" 'BEGIN {printf "%.0f", d / o}')
  rss="-"
  if [ "$n" -gt 0 ]; then
    rss=$(for ((j = 0; j < n; j++)); do rss_kib "${LPID[$j]}"; done |
      awk '{s += $1; if ($1 > m) m = $1} END {printf "%.0f/%.0f", s / NR / 1024, m / 1024}')
  fi
  rows+=("$(printf '%8s %9s %8s %8s %10s %10s %9s %9s %12s %11s %10s' "$n" "$(field rate "$out")" \
    "$(field p50_us "$out")" "$(field p99_us "$out")" "$cpu_us" "$egress" \
    "$(field lag_p50_ms "$lag")" "$(field lag_p99_ms "$lag")" "$rss" "$cpu_paced" "$egress_paced")")
  log "$n learners: $out; $lag"
done

# ---- local serializable reads on a learner, beside etcd's ----------------------------------
# Each system is measured with only its own processes up: keel's reads with 3 voters and one
# learner running (no etcd yet), then keel is stopped and etcd's 3 members serve theirs.
conns_for() { echo $(($1 < 10 ? $1 : 10)); }
keel_reads() {  # clients
  "$kv_bench" --socket "$(lsock 0)" --workload get-s --clients "$1" --conns "$(conns_for "$1")" \
    --keys 1 --ops "$reads" || die "learner reads"
}
etcd_reads() {  # clients
  [ "$with_etcd" = 1 ] || { echo "-"; return; }
  etcd_load --conns="$(conns_for "$1")" --clients="$1" range k0000000 --consistency=s \
    --total="$reads" || die "etcd reads"
}
reads_row() {  # label keel etcd
  printf '%-28s %10s %9s %10s %9s %7s\n' "$1" "$(field rate "$2")" "$(field p50_us "$2")" \
    "$(field rate "$3")" "$(field p50_us "$3")" \
    "$(awk -v a="$(field rate "$2")" -v b="$(field rate "$3")" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')"
}
if [ "$have" -eq 0 ]; then start_learner 0; have=1; fi
for ((j = 1; j < have; j++)); do  # all at once
  [ "${LPID[$j]}" -gt 0 ] && { kill -TERM "${LPID[$j]}" 2>/dev/null || true; }
done
for ((j = 1; j < have; j++)); do stop_pid "${LPID[$j]}"; LPID[j]=0; done
for ((k = 0; k < 600; k++)); do attached 1 && break; sleep 0.1; done
attached 1 || die "learner 0 not attached within 60 s"
"$keelctl" --socket "$(vsock "$leader")" put k0000000 "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
for ((k = 0; k < 600; k++)); do attached 1 && break; sleep 0.1; done
rtt="$("$socket_rtt" --rounds "$reads")" || die "socket_rtt"
keel1="$(keel_reads 1)"
keel100="$(keel_reads 100)"
threads="$("$keelctl" --socket "$(lsock 0)" status -w json | sed -n 's/.*"server_threads":"\{0,1\}\([0-9]*\).*/\1/p')"
etcd1="-" etcd100="-"
if [ "$with_etcd" = 1 ]; then
  for p in "${LPID[@]}" "${VPID[@]}"; do  # all at once (never pid 0: the process group)
    [ "$p" -gt 0 ] && { kill -TERM "$p" 2>/dev/null || true; }
  done
  for p in "${LPID[@]}" "${VPID[@]}"; do stop_pid "$p"; done
  LPID=() VPID=(0 0 0)
  ecluster="e0=http://127.0.0.1:25750,e1=http://127.0.0.1:25751,e2=http://127.0.0.1:25752"
  etcd_endpoints="127.0.0.1:25700,127.0.0.1:25701,127.0.0.1:25702"
  for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$root/etcd$i" --listen-client-urls "http://127.0.0.1:$((25700 + i))" \
      --advertise-client-urls "http://127.0.0.1:$((25700 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((25750 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((25750 + i))" \
      --initial-cluster "$ecluster" --initial-cluster-state new >>"$root/etcd$i.log" 2>&1 &
    EPID[i]=$!
  done
  value="$(head -c 256 /dev/zero | tr '\0' v | base64 -w0)"
  for ((k = 0; k < 300; k++)); do  # the same key and value as keel's, once etcd serves
    curl -sf --max-time 2 -X POST http://127.0.0.1:25700/v3/kv/put \
      -d "{\"key\":\"$(printf k0000000 | base64 -w0)\",\"value\":\"$value\"}" >/dev/null 2>&1 && break
    sleep 0.1
  done
  etcd1="$(etcd_reads 1)"
  etcd100="$(etcd_reads 100)"
fi
reads1="$(reads_row "serializable get, 1 client" "$keel1" "$etcd1")"
reads100="$(reads_row "serializable get, 100 clients" "$keel100" "$etcd100")"

echo
echo "learner agents, 3 voters, relay.fanout 8 ($(nproc) cores; $(date -u +%FT%TZ))"
printf '%8s %9s %8s %8s %10s %10s %9s %9s %12s %11s %10s\n' learners "put/s" p50_us p99_us \
  "ldr_cpu_us" "ldr_B/put" lag_p50ms lag_p99ms "rss_MiB(avg/max)" "@rate:cpu_us" "B/put"
for r in "${rows[@]}"; do echo "$r"; done
echo "(@rate: the leader's CPU and TCP bytes per put at $paced_rate puts/s offered for every count)"
echo
printf '%-28s %10s %9s %10s %9s %7s\n' "local read on a learner" "keel/s" "p50_us" "etcd/s" "p50_us" "ratio"
echo "$reads1"
echo "$reads100"
echo "(keel: 3 voters + 1 learner running, the learner on ${threads:-?} server threads; etcd: its 3 members, keel stopped; bare Unix-socket request-reply between two processes: p50 $(field rtt_p50_us "$rtt") us, p99 $(field rtt_p99_us "$rtt") us)"
