#!/usr/bin/env bash
# Installs, idempotently, every Debian package celeriac needs to build, test, run and benchmark.
# Uses sudo when not root; when it cannot install, prints the exact command to run.
set -euo pipefail

PKGS=(
  build-essential pkg-config make gcc clang clang-format
  librabbitmq-dev libhiredis-dev libmsgpack-dev libjansson-dev libcmocka-dev
  libsqlite3-dev libssl-dev libmicrohttpd-dev
  rabbitmq-server redis-server redis-tools
  python3 python3-celery python3-redis python3-msgpack python3-pytest
  openssl curl procps psmisc iproute2 gnuplot-nox docker-compose
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo"
  else
    echo "deps: not root and no password-less sudo; run this as root, then try again:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# The system-wide servers must not start on install: the project runs its own on free ports.
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  policy_added=1
fi
cleanup() { [ $policy_added -eq 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "deps: done"
