#!/usr/bin/env bash
# Installs the system packages Paddock needs on Debian 12 (idempotent).
set -euo pipefail
pkgs=(runc crun iptables nftables iproute2 protobuf-compiler python3-venv tmux curl ca-certificates docker-registry skopeo umoci busybox-static e2fsprogs mount podman)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}"
fi
