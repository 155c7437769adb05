#!/usr/bin/env bash
# run.sh: storage footprint of keel beside etcd 3.4, in one run (issue 9). Prints one table:
# figure | etcd | keel | ratio (keel / etcd).
#
#   tests/bench/storage/run.sh [--build-dir DIR] [--keeld PATH] [--keys N] [--puts N]
#                              [--keel-only] [--cache DIR] [--keep]
#
# Figures (8-byte keys, 256-byte values; keel's values are fresh random bytes for every put,
# etcd's benchmark uses one random value: neither system compresses, so no figure is
# flattered by compression):
#   1. single member, 100 clients, 10k key space, --puts puts (default 30000): bytes the
#      server wrote (/proc/PID/io write_bytes) per put, during the load;
#   2. single member, --keys distinct keys (default 1000000), one put each: bytes written per
#      put during the load, and including the clean shutdown that follows (keel's final
#      checkpoint, etcd's last commit), then the data dir's size (du), per file for keel;
#   3. three members, as 1: write_bytes summed over the members, per put.
# --keeld runs another keeld (for a before/after comparison; kv_bench is this build's).
# Every process is started by this script and stopped by PID; data dirs live in one mktemp
# dir, removed at the end unless --keep. Ports: etcd 23890+i / 23900+i, keel 24900+i.
# Take flock /tmp/keel-bench.lock around it, and run it only when no build runs.
# Functions named keel_* / etcd_* are called as "${sys}_start" etc.: not unreachable.
# shellcheck disable=SC2317
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/bench/lib.sh
source "$here/../lib.sh"
src="$(cd "$here/../../.." && pwd)"
build="$src/build"
keeld=""
keys=1000000
puts=30000
keel_only=0
cache=/var/cache/keel-bench
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$(cd "${2:?}" && pwd)"; shift ;;
    --keeld) keeld="${2:?}"; shift ;;
    --keys) keys="${2:?}"; shift ;;
    --puts) puts="${2:?}"; shift ;;
    --keel-only) keel_only=1 ;;
    --cache) cache="${2:?}"; shift ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
keeld="${keeld:-$build/agent/keeld}"
kv_bench="$build/tests/bench/kv/kv_bench"
fsync_probe="$build/tests/bench/cluster/fsync_probe"
for b in "$keeld" "$kv_bench" "$fsync_probe"; do
  [ -x "$b" ] || { echo "run.sh: $b is missing; build first" >&2; exit 1; }
done
etcd_bench="$cache/benchmark"
systems=(etcd keel)
if [ "$keel_only" = 1 ]; then
  systems=(keel)
elif [ ! -x "$etcd_bench" ] || ! command -v etcd >/dev/null; then
  echo "run.sh: etcd or $etcd_bench missing: run tests/bench/cluster/setup-etcd.sh, or --keel-only" >&2
  exit 1
fi

