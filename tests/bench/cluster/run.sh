#!/usr/bin/env bash
# run.sh: a 3-member keel cluster beside a 3-member etcd 3.4 cluster on 127.0.0.1, the same
# workloads on both in one run, one table: figure | etcd | keel | ratio (keel / etcd) | target.
#
#   tests/bench/cluster/run.sh [--build-dir DIR] [--smoke] [--keel-only] [--no-install]
#                              [--cache DIR] [--trials N] [--keep]
#
# Shape (both systems): 8-byte keys, 256-byte values, a 10k key space, 10 connections shared
# by the clients, spread over the three members in turn (etcd's `benchmark` tool does the
# same with --endpoints of all three). keel's load comes from kv_bench --workload, etcd's
# from etcd's own tools/benchmark (built offline once, see setup-etcd.sh). The phases
# alternate between the two systems so that load from elsewhere on the machine hits both
# alike; figures are noisy on a busy machine and only ratios within one run compare.
#
# --smoke: a few operations per phase and one kill trial; etcd only when it and its
# benchmark tool are already installed (never installs). Used by ctest; asserts nothing
# about times, fails only when a phase fails.
#
# Every process is started by this script and stopped by PID (trap on exit); data dirs live
# in one mktemp dir, removed at the end unless --keep. Ports: etcd 23790+i (client) and
# 23800+i (peer), keel 24800+i (peer); --smoke adds 100 so a smoke run beside a full one
# does not collide.

# Functions named keel_* / etcd_* are called as "${sys}_put" etc.: not unreachable.
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
trials=""
keep=0

usage() {
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$(cd "${2:?}" && pwd)"; shift ;;
    --smoke) smoke=1 ;;
    --keel-only) keel_only=1 ;;
    --no-install) install=0 ;;
    --cache) cache="${2:?}"; shift ;;
    --trials) trials="${2:?}"; shift ;;
    --keep) keep=1 ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

keeld="$build/agent/keeld"
keelctl="$build/agent/keelctl"
kv_bench="$build/tests/bench/kv/kv_bench"
fsync_probe="$build/tests/bench/cluster/fsync_probe"
for b in "$keeld" "$keelctl" "$kv_bench" "$fsync_probe"; do
  [ -x "$b" ] || { echo "run.sh: $b is missing; build first (packaging/build.sh)" >&2; exit 1; }
done

# ---- sizes ------------------------------------------------------------------------------
if [ "$smoke" = 1 ]; then
  put100_total=400 put1_total=40 get_total=400 rss_keys=1000 fsync_count=50
  trials="${trials:-1}"
  port_shift=100
else
  put100_total=30000 put1_total=2000 get_total=50000 rss_keys=100000 fsync_count=1000
  trials="${trials:-10}"
  port_shift=0
fi
keyspace=10000
clients=100
conns=10


# ---- etcd availability --------------------------------------------------------------------
etcd_bench=""
with_etcd=0
if [ "$keel_only" = 0 ]; then
  if [ -x "$cache/benchmark" ] && command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
    etcd_bench="$cache/benchmark"
  elif [ "$smoke" = 0 ] && [ "$install" = 1 ]; then
    log "etcd or its benchmark tool is missing: setup-etcd.sh $cache (apt + an offline go build)"
    etcd_bench="$("$here/setup-etcd.sh" "$cache" | tail -1)"
  fi
  if [ -n "$etcd_bench" ] && [ -x "$etcd_bench" ]; then
    with_etcd=1
  elif [ "$smoke" = 1 ]; then
    log "etcd tools absent: smoke run of keel only"
  else
    die "etcd tools unavailable (use --keel-only to run keel alone)"
  fi
fi

# ---- processes and cleanup ----------------------------------------------------------------
root="$(mktemp -d /tmp/keel-cluster-bench.XXXXXX)"
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

now_us() {  # wall clock in microseconds, without a fork
  local t=${EPOCHREALTIME/./}
  echo "$t"
}


