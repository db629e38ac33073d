#!/usr/bin/env bash
# bench/install_memory: the installer's memory does not grow with the image. Installs images of
# several sizes (default 64 MiB, 1 GiB and 4 GiB: mostly empty, with 1 MiB of random data every
# 32 MiB, zstd payloads) from offline bundles into a file slot, sampling the agent's
# /proc/PID/status every 5 ms, and prints the peak private memory (RssAnon), the peak total RSS
# (VmHWM: includes shared library pages) and the wall time for each size.
#   bench/install_memory.sh
#   UPKEEP_BENCH_SIZES_MIB="64 1024 4096"   image sizes
# Needs free disk space of about twice the largest size; nothing listens on the network.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
sizes="${UPKEEP_BENCH_SIZES_MIB:-64 1024 4096}"
upkeep="$UPKEEP_BUILD/apps/upkeep/upkeep"
agent="$UPKEEP_BUILD/apps/upkeep-agent/upkeep-agent"
upkeep_build_targets upkeep upkeep-agent

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# sample PID: prints "peak_rss_anon_kib peak_vmhwm_kib" once the process has exited
sample() {
  local pid="$1" anon=0 hwm=0 a h
  while kill -0 "$pid" 2>/dev/null; do
    read -r a h < <(awk '/^RssAnon:/ {a = $2} /^VmHWM:/ {h = $2} END {print a + 0, h + 0}' \
      "/proc/$pid/status" 2>/dev/null || echo "0 0")
    if [ "${a:-0}" -gt "$anon" ]; then anon=$a; fi
    if [ "${h:-0}" -gt "$hwm" ]; then hwm=$h; fi
    sleep 0.005
  done
  echo "$anon $hwm"
}

"$upkeep" repo init "$work/repo" >/dev/null
for mib in $sizes; do
  img="$work/image-$mib.img"
  truncate -s "${mib}M" "$img"
  for ((at = 0; at < mib; at += 32)); do
    head -c 1048576 /dev/urandom | dd of="$img" bs=1M seek="$at" conv=notrunc status=none
  done
  "$upkeep" image build "$img" -o "$work/build-$mib" >/dev/null
  cat >"$work/meta-$mib.json" <<JSON
{"upkeep": {"schema": 1, "component": "rootfs", "version": "$mib", "hardware": ["bench-dev"],
  "security_version": 1, "kind": ["feature"],
  "disruption": {"reboot": true, "downtime_seconds": 30, "available_during_update": []},
  "settings_impact": {"effect": "none", "note": ""},
  "payload": {"format": "chunked", "installed_size": $((mib * 1048576)),
              "chunk_index": "rootfs/image-$mib.chunks.json"}}}
JSON
  "$upkeep" repo add-target "$work/repo" "$work/build-$mib/image-$mib.img.payload" \
    --name "rootfs/image-$mib.payload" --meta "$work/meta-$mib.json" >/dev/null
  "$upkeep" repo add-target "$work/repo" "$work/build-$mib/image-$mib.img.chunks.json" \
    --name "rootfs/image-$mib.chunks.json" --meta "$work/meta-$mib.json" >/dev/null
  rm -f "$img"
done
for key in "$work"/repo/keys/*.pem; do
  "$upkeep" repo sign "$work/repo" targets --key "$key" >/dev/null 2>&1 || true
done
"$upkeep" repo publish "$work/repo" "$work/www" >/dev/null

dev="$work/device"
mkdir -p "$dev"
head -c 1048576 /dev/urandom >"$dev/slot-a"
cat >"$dev/agent.toml" <<TOML
[device]
hardware = "bench-dev"
data_dir = "$dev/data"
[trust]
root = "$work/www/metadata/1.root.json"
[slots]
a = "$dev/slot-a"
b = "$dev/slot-b"
[bootloader]
env = "$dev/bootenv"
cmdline = "$dev/cmdline"
boot_id = "$dev/boot_id"
[install]
reuse_chunks = false
TOML

echo "install_memory: zstd payloads, file slot, $(nproc) CPUs"
printf '%12s %18s %18s %10s\n' "image (MiB)" "private peak (MiB)" "total peak (MiB)" "wall (s)"
for mib in $sizes; do
  "$upkeep" bundle create --repo "$work/www" --root "$work/www/metadata/1.root.json" \
    --target "rootfs/image-$mib.payload" --target "rootfs/image-$mib.chunks.json" \
    -o "$work/image-$mib.upkb" >/dev/null
  rm -rf "$dev/data" "$dev/slot-b"
  printf 'upkeep_slot=a\n' >"$dev/bootenv"
  "$agent" -c "$dev/agent.toml" simulate-boot >/dev/null
  start=$(date +%s%N)
  "$agent" -c "$dev/agent.toml" install "$work/image-$mib.upkb" >"$work/out-$mib" 2>&1 &
  read -r anon hwm < <(sample $!)
  wait $! || { echo "install of $mib MiB failed:" >&2; tail -n 3 "$work/out-$mib" >&2; exit 1; }
  end=$(date +%s%N)
  printf '%12s %18.1f %18.1f %10.2f\n' "$mib" "$(awk -v k="$anon" 'BEGIN {print k / 1024}')" \
    "$(awk -v k="$hwm" 'BEGIN {print k / 1024}')" "$(awk -v n=$((end - start)) 'BEGIN {print n / 1e9}')"
  rm -f "$work/image-$mib.upkb" "$dev/slot-b"
done
