# Shared by the benchmark scripts (sourced): logging, stopping processes by PID, CPU and RSS
# of processes, key=value fields, and etcd's benchmark tool as a load generator. A script may
# define its own version of one after sourcing (storage/run.sh: a 30 s stop_pid, its etcd_load).
# shellcheck shell=bash

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}

stop_pid() {  # SIGTERM, bounded wait (10 s), then SIGKILL
  local pid=$1 i
  [ "$pid" -gt 0 ] 2>/dev/null || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cpu_ticks() {  # utime + stime of the given pids, in clock ticks
  local total=0 pid stat
  for pid in "$@"; do
    stat="$(cat "/proc/$pid/stat")"
    stat="${stat##*') '}"  # fields from 3 (state) on
    # shellcheck disable=SC2086
    set -- $stat
    total=$((total + ${12} + ${13}))  # fields 14 and 15
  done
  echo "$total"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

# etcd's benchmark tool ($etcd_bench) against $etcd_endpoints; prints a key=value line like
# kv_bench --workload's (rate, secs, p50_us, p99_us, p999_us).
etcd_load() {
  local out
  out="$("$etcd_bench" --endpoints="$etcd_endpoints" --precise "$@" 2>&1)" || {
    echo "$out" >&2
    return 1
  }
  if grep -q 'Error distribution' <<<"$out"; then
    echo "$out" | sed -n '/Error distribution/,$p' >&2
    return 1
  fi
  awk '
    /Requests\/sec:/ {rate = $2}
    /Total:/ {secs = $2}
    $1 == "50%" {p50 = $3 * 1e6}
    $1 == "99%" {p99 = $3 * 1e6}
    $1 == "99.9%" {p999 = $3 * 1e6}
    END {printf "rate=%.0f secs=%s p50_us=%.1f p99_us=%.1f p999_us=%.1f\n", rate, secs, p50, p99, p999}
  ' <<<"$out"
}