# ---- keel -------------------------------------------------------------------------------
kpeer() { echo $((24800 + port_shift + $1)); }
ksock() { echo "$root/keel/k$1/keel.sock"; }
kcluster="k0=127.0.0.1:$(kpeer 0),k1=127.0.0.1:$(kpeer 1),k2=127.0.0.1:$(kpeer 2)"
keel_sockets="$(ksock 0),$(ksock 1),$(ksock 2)"

keel_start() {  # member i, in the background; its pid in KPID[i]
  local i=$1
  mkdir -p "$root/keel/k$i"
  "$keeld" --config /dev/null --name "k$i" --initial-cluster "$kcluster" \
    --initial-cluster-state new --initial-cluster-token keel-bench \
    --listen-peer "127.0.0.1:$(kpeer "$i")" --advertise-peer "127.0.0.1:$(kpeer "$i")" \
    --data-dir "$root/keel/k$i" --socket "$(ksock "$i")" --log-level warn \
    >>"$root/keel-k$i.log" 2>&1 &
  KPID[i]=$!
}
keel_put() {  # member key value: one acknowledged put, at most 2 s
  timeout 2 "$keelctl" --socket "$(ksock "$1")" put "$2" "$3" >/dev/null 2>&1
}
keel_get() {  # member key: a linearizable read that finds the key
  timeout 2 "$keelctl" --socket "$(ksock "$1")" get "$2" 2>/dev/null | grep -q .
}
keel_leader() {  # index of the member that says it leads, or nothing
  local i
  for i in 0 1 2; do
    [ "${KPID[$i]}" -gt 0 ] || continue
    if timeout 2 "$keelctl" --socket "$(ksock "$i")" status -w json 2>/dev/null |
      grep -q '"role":"leader"'; then
      echo "$i"
      return
    fi
  done
}
keel_load() {  # kv_bench --workload ... ; prints its key=value line
  "$kv_bench" --socket "$keel_sockets" "$@"
}

# ---- etcd -------------------------------------------------------------------------------
eclient() { echo $((23790 + port_shift + $1)); }
epeer() { echo $((23800 + port_shift + $1)); }
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
    --initial-cluster-token keel-bench >>"$root/etcd-e$i.log" 2>&1 &
  EPID[i]=$!
}
b64() { printf '%s' "$1" | base64 -w0; }
etcd_put() {  # member key value: one acknowledged put (gRPC gateway), at most 2 s
  curl -sf --max-time 2 -X POST "http://127.0.0.1:$(eclient "$1")/v3/kv/put" \
    -d "{\"key\":\"$(b64 "$2")\",\"value\":\"$(b64 "$3")\"}" >/dev/null 2>&1
}
etcd_get() {  # member key: a linearizable read that finds the key
  curl -sf --max-time 2 -X POST "http://127.0.0.1:$(eclient "$1")/v3/kv/range" \
    -d "{\"key\":\"$(b64 "$2")\"}" 2>/dev/null | grep -q '"kvs"'
}
etcd_leader() {
  local i
  for i in 0 1 2; do
    [ "${EPID[$i]}" -gt 0 ] || continue
    # endpoint, id, version, db size, is leader, is learner, term, index, applied, errors
    if timeout 2 etcdctl --endpoints="127.0.0.1:$(eclient "$i")" endpoint status -w simple \
      2>/dev/null | awk -F', ' '$5 == "true" {found = 1} END {exit !found}'; then
      echo "$i"
      return
    fi
  done
}

# ---- generic helpers (system = keel | etcd) ----------------------------------------------
pids_of() { if [ "$1" = keel ]; then echo "${KPID[*]}"; else echo "${EPID[*]}"; fi; }

