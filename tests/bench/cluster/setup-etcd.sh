#!/usr/bin/env bash
# setup-etcd.sh [CACHE_DIR]: make etcd 3.4 and etcd's load generator available for run.sh.
#
# Installs Debian's etcd-server and etcd-client when missing, then builds etcd's
# tools/benchmark offline from Debian's source package (STACK.md §10) into
# CACHE_DIR/benchmark (default /var/cache/keel-bench), once. Prints the path of the
# benchmark binary on its last line. Needs root for apt; nothing is downloaded but Debian
# packages.
set -euo pipefail
cache="${1:-/var/cache/keel-bench}"
bin="$cache/benchmark"
if [ -x "$bin" ] && command -v etcd >/dev/null; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
apt_install() {
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >&2
}
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/go.etcd.io/etcd ] || need+=(golang-etcd-server-dev)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update >&2
  apt_install "${need[@]}"
fi
if [ ! -x "$bin" ]; then
  srcpkg="$(dpkg-query -W -f='${source:Package}=${source:Version}' etcd-server)"
  src="$cache/src"
  mkdir -p "$src"
  tools="$(find "$src" -maxdepth 3 -path '*/tools/benchmark' -type d | head -1)"
  if [ -z "$tools" ]; then
    # A deb-src entry with the machine's own mirror (bookworm main).
    list=/etc/apt/sources.list.d/keel-bench-src.sources
    if [ ! -f "$list" ]; then
      uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)"
      uri="${uri:-http://deb.debian.org/debian}"
      printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\n%s\n' "$uri" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$list"
      apt-get update >&2
    fi
    (cd "$src" && apt-get source "$srcpkg" >&2)
    tools="$(find "$src" -maxdepth 3 -path '*/tools/benchmark' -type d | head -1)"
  fi
  overlay="$cache/gopath"
  rm -rf "$overlay"
  mkdir -p "$overlay/src/go.etcd.io/etcd/tools"
  cp -r "$tools" "$overlay/src/go.etcd.io/etcd/tools/benchmark"
  (cd "$overlay/src/go.etcd.io/etcd/tools/benchmark" &&
    GO111MODULE=off GOPROXY=off GOPATH="$overlay:/usr/share/gocode" \
      GOCACHE="$cache/gocache" CGO_ENABLED=0 go build -o "$bin.tmp" . >&2)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
