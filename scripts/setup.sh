#!/usr/bin/env bash
# Installs the Debian 12 packages the project builds with (idempotent; needs
# root or sudo). Nothing is downloaded at build time.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git curl
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
      libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
      prometheus)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "== installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