# The first put acknowledged through member `via` after t0, as a client sees it that sends a
# put every 25 ms and waits at most 2 s for each (an attempt sent during the failover may hang
# until that timeout: a follower forwarded it to the dead leader). Prints the microseconds
# from t0 to that acknowledgement. Bounded: attempts for 30 s.
first_put_after() {
  local sys=$1 via=$2 t0=$3 key=$4 dir k first deadline
  local -a apids=()
  dir="$(mktemp -d "$root/attempts.XXXXXX")"
  deadline=$(($(now_us) + 30000000))
  for ((k = 0; k < 1200; k++)); do
    (if "${sys}_put" "$via" "$key" v; then now_us >"$dir/t.$k" && mv "$dir/t.$k" "$dir/ok.$k"; fi) &
    apids+=($!)
    sleep 0.025
    first="$(cat "$dir"/ok.* 2>/dev/null | sort -n | head -1)"
    [ -z "$first" ] || break
    [ "$(now_us)" -lt "$deadline" ] || break
  done
  for k in "${apids[@]}"; do wait "$k" 2>/dev/null || true; done
  first="$(cat "$dir"/ok.* 2>/dev/null | sort -n | head -1)"
  rm -rf "$dir"
  [ -n "$first" ] || return 1
  echo $((first - t0))
}
# Waits (bounded, 30 s) until member i takes a put and a linearizable read finds it.
wait_member_ready() {
  local sys=$1 i=$2 key="ready-$RANDOM" k
  for ((k = 0; k < 300; k++)); do
    if "${sys}_put" "$i" "$key" v && "${sys}_get" "$i" "$key"; then return 0; fi
    sleep 0.1
  done
  return 1
}
wait_leader() {  # prints the leader's index; bounded, 30 s
  local sys=$1 k l
  for ((k = 0; k < 300; k++)); do
    l="$("${sys}_leader")"
    if [ -n "$l" ]; then
      echo "$l"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

systems=(keel)
[ "$with_etcd" = 1 ] && systems=(etcd keel)
declare -A R  # results: R[sys.figure]

for p in $(kpeer 0) $(kpeer 1) $(kpeer 2); do port_free "$p" || die "port $p is in use"; done
if [ "$with_etcd" = 1 ]; then
  for i in 0 1 2; do
    for p in $(eclient "$i") $(epeer "$i"); do port_free "$p" || die "port $p is in use"; done
  done
fi
log "root $root; systems: ${systems[*]}; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- 6. start 3 members -> first acknowledged put ------------------------------------------
for sys in "${systems[@]}"; do
  t0=$(now_us)
  for i in 0 1 2; do "${sys}_start" "$i"; done
  us="$(first_put_after "$sys" 0 "$t0" first-put)" || die "$sys: no put acknowledged within 30 s of start"
  R[$sys.start]=$((us / 1000))
  log "$sys: started; first put acknowledged after ${R[$sys.start]} ms"
  for i in 0 1 2; do wait_member_ready "$sys" "$i" || die "$sys: member $i not ready"; done
done

# ---- 1 + 8. replicated put, 100 clients; CPU of all members ---------------------------------
# Twice: clients spread over all members (followers forward to the leader), then clients of
# the leader only (etcd: benchmark --target-leader).
# Runs a load generator, appending gen_cpu_s=S (its user + system CPU) to its key=value line.
with_cpu() {
  local tf out rc=0
  tf="$(mktemp "$root/time.XXXXXX")"
  exec 3>&2
  out="$( { TIMEFORMAT='%U %S'; time "$@" 2>&3; } 2>"$tf")" || rc=$?
  exec 3>&-
  [ "$rc" = 0 ] || { rm -f "$tf"; return "$rc"; }
  echo "$out gen_cpu_s=$(awk '{printf "%.2f", $1 + $2}' "$tf")"
  rm -f "$tf"
}
per_fsync() {  # a kv_bench put line -> puts per log fsync of the leader
  awk -v n="$(field ops "$1")" -v f="$(field fsyncs "$1")" \
    'BEGIN {if (f + 0 > 0) printf "%.1f", n / f; else printf "-"}'
}
busy() {  # a key=value line -> cores the generator kept busy (gen_cpu_s / secs)
  awk -v c="$(field gen_cpu_s "$1")" -v s="$(field secs "$1")" \
    'BEGIN {if (s + 0 > 0) printf "%.2f", c / s; else printf "-"}'
}
put_load() {  # sys target(all|leader) clients conns keyspace total
  local sys=$1 target=$2 n=$3 c=$4 ks=$5 total=$6 l
  if [ "$sys" = keel ]; then
    # The leader's socket first: kv_bench reports the log fsyncs of the first socket's member.
    l="$(wait_leader keel)" || return 1
    local socks
    socks="$(ksock "$l")"
    if [ "$target" = all ]; then
      socks="$socks,$(ksock $(((l + 1) % 3))),$(ksock $(((l + 2) % 3)))"
    fi
    with_cpu "$kv_bench" --socket "$socks" --workload put --clients "$n" --conns "$c" \
      --keys "$ks" --ops "$total"
  else
    local tl=()
    [ "$target" = leader ] && tl=(--target-leader)
    with_cpu etcd_load "${tl[@]}" --conns="$c" --clients="$n" put --key-size=8 --sequential-keys \
      --key-space-size="$ks" --val-size=256 --total="$total"
  fi
}
for target in all leader; do
  for sys in "${systems[@]}"; do
    # shellcheck disable=SC2046
    c0=$(cpu_ticks $(pids_of "$sys"))
    out="$(put_load "$sys" $target $clients $conns $keyspace $put100_total)" ||
      die "$sys put x$clients ($target)"
    # shellcheck disable=SC2046
    c1=$(cpu_ticks $(pids_of "$sys"))
    R[$sys.put100${target}_rate]=$(field rate "$out")
    R[$sys.put100${target}_p50]=$(field p50_us "$out")
    R[$sys.put100${target}_p99]=$(field p99_us "$out")
    R[$sys.put100${target}_busy]=$(busy "$out")
    R[$sys.put100${target}_perfsync]=$(per_fsync "$out")
    R[$sys.cpu_${target}]=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n=$put100_total \
      'BEGIN {printf "%.0f", t / hz / n * 1e6}')
    log "$sys: put x$clients via $target: $out; CPU $((c1 - c0)) ticks"
  done
