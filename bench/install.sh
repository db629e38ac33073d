#!/usr/bin/env bash
# bench/install: `upkeep-agent install` from an offline bundle against `dd conv=fsync` and
# `openssl dgst -sha256` of the same image, in the same run. A 256 MiB ext4 image (system files
# and random data) is released twice, raw (--compression none) and zstd, and installed into slot b
# of a simulated device: a loop device when running as root with loop devices available, a plain
# file otherwise. Prints median wall time, CPU time and peak RSS of each command, the ratios
# install/dd-fsync, PASS/MISS against the targets, and a tampered-payload run (bytes written to
# the slot before the rejection). CPU targets, measured in the same run: a raw install within
# 1.2x the CPU of one `openssl dgst -sha256` of the image; a zstd install within 1.2x one SHA-256
# pass over the zstd payload plus one `zstd -d` of it. Reports only: a MISS does not fail (exit 0).
#   bench/install.sh
#   UPKEEP_BENCH_IMAGE_MIB=32   image size in MiB (default 256)
#   UPKEEP_BENCH_REPEAT=3       runs of each command; the median is reported (default 3)
#   UPKEEP_BENCH_TIMEOUT=900    seconds any single command may take (default 900)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
mib="${UPKEEP_BENCH_IMAGE_MIB:-256}"
repeat="${UPKEEP_BENCH_REPEAT:-3}"
limit="${UPKEEP_BENCH_TIMEOUT:-900}"
upkeep="$UPKEEP_BUILD/apps/upkeep/upkeep"
agent="$UPKEEP_BUILD/apps/upkeep-agent/upkeep-agent"
upkeep_build_targets upkeep upkeep-agent