root="$(mktemp -d /tmp/keel-storage-bench.XXXXXX)"
declare -a PIDS=()
stop_pid() {  # SIGTERM, bounded wait (30 s), then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ "$rc" != 0 ]; then
    for f in "$root"/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  if [ "$keep" = 1 ]; then log "kept $root"; else rm -rf "$root"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wbytes() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io"; }
sum_wbytes() { local t=0 p; for p in "$@"; do t=$((t + $(wbytes "$p"))); done; echo "$t"; }
# SIGTERM, then the last write_bytes read before the process is gone (polled every 10 ms).
stop_counting() {
  local pid=$1 last i v
  last="$(wbytes "$pid")"
  kill -TERM "$pid"
  for ((i = 0; i < 6000; i++)); do
    v="$(awk '/^write_bytes:/ {print $2}' "/proc/$pid/io" 2>/dev/null)" || break
    [ -n "$v" ] || break
    last=$v
    sleep 0.01
  done
  wait "$pid" 2>/dev/null || true
  echo "$last"
}

# ---- keel ---------------------------------------------------------------------------------
KP=()
keel_start() {  # n members under $root/$1; pids in KP
  local tag=$1 n=$2 i cluster=""
  KP=()
  for ((i = 0; i < n; i++)); do cluster+="${cluster:+,}s$i=127.0.0.1:$((24900 + i))"; done
  for ((i = 0; i < n; i++)); do
    mkdir -p "$root/$tag/k$i"
    local peer=()
    [ "$n" -gt 1 ] && peer=(--name "s$i" --initial-cluster "$cluster" --initial-cluster-state new
      --listen-peer "127.0.0.1:$((24900 + i))" --advertise-peer "127.0.0.1:$((24900 + i))")
    "$keeld" --config /dev/null "${peer[@]}" --data-dir "$root/$tag/k$i/data" \
      --socket "$root/$tag/k$i/keel.sock" --log-level warn >>"$root/$tag-k$i.log" 2>&1 &
    KP+=($!)
    PIDS+=($!)
  done
  local k ok
  for ((k = 0; k < 600; k++)); do
    ok=1
    for ((i = 0; i < n; i++)); do [ -S "$root/$tag/k$i/keel.sock" ] || ok=0; done
    [ "$ok" = 1 ] && break
    sleep 0.05
  done
  [ "$ok" = 1 ] || die "keel ($tag) did not start"
  # Until a put succeeds (a leader exists).
  for ((k = 0; k < 300; k++)); do
    "$kv_bench" --socket "$root/$tag/k0/keel.sock" --workload put --clients 1 --ops 1 \
      --keys 1 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "keel ($tag): no put succeeded"
}
keel_socks() {
  local tag=$1 n=$2 i s=""
  for ((i = 0; i < n; i++)); do s+="${s:+,}$root/$tag/k$i/keel.sock"; done
  echo "$s"
}
keel_load() {  # tag members keyspace total
  "$kv_bench" --socket "$(keel_socks "$1" "$2")" --workload put --clients 100 --conns 10 \
    --keys "$3" --ops "$4" --random-values
}

# ---- etcd ---------------------------------------------------------------------------------
EP=()
etcd_start() {
  local tag=$1 n=$2 i cluster=""
  EP=()
  for ((i = 0; i < n; i++)); do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((23900 + i))"; done
  for ((i = 0; i < n; i++)); do
    etcd --name "e$i" --data-dir "$root/$tag/e$i" \
      --listen-client-urls "http://127.0.0.1:$((23890 + i))" \
      --advertise-client-urls "http://127.0.0.1:$((23890 + i))" \
      --listen-peer-urls "http://127.0.0.1:$((23900 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((23900 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-$tag" >>"$root/$tag-e$i.log" 2>&1 &
    EP+=($!)
    PIDS+=($!)
  done
  local k
  for ((k = 0; k < 300; k++)); do
    etcdctl --endpoints="127.0.0.1:23890" put ready x >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "etcd ($tag) did not start"
}
etcd_load() {  # tag members keyspace total
  local n=$2 i eps="" out
  for ((i = 0; i < n; i++)); do eps+="${eps:+,}127.0.0.1:$((23890 + i))"; done
  out="$("$etcd_bench" --endpoints="$eps" --conns=10 --clients=100 put --key-size=8 \
    --sequential-keys --key-space-size="$3" --val-size=256 --total="$4" 2>&1)" ||
    { echo "$out" >&2; return 1; }
  awk '/Requests\/sec:/ {printf "rate=%.0f\n", $2}' <<<"$out"
}

declare -A R
per_put() { awk -v b="$1" -v n="$2" 'BEGIN {printf "%.0f", b / n}'; }

log "root $root; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); keeld $keeld"
out="$("$fsync_probe" "$root" 500)" || die "fsync_probe"
R[fsync_p50]=$(field p50_us "$out")
log "fsync probe: $out"

for sys in "${systems[@]}"; do
  # ---- 1. single member, 10k key space ----
  "${sys}_start" "${sys}1" 1
  if [ "$sys" = etcd ]; then pids=("${EP[@]}"); else pids=("${KP[@]}"); fi
  w0=$(sum_wbytes "${pids[@]}")
  out="$("${sys}_load" "${sys}1" 1 10000 "$puts")" || die "$sys load 1"
  w1=$(sum_wbytes "${pids[@]}")
  R[$sys.b10k]=$(per_put $((w1 - w0)) "$puts")
  R[$sys.rate10k]=$(field rate "$out")
  log "$sys: 1 member, $puts puts on 10k keys: $((w1 - w0)) bytes written; $out"
  for p in "${pids[@]}"; do stop_pid "$p"; done

  # ---- 2. single member, $keys distinct keys ----
  "${sys}_start" "${sys}M" 1
  if [ "$sys" = etcd ]; then pid="${EP[0]}"; else pid="${KP[0]}"; fi
  w0=$(wbytes "$pid")
  t0=$(date +%s)
  out="$("${sys}_load" "${sys}M" 1 "$keys" "$keys")" || die "$sys load 2"
  w1=$(wbytes "$pid")
  w2=$(stop_counting "$pid")
  R[$sys.bM]=$(per_put $((w1 - w0)) "$keys")
  R[$sys.bMstop]=$(per_put $((w2 - w0)) "$keys")
  R[$sys.rateM]=$(field rate "$out")
  dir="$root/${sys}M"
  R[$sys.du]=$(du -sb "$dir" | awk '{printf "%.0f", $1 / 1048576}')
  log "$sys: $keys keys in $(($(date +%s) - t0)) s; written $((w1 - w0)) during, $((w2 - w0)) with shutdown; du ${R[$sys.du]} MiB; $out"
  if [ "$sys" = keel ]; then
    R[keel.files]="$(find "$dir/k0/data" -maxdepth 1 -type f -size +1M -printf '%f %s\n' |
      sort | awk '{printf "%s %.0f, ", $1, $2 / 1048576}')"
  else
    R[etcd.files]="$(cd "$dir/e0/member" && du -sm snap wal | awk '{printf "%s %s, ", $2, $1}')"
  fi

  # ---- 3. three members, 10k key space ----
  "${sys}_start" "${sys}3" 3
  if [ "$sys" = etcd ]; then pids=("${EP[@]}"); else pids=("${KP[@]}"); fi
  w0=$(sum_wbytes "${pids[@]}")
  out="$("${sys}_load" "${sys}3" 3 10000 "$puts")" || die "$sys load 3"
  w1=$(sum_wbytes "${pids[@]}")
  R[$sys.b3]=$(per_put $((w1 - w0)) "$puts")
  R[$sys.rate3]=$(field rate "$out")
  log "$sys: 3 members, $puts puts on 10k keys: $((w1 - w0)) bytes written (sum); $out"
  for p in "${pids[@]}"; do stop_pid "$p"; done