done

# ---- 2. replicated put, 1 client; fdatasync p50 of this disk -------------------------------
for sys in "${systems[@]}"; do
  out="$("$fsync_probe" "$root" "$fsync_count")" || die "fsync_probe"
  R[$sys.fsync_p50]=$(field p50_us "$out")
  log "$sys: fsync probe: $out"
  if [ "$sys" = keel ]; then
    out="$(put_load keel leader 1 1 $keyspace $put1_total)" || die "keel put x1"
  else
    out="$(put_load etcd leader 1 1 $keyspace $put1_total)" || die "etcd put x1"
  fi
  R[$sys.put1_p50]=$(field p50_us "$out")
  R[$sys.put1_rate]=$(field rate "$out")
  R[$sys.put1_perfsync]=$(per_fsync "$out")
  log "$sys: put x1: $out"
done

# ---- 3 + 4. linearizable and serializable get, 100 clients ---------------------------------
# One key, k0000000, as etcd's `benchmark range KEY` reads.
if [ "$with_etcd" = 1 ]; then
  etcd_put 0 k0000000 "$(head -c 256 /dev/zero | tr '\0' v)" || die "etcd: put k0000000"
fi
for mode in l s; do
  for sys in "${systems[@]}"; do
    if [ "$sys" = keel ]; then
      out="$(with_cpu keel_load --workload "get-$mode" --clients $clients --conns $conns --keys 1 \
        --ops $get_total)" || die "keel get-$mode"
    else
      out="$(with_cpu etcd_load --conns=$conns --clients=$clients range k0000000 --consistency=$mode \
        --total=$get_total)" || die "etcd get-$mode"
    fi
    R[$sys.get${mode}_rate]=$(field rate "$out")
    R[$sys.get${mode}_busy]=$(busy "$out")
    log "$sys: get ($mode) x$clients: $out"
  done
done

