#!/usr/bin/env bash
# Install what migrate's scripts need on Debian 12 (run as root): MariaDB 10.11 server and
# client from Debian, openssl for the TLS test, python3 for scripts/wan-proxy.py (the simulated VPN); with "bench", also mydumper, sysbench and
# percona-toolkit. Skips what is already installed.
set -euo pipefail
want=(mariadb-server mariadb-client openssl time prometheus python3)
if [ "${1:-}" = bench ]; then want+=(mydumper sysbench percona-toolkit); fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # keep the packaged service from starting: our scripts start their own servers
  ours=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && ours=1
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -z "$ours" ] || rm -f /usr/sbin/policy-rc.d
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 2
fi
