#!/usr/bin/env bash
# bench/image_build: `upkeep image build` throughput on a 1 GiB image against `zstd -T2 -3` on
# the same input, in the same run. upkeep does more work than zstd: it hashes the whole image and
# every compressed chunk (SHA-256) for the chunk index. Prints wall time, CPU time, peak RSS, output size and the
# ratios upkeep/zstd.
#   bench/image_build.sh [SIZE_MIB]     (default 1024)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
size_mib="${1:-1024}"
if [ ! -x "$UPKEEP_BUILD/apps/upkeep/upkeep" ]; then
  cmake --preset "$UPKEEP_PRESET" >/dev/null
  cmake --build --preset "$UPKEEP_PRESET" --target upkeep
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A root-filesystem-like mix: a quarter random (already compressed files), the rest text-like
# and zero runs, so the compressor has real work.
node -e '
const fs = require("fs"); const crypto = require("crypto");
const out = fs.openSync(process.argv[1], "w"); const mib = Number(process.argv[2]);
const text = Buffer.from("usr/lib/libexample.so.1 ELF config=yes\n".repeat(26214 + 1)).subarray(0, 1 << 20);
for (let i = 0; i < mib; i += 1) {
  const kind = i % 4;
  const block = kind === 0 ? crypto.randomBytes(1 << 20) : kind === 3 ? Buffer.alloc(1 << 20) : text;
  fs.writeSync(out, block);
}
fs.closeSync(out);' "$work/image.img" "$size_mib"

measure() {  # measure NAME COMMAND... -> "wall_s cpu_s rss_kib"
  local name="$1"; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" "$@" >/dev/null 2>&1
  awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' "$work/$name.time"
}

sync
read -r z_wall z_cpu z_rss < <(measure zstd zstd -T2 -3 -q -f "$work/image.img" -o "$work/image.zst")
read -r u_wall u_cpu u_rss < <(measure upkeep "$UPKEEP_BUILD/apps/upkeep/upkeep" image build \
  "$work/image.img" -o "$work/out" --level 3)
z_size=$(stat -c %s "$work/image.zst")
u_size=$(stat -c %s "$work/out/image.img.payload")

node - "$size_mib" "$u_wall" "$u_cpu" "$u_rss" "$u_size" "$z_wall" "$z_cpu" "$z_rss" "$z_size" <<'JS'
const [mib, uw, uc, ur, us, zw, zc, zr, zs] = process.argv.slice(2).map(Number);
const f = (x, d = 2) => x.toFixed(d).padStart(10);
console.log(`image_build: ${mib} MiB image, zstd level 3; upkeep with its default threads (compression + digest), zstd -T2`);
console.log(`${"".padEnd(18)}${"upkeep".padStart(10)}${"zstd -T2".padStart(10)}${"ratio".padStart(10)}`);
console.log(`${"wall (s)".padEnd(18)}${f(uw)}${f(zw)}${f(uw / zw, 3)}`);
console.log(`${"cpu (s)".padEnd(18)}${f(uc)}${f(zc)}${f(uc / zc, 3)}`);
console.log(`${"peak RSS (MiB)".padEnd(18)}${f(ur / 1024, 1)}${f(zr / 1024, 1)}${f(ur / zr, 3)}`);
console.log(`${"output (MiB)".padEnd(18)}${f(us / 1048576, 1)}${f(zs / 1048576, 1)}${f(us / zs, 3)}`);
console.log(`throughput: upkeep ${(mib / uw).toFixed(0)} MiB/s, zstd ${(mib / zw).toFixed(0)} MiB/s`);
JS