# ---- 7. RSS per member after 100k distinct keys ---------------------------------------------
for sys in "${systems[@]}"; do
  # Through the leader: the memory figure does not depend on the path, the time does.
  out="$(put_load "$sys" leader $clients $conns $rss_keys $rss_keys)" || die "$sys fill"
  rss=""
  for pid in $(pids_of "$sys"); do rss="$rss $(rss_kib "$pid")"; done
  R[$sys.rss]="$(awk -v l="$rss" 'BEGIN {n = split(l, a, " "); for (i = 1; i <= n; i++)
    printf "%s%.0f", (i > 1 ? "/" : ""), a[i] / 1024}')"
  R[$sys.rss_max]="$(awk -v l="$rss" 'BEGIN {n = split(l, a, " "); m = 0; for (i = 1; i <= n; i++)
    if (a[i] > m) m = a[i]; printf "%.0f", m / 1024}')"
  log "$sys: $rss_keys keys put ($out); RSS KiB:$rss"
done

# ---- 5. kill -9 leader -> next acknowledged write; restart it --------------------------------
declare -A KT  # KT[sys] = space-separated trial times in ms
for ((t = 1; t <= trials; t++)); do
  for sys in "${systems[@]}"; do
    leader="$(wait_leader "$sys")" || die "$sys: no leader"
    via=$(((leader + 1) % 3))
    if [ "$sys" = keel ]; then pid=${KPID[$leader]}; else pid=${EPID[$leader]}; fi
    t0=$(now_us)
    kill -KILL "$pid"
    us="$(first_put_after "$sys" "$via" "$t0" "kill-$t")" ||
      die "$sys: no put acknowledged within 30 s of killing the leader"
    wait "$pid" 2>/dev/null || true
    KT[$sys]="${KT[$sys]:-} $((us / 1000))"
    log "$sys: trial $t: killed leader $leader (pid $pid); put via $via acknowledged after $((us / 1000)) ms"
    "${sys}_start" "$leader"
    wait_member_ready "$sys" "$leader" || die "$sys: restarted member $leader not ready"
  done
