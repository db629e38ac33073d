#!/usr/bin/env bash
# Installs every build and test dependency of upkeep from Debian 12 packages (and, for test
# tooling only, the npm registry). Idempotent: packages already present are skipped quickly.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates
  g++ clang libclang-rt-14-dev
  libssl-dev libcurl4-openssl-dev libzstd-dev zstd libp11-dev softhsm2 opensc
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libarchive-dev libubootenv-dev libubootenv-tool libtomlplusplus-dev dpkg grub-common
  libboost1.81-dev libargon2-dev curl openssl
  faketime time e2fsprogs util-linux
  libsqlite3-dev sqlite3 libpq-dev postgresql postgresql-common
  libsdbus-c++-dev dbus-daemon dbus-bin
)
# Node.js runs test tooling only. Any Node >= 18.17 will do; a machine that already has node and npm
# (for example from another repository) keeps them, since Debian's npm conflicts with those builds.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present"
fi

# npm test tooling (tuf-js interop fixtures and benchmark baseline); pinned by package-lock.json.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -f "$here/tools/tufjs/package.json" ]; then
  if [ ! -d "$here/tools/tufjs/node_modules/tuf-js" ]; then
    echo "install-deps: npm ci in tools/tufjs"
    (cd "$here/tools/tufjs" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
