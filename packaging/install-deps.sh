#!/usr/bin/env bash
# Installs the Debian 12 packages keel builds and tests with, and only those that are
# missing: a no-op (no apt-get at all) when everything is already there.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config ccache git
  capnproto libcapnp-dev
  libwiredtiger-dev wiredtiger
  libasio-dev libssl-dev
  libspdlog-dev libfmt-dev
  catch2
  libsystemd-dev
  libcli11-dev libtomlplusplus-dev
)
# clang is optional: it builds the libFuzzer target when present.
OPTIONAL=(clang)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
for p in "${OPTIONAL[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$p" || true
done