done

get() { echo "${R[$1]:-}"; }
ratio() {
  local e k
  e="$(get "etcd.$1")" k="$(get "keel.$1")"
  [ -n "$e" ] && [ -n "$k" ] && awk -v e="$e" -v k="$k" 'BEGIN {if (e > 0) printf "%.2f", k / e}'
}
row() { printf '%-58s %12s %12s %7s\n' "$1" "$(get "etcd.$2")" "$(get "keel.$2")" "$(ratio "$2")"; }
echo
echo "storage footprint: 8-byte keys, 256-byte random values (uncompressed in both); fdatasync p50 $(get fsync_p50) us"
printf '%-58s %12s %12s %7s\n' figure etcd keel ratio
row "bytes written per put, 1 member, 10k keys, $puts puts" b10k
row "bytes written per put, 3 members (sum), 10k keys" b3
row "bytes written per put, 1 member, $keys new keys" bM
row "  the same, including the clean shutdown" bMstop
row "disk after $keys keys (MiB, du of the data dir)" du
row "put/s, 1 member, 100 clients, 10k keys" rate10k
row "put/s, 3 members, 100 clients, 10k keys" rate3
row "put/s, 1 member, 100 clients, $keys new keys" rateM
echo "keel files > 1 MiB (MiB): $(get keel.files)"
[ -n "$(get etcd.files)" ] && echo "etcd (MiB): $(get etcd.files)"
exit 0