done
for sys in "${systems[@]}"; do
  # shellcheck disable=SC2086
  read -r R[$sys.kill_med] R[$sys.kill_max] < <(printf '%s\n' ${KT[$sys]} | sort -n | awk '
    {a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
    printf "%.0f %d\n", m, a[NR]}')
done

# ---- report -----------------------------------------------------------------------------
get() { echo "${R[$1]:--}"; }
ratio() {  # keel / etcd
  awk -v k="$(get "keel.$1")" -v e="$(get "etcd.$1")" \
    'BEGIN {if (e + 0 > 0 && k != "-") printf "%.2f", k / e; else printf "-"}'
}
ms() { awk -v v="$1" 'BEGIN {if (v == "-" || v == "") print "-"; else printf "%.2f", v / 1000}'; }
met() {  # condition text -> "(met)" / "(missed)"
  if awk "BEGIN {exit !($1)}" 2>/dev/null; then echo "met"; else echo "MISSED"; fi
}
row() { printf '| %-50s | %19s | %19s | %6s | %-22s |\n' "$@"; }

r_put=$(ratio put100all_rate)
r_putl=$(ratio put100leader_rate)
t_put=">= 3x etcd"
t_putl=""
if [ "$with_etcd" = 1 ]; then
  t_put=">= 3x etcd: $(met "$r_put >= 3")"
  t_putl=">= 3x etcd: $(met "$r_putl >= 3")"
fi
t_p99="<= 20 ms: $(met "$(get keel.put100all_p99) <= 20000")"
t_p99l="<= 20 ms: $(met "$(get keel.put100leader_p99) <= 20000")"
echo
echo "keel vs etcd 3.4.23, 3 members each on 127.0.0.1, $(nproc) cores, $(date -u +%FT%TZ)$([ "$smoke" = 1 ] && echo ' (SMOKE: tiny counts, figures meaningless)')"
echo "8-byte keys, 256-byte values, key space $keyspace; $clients clients share $conns connections, spread over all 3 members"
echo "(1b, 2 and the fill before 7: to the leader only); gets read one key, k0000000"
echo "ratio = keel / etcd; (+) higher is better, (-) lower is better; only ratios within one run compare"
echo
row "figure" "etcd" "keel" "ratio" "target"
row "--------------------------------------------------" "-------------------" "-------------------" "------" "----------------------"
row "1. put, $clients clients via all 3: ops/s (+)" "$(get etcd.put100all_rate)" "$(get keel.put100all_rate)" "$r_put" "$t_put"
row "   p50 latency (ms) (-)" "$(ms "$(get etcd.put100all_p50)")" "$(ms "$(get keel.put100all_p50)")" "$(ratio put100all_p50)" ""
row "   p99 latency (ms) (-)" "$(ms "$(get etcd.put100all_p99)")" "$(ms "$(get keel.put100all_p99)")" "$(ratio put100all_p99)" "$t_p99"
row "1b. put, $clients clients to the leader: ops/s (+)" "$(get etcd.put100leader_rate)" "$(get keel.put100leader_rate)" "$r_putl" "$t_putl"
row "   p50 latency (ms) (-)" "$(ms "$(get etcd.put100leader_p50)")" "$(ms "$(get keel.put100leader_p50)")" "$(ratio put100leader_p50)" ""
row "   p99 latency (ms) (-)" "$(ms "$(get etcd.put100leader_p99)")" "$(ms "$(get keel.put100leader_p99)")" "$(ratio put100leader_p99)" "$t_p99l"
row "2. put, 1 client: p50 latency (ms) (-)" "$(ms "$(get etcd.put1_p50)")" "$(ms "$(get keel.put1_p50)")" "$(ratio put1_p50)" ""
row "   throughput (ops/s) (+)" "$(get etcd.put1_rate)" "$(get keel.put1_rate)" "$(ratio put1_rate)" ""
row "   fdatasync p50 of this disk (ms), 4 KiB" "$(ms "$(get etcd.fsync_p50)")" "$(ms "$(get keel.fsync_p50)")" "" "(probe before each)"
row "   keel: puts per leader log fsync in 1 / 1b / 2" "" \
  "$(get keel.put100all_perfsync)/$(get keel.put100leader_perfsync)/$(get keel.put1_perfsync)" "" "group commit"
row "3. linearizable get, $clients clients (ops/s) (+)" "$(get etcd.getl_rate)" "$(get keel.getl_rate)" "$(ratio getl_rate)" ""
row "4. serializable get, $clients clients (ops/s) (+)" "$(get etcd.gets_rate)" "$(get keel.gets_rate)" "$(ratio gets_rate)" ""
row "   load generator, cores busy in 1 / 1b / 3 / 4" "$(get etcd.put100all_busy)/$(get etcd.put100leader_busy)/$(get etcd.getl_busy)/$(get etcd.gets_busy)" \
  "$(get keel.put100all_busy)/$(get keel.put100leader_busy)/$(get keel.getl_busy)/$(get keel.gets_busy)" "" "of 2 cores"
row "5. kill -9 leader -> next put, median (ms) (-)" "$(get etcd.kill_med)" "$(get keel.kill_med)" "$(ratio kill_med)" "$trials trials"
row "   worst (ms) (-)" "$(get etcd.kill_max)" "$(get keel.kill_max)" "$(ratio kill_max)" ""
row "6. start 3 members -> first put (ms) (-)" "$(get etcd.start)" "$(get keel.start)" "$(ratio start)" ""
row "7. RSS per member after $rss_keys keys (MiB) (-)" "$(get etcd.rss)" "$(get keel.rss)" "$(ratio rss_max)" "ratio of the largest"
row "8. CPU per put, 3 members summed (us) (-)" "$(get etcd.cpu_all)" "$(get keel.cpu_all)" "$(ratio cpu_all)" "during 1"
row "8b. CPU per put, 3 members summed (us) (-)" "$(get etcd.cpu_leader)" "$(get keel.cpu_leader)" "$(ratio cpu_leader)" "during 1b"
echo
echo "keel: default [raft] (tick 50 ms, election 10 ticks, randomized 1-2x); etcd: defaults (heartbeat 100 ms, election 1000 ms)."
echo "kill trials: SIGKILL of the leader -> first put acknowledged through a survivor; a put sent every 25 ms, each waited for at most 2 s (keelctl; curl to etcd's gateway)."
[ "$smoke" = 1 ] && log "smoke run ok"
exit 0
