#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the main job need (idempotent).
# Fresh Debian 12 with only the Swift toolchain is enough; runs apt-get through sudo when not root.
set -euo pipefail
pkgs=(liblmdb-dev libzstd-dev libssl-dev pkg-config lmdb-utils protobuf-compiler curl openssl python3-venv bubblewrap
  libseccomp-dev libmnl-dev libnftables-dev python3 git strace util-linux iproute2 nftables openssh-client openssh-server openssh-sftp-server
  nginx patchelf python3-websockets python3-botocore python3-cryptography rsync etcd-server haproxy libnginx-mod-stream
  zlib1g-dev libc6-dev libstdc++-12-dev)  # the static archives the fully static supervisor and launcher link
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  # The tests run `sshd -i` per connection inside sandboxes; a system sshd on port 22 that this install
  # may have started is not wanted (only when this script installed openssh-server).
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    $SUDO systemctl disable --now ssh.service >/dev/null 2>&1 || $SUDO service ssh stop >/dev/null 2>&1 || true
  fi
  # nginx is the reverse proxy of the cloud-gateway tests, which start their own instances on loopback
  # ports; the system instance on port 80 that the package may have started is not wanted.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    $SUDO systemctl disable --now nginx.service >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
  fi
  # etcd is the peer of scripts/bench.sh, which starts its own instance on loopback ports with a temporary
  # data directory; the system instance the package may have started is not wanted.
  if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
    $SUDO systemctl disable --now etcd.service >/dev/null 2>&1 || $SUDO service etcd stop >/dev/null 2>&1 || true
  fi
  # haproxy (and nginx's stream module) are the peer relays of `openshell-sandbox-bench --proxy`, which
  # starts its own instances on a veth pair of its own; the system instance the package may have started
  # is not wanted.
  if [[ " ${missing[*]} " == *" haproxy "* ]]; then
    $SUDO systemctl disable --now haproxy.service >/dev/null 2>&1 || $SUDO service haproxy stop >/dev/null 2>&1 || true
  fi
fi
echo "system packages ready: ${pkgs[*]}"

# Python packages of the audit tests (OCSF schema validation, the OTLP/gRPC logs receiver): a venv at
# .build-venv-audit from Tests/audit-tools/requirements.txt, reinstalled only when that file changes.
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.build-venv-audit"
req="$root/Tests/audit-tools/requirements.txt"
# shellcheck source=scripts/venv.sh
. "$root/scripts/venv.sh"
ensure_venv "$venv" "$req"
echo "python packages ready: $venv ($(grep -cE '^[a-z]' "$req") packages)"