work="$(mktemp -d)"
loopdev=""
cleanup() {
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
bounded() { timeout --kill-after=10 "$limit" "$@"; }

# --- The image: ext4 with a root-filesystem-like mix -------------------------------------------
# About 45% system files (text, binaries, locale data: compressible), 25% random data (like
# already-compressed files), the rest free space and file system metadata.
mkdir -p "$work/tree/usr" "$work/tree/var/blobs"
find /usr/share /usr/lib -xdev -type f -readable -size -8M -printf '%s\t%p\n' 2>/dev/null |
  awk -F'\t' -v budget=$((mib * 45 / 100 * 1048576)) \
    'sum + $1 <= budget { sum += $1; printf "%s%c", substr($2, 2), 0 }' >"$work/files" || true
tar -C / --null -T "$work/files" --ignore-failed-read -cf - 2>/dev/null |
  tar -C "$work/tree" -xf - 2>/dev/null || true
random_mib=$((mib * 25 / 100))
for ((i = 0; i < random_mib; i += 4)); do
  head -c $(((random_mib - i < 4 ? random_mib - i : 4) * 1048576)) /dev/urandom \
    >"$work/tree/var/blobs/blob-$i.bin"
done
tree_mib=$(du -sm --apparent-size "$work/tree" | cut -f1)
image="$work/rootfs.img"
truncate -s "${mib}M" "$image"
mkfs.ext4 -q -F -d "$work/tree" "$image"
rm -rf "$work/tree" "$work/files"
image_size=$(stat -c %s "$image")
zstd_check=$(zstd -3 -T2 -c "$image" | wc -c)

# --- Two releases in one signed repository, one offline bundle each -----------------------------
"$upkeep" repo init "$work/repo" >/dev/null
for variant in raw zstd; do
  compression=$([ "$variant" = raw ] && echo none || echo zstd)
  "$upkeep" image build "$image" -o "$work/build-$variant" --compression "$compression" >/dev/null
  cat >"$work/meta-$variant.json" <<JSON
{"upkeep": {"schema": 1, "component": "rootfs", "version": "9.0-$variant", "hardware": ["bench-dev"],
  "security_version": 1, "kind": ["feature"],
  "disruption": {"reboot": true, "downtime_seconds": 30, "available_during_update": []},
  "settings_impact": {"effect": "none", "note": ""},
  "payload": {"format": "chunked", "installed_size": $image_size,
              "chunk_index": "rootfs/rootfs-$variant.chunks.json"}}}
JSON
  "$upkeep" repo add-target "$work/repo" "$work/build-$variant/rootfs.img.payload" \
    --name "rootfs/rootfs-$variant.payload" --meta "$work/meta-$variant.json" >/dev/null
  "$upkeep" repo add-target "$work/repo" "$work/build-$variant/rootfs.img.chunks.json" \
    --name "rootfs/rootfs-$variant.chunks.json" --meta "$work/meta-$variant.json" >/dev/null
done
for key in "$work"/repo/keys/*.pem; do
  "$upkeep" repo sign "$work/repo" targets --key "$key" >/dev/null 2>&1 || true  # only targets keys count
done
"$upkeep" repo publish "$work/repo" "$work/www" >/dev/null
trusted_root="$work/www/metadata/1.root.json"
zstd_payload_file=$(find "$work/www/targets" -type f -name '*rootfs-zstd.payload' | head -n 1)
for variant in raw zstd; do
  "$upkeep" bundle create --repo "$work/www" --root "$trusted_root" \
    --target "rootfs/rootfs-$variant.payload" --target "rootfs/rootfs-$variant.chunks.json" \
    -o "$work/$variant.upkb" >/dev/null
done
chunk_size=$(node -e 'console.log(require(process.argv[1]).chunk_size)' \
  "$work/build-zstd/rootfs.img.chunks.json")
raw_payload=$(stat -c %s "$work/build-raw/rootfs.img.payload")
zstd_payload=$(stat -c %s "$work/build-zstd/rootfs.img.payload")
rm -rf "$work/repo" "$work/build-raw" "$work/build-zstd"

# --- The simulated device ----------------------------------------------------------------------
dev="$work/device"
mkdir -p "$dev"
head -c $((4 * 1048576)) /dev/urandom >"$dev/slot-a"   # an unrelated running image
slot_kind="file"
if [ "$(id -u)" = 0 ]; then
  truncate -s "$((mib + mib * 3 / 16))M" "$work/slot-b.backing"
  if loopdev=$(losetup -f --show "$work/slot-b.backing" 2>/dev/null) && [ -b "$loopdev" ]; then
    slot_kind="loop device $loopdev"
  else
    loopdev=""
  fi
fi
slot_b="${loopdev:-$dev/slot-b}"
[ -n "$loopdev" ] || : >"$slot_b"
cat >"$dev/agent.toml" <<TOML
[device]
hardware = "bench-dev"
data_dir = "$dev/data"

[trust]
root = "$trusted_root"

[slots]
a = "$dev/slot-a"
b = "$slot_b"

[bootloader]
type = "file"
env = "$dev/bootenv"
cmdline = "$dev/cmdline"
boot_id = "$dev/boot_id"

[health]
commands = [["/bin/true"]]

[install]
reuse_chunks = false
checkpoint_mib = ${UPKEEP_BENCH_CHECKPOINT_MIB:-64}
TOML

fresh_device() {  # every install starts from scratch: no journal, slot a booted
  rm -rf "$dev/data" "$dev/cmdline" "$dev/boot_id"
  printf 'upkeep_slot=a\n' >"$dev/bootenv"
  "$agent" -c "$dev/agent.toml" simulate-boot >/dev/null
}

caches="not dropped (not root)"
[ -w /proc/sys/vm/drop_caches ] && caches="dropped before every run"
drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# measure NAME COMMAND...: one run; appends "wall cpu rss_kib" to $work/NAME.runs
measure() {
  local name="$1" rc=0 start end; shift
  drop_caches
  start=$(date +%s%N)
  bounded /usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" "$@" >"$work/$name.out" 2>&1 || rc=$?
  end=$(date +%s%N)
  if [ "$rc" != 0 ]; then
    echo "install bench: $name failed (exit $rc):" >&2
    tail -n 5 "$work/$name.out" >&2
    return 1
  fi
  # wall time from the shell's clock in ns (time's %e has 10 ms resolution); CPU and RSS from time
  tail -n 1 "$work/$name.time" |
    awk -v ns=$((end - start)) '{printf "%.4f %.2f %s\n", ns / 1e9, $2 + $3, $4}' >>"$work/$name.runs"
}

for ((run = 1; run <= repeat; run += 1)); do
  measure sha256 openssl dgst -sha256 "$image"
  measure dd dd if="$image" of="$slot_b" bs=1M conv=fsync status=none
  measure sha256-zstd openssl dgst -sha256 "$zstd_payload_file"
  measure unzstd zstd -q -d -f "$zstd_payload_file" -o /dev/null
  for variant in raw zstd; do
    fresh_device
    measure "install-$variant" "$agent" -c "$dev/agent.toml" --json install "$work/$variant.upkb"
    written=$(grep '"type":"result"' "$work/install-$variant.out" |
      node -e 'const l=require("fs").readFileSync(0,"utf8");console.log(JSON.parse(l).result.bytes_written)')
    if [ "$written" != "$image_size" ]; then
      echo "install bench: install-$variant wrote $written bytes, the image has $image_size" >&2
    fi
  done
done
# Private memory: peak RssAnon of one more (untimed) run of each install, sampled every 5 ms.
# Peak RSS above also counts the pages of the ~40 shared libraries libcurl and OpenSSL bring in,
# which are shared with every other process using them.
private_peak() {
  local peak=0 kb pid
  "$@" >/dev/null 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    if [ -n "$kb" ] && [ "$kb" -gt "$peak" ]; then peak=$kb; fi
    sleep 0.005
  done
  wait "$pid" || true
  echo "$peak"
}
declare -A private
for variant in raw zstd; do
  fresh_device
  private[install-$variant]=$(private_peak "$agent" -c "$dev/agent.toml" install "$work/$variant.upkb")
done

# The slot must hold the image after the last install.
slot_ok=$(cmp -n "$image_size" "$image" "$slot_b" >/dev/null 2>&1 && echo "identical" || echo "DIFFERENT")

# --- Tampered payload: one byte flipped in the middle of the published zstd payload ------------
cp -r "$work/www" "$work/www-tampered"
payload_file=$(find "$work/www-tampered/targets" -type f -name '*rootfs-zstd.payload' | head -n 1)
flip_at=$(($(stat -c %s "$payload_file") / 2))
node -e 'const fs=require("fs");const fd=fs.openSync(process.argv[1],"r+");const b=Buffer.alloc(1);
fs.readSync(fd,b,0,1,Number(process.argv[2]));b[0]^=0xff;fs.writeSync(fd,b,0,1,Number(process.argv[2]));
fs.closeSync(fd);' "$payload_file" "$flip_at"
tamper_note=""
if ! "$upkeep" bundle create --repo "$work/www-tampered" --root "$trusted_root" \
    --target rootfs/rootfs-zstd.payload --target rootfs/rootfs-zstd.chunks.json \
    -o "$work/tampered.upkb" >"$work/tamper-bundle.out" 2>&1; then
  # bundle create checks the target hashes: flip the same byte inside a good bundle instead.
  tamper_note=" (bundle create refused the tampered repository: $(head -n 1 "$work/tamper-bundle.out");
  so the byte was flipped inside a good bundle instead)"
  cp "$work/zstd.upkb" "$work/tampered.upkb"
  node -e 'const fs=require("fs");const [pf,bf,at]=process.argv.slice(1);
const p=fs.readFileSync(pf);const probe=p.subarray(Number(at)-32,Number(at)+32);
probe[32]^=0xff;  // the published file is already flipped: undo to find the original bytes
const b=fs.readFileSync(bf);const i=b.indexOf(probe);if(i<0){console.error("payload not found in bundle");process.exit(1);}
b[i+32]^=0xff;fs.writeFileSync(bf,b);' "$payload_file" "$work/tampered.upkb" "$flip_at"
fi
fresh_device
drop_caches
tamper_rc=0
bounded "$agent" -c "$dev/agent.toml" --json install "$work/tampered.upkb" >"$work/tampered.out" 2>&1 ||
  tamper_rc=$?
tamper=$(node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
let rejected = null, progress = null, error = null, result = null;
for (const l of lines) {
  let j; try { j = JSON.parse(l); } catch { continue; }
  if (j.type === "event" && j.id === "verify.chunk_rejected") rejected = j.data;
  if (j.type === "progress") progress = j;
  if (j.type === "error") error = j;
  if (j.type === "result") result = j;
}
const cs = Number(process.argv[2]), at = Number(process.argv[3]);
const out = [];
out.push(`byte flipped at payload offset ${at}`);
if (rejected) out.push(`rejected chunk ${rejected.chunk} (payload offset ${rejected.offset}); ` +
                       `chunk x chunk_size = ${rejected.chunk * cs} bytes before the bad chunk`);
else out.push("no verify.chunk_rejected event");
out.push(`last progress line: image_bytes ${progress ? progress.image_bytes : "none (no progress line)"}`);
if (error) out.push(`error: ${error.code}: ${error.message}`);
if (result) out.push("INSTALLED THE TAMPERED PAYLOAD: " + JSON.stringify(result.result));
console.log(out.join("\n"));' "$work/tampered.out" "$chunk_size" "$flip_at")

# --- Report ------------------------------------------------------------------------------------
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
declare -A wall cpu rss
for name in sha256 dd sha256-zstd unzstd install-raw install-zstd; do
  wall[$name]=$(awk '{print $1}' "$work/$name.runs" | median)
  cpu[$name]=$(awk '{print $2}' "$work/$name.runs" | median)
  rss[$name]=$(awk '{print $3}' "$work/$name.runs" | sort -n | tail -n 1)
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b > 0) ? a / b : 0}'; }
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "PASS" : "MISS"}'; }

echo "install: ${mib} MiB ext4 image ($image_size bytes; zstd -3 would make it $((zstd_check / 1048576)) MiB)"
echo "  contents: $tree_mib MiB of files ($random_mib MiB random, the rest from /usr/share and /usr/lib)"
echo "  payloads: raw $((raw_payload / 1048576)) MiB, zstd $((zstd_payload / 1048576)) MiB, chunk size $chunk_size"
echo "  slot b: $slot_kind; page cache $caches; $repeat runs each, median wall/cpu, max RSS"
echo "  chunk reuse off, checkpoint every ${UPKEEP_BENCH_CHECKPOINT_MIB:-64} MiB; $(nproc) CPUs"
printf '%-26s %9s %9s %14s %10s\n' "" "wall (s)" "cpu (s)" "peak RSS (MiB)" "ratio/dd"
for name in sha256 dd sha256-zstd unzstd install-raw install-zstd; do
  label=$name
  case $name in
    sha256) label="openssl dgst -sha256" ;;
    dd) label="dd bs=1M conv=fsync" ;;
    sha256-zstd) label="sha256 of zstd payload" ;;
    unzstd) label="zstd -d of zstd payload" ;;
    install-raw) label="upkeep-agent install raw" ;;
    install-zstd) label="upkeep-agent install zstd" ;;
  esac
  printf '%-26s %9.3f %9.2f %14.1f %10s\n' "$label" "${wall[$name]}" "${cpu[$name]}" \
    "$(awk -v k="${rss[$name]}" 'BEGIN {print k / 1024}')" "$(ratio "${wall[$name]}" "${wall[dd]}")"
done
raw_ratio=$(ratio "${wall[install-raw]}" "${wall[dd]}")
zstd_ratio=$(ratio "${wall[install-zstd]}" "${wall[dd]}")
agent_rss=$(awk -v a="${rss[install-raw]}" -v b="${rss[install-zstd]}" 'BEGIN {printf "%.1f", ((a > b) ? a : b) / 1024}')
echo "$(verdict "$raw_ratio" 1.3) raw install <= 1.3x dd-fsync: $raw_ratio"
echo "$(verdict "$zstd_ratio" 1.5) zstd install <= 1.5x dd-fsync: $zstd_ratio"
# CPU (user + sys) against the work the install cannot avoid: one SHA-256 pass over what it
# authenticates, plus (zstd) one decompression.
raw_floor="${cpu[sha256]}"
zstd_floor=$(awk -v a="${cpu[sha256-zstd]}" -v b="${cpu[unzstd]}" 'BEGIN {printf "%.2f", a + b}')
raw_cpu_ratio=$(ratio "${cpu[install-raw]}" "$raw_floor")
zstd_cpu_ratio=$(ratio "${cpu[install-zstd]}" "$zstd_floor")
echo "$(verdict "$raw_cpu_ratio" 1.2) raw install CPU <= 1.2x one sha256 of the image: ${cpu[install-raw]} s / $raw_floor s = $raw_cpu_ratio"
echo "$(verdict "$zstd_cpu_ratio" 1.2) zstd install CPU <= 1.2x (sha256 + zstd -d of the payload): ${cpu[install-zstd]} s / $zstd_floor s = $zstd_cpu_ratio"
agent_private=$(awk -v a="${private[install-raw]}" -v b="${private[install-zstd]}" 'BEGIN {printf "%.1f", ((a > b) ? a : b) / 1024}')
echo "$(verdict "$agent_private" 8) agent private memory (peak RssAnon) <= 8 MiB: raw $(awk -v k="${private[install-raw]}" 'BEGIN {printf "%.1f", k / 1024}') MiB, zstd $(awk -v k="${private[install-zstd]}" 'BEGIN {printf "%.1f", k / 1024}') MiB"
echo "$(verdict "$agent_rss" 8) agent peak RSS incl. shared library pages <= 8 MiB: $agent_rss MiB"
echo "slot b after the last install: $slot_ok to the image"
echo "tampered payload${tamper_note}: upkeep-agent exit $tamper_rc (2 expected)"
echo "$tamper" | sed 's/^/  /'
exit 0
