#!/usr/bin/env bash
# bench/tuf_refresh: a repository with 1,000 targets in 16 delegated roles served on 127.0.0.1;
# cold and warm refresh + one target lookup, upkeep vs the npm tuf-js client, same repository,
# same run. Prints both medians and the ratio upkeep/tuf-js (target: <= 0.2).
#   bench/tuf_refresh.sh [ITERATIONS]     (default 10, at most 50)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
root="$UPKEEP_ROOT"
build="$UPKEEP_BUILD"
iterations="${1:-10}"

if [ ! -x "$build/bench/tuf_refresh_bench" ] || [ ! -x "$build/tests/support/upkeep-test-server" ]; then
  cmake --preset "$UPKEEP_PRESET" >/dev/null
  cmake --build --preset "$UPKEEP_PRESET" --target tuf_refresh_bench upkeep-test-server
fi
if [ ! -d "$root/tools/tufjs/node_modules/tuf-js" ]; then
  (cd "$root/tools/tufjs" && npm ci --no-audit --no-fund --loglevel=error)
fi

UPKEEP_WORK="$(mktemp -d)"
work="$UPKEEP_WORK"
node "$root/tools/tufjs/gen-bench-repo.js" "$work/repo" --targets 1000 --roles 16 >/dev/null
lookup="$(node -e "console.log(require('$work/repo/bench.json').lookup_target)")"
upkeep_serve "$work/repo"
base="$UPKEEP_SERVE_URL"

mkdir -p "$work/upkeep"
upkeep_json="$("$build/bench/tuf_refresh_bench" --metadata-url "$base/metadata/" \
  --root "$work/repo/initial_root.json" --target "$lookup" --work-dir "$work/upkeep" \
  --iterations "$iterations")"
tufjs_json="$(node "$root/tools/tufjs/bench-client.js" --metadata-url "$base/metadata/" \
  --target-base-url "$base/targets/" --root "$work/repo/initial_root.json" --target "$lookup" \
  --iterations "$iterations")"

node - "$upkeep_json" "$tufjs_json" <<'JS'
const u = JSON.parse(process.argv[2]);
const t = JSON.parse(process.argv[3]);
const row = (name, a, b) =>
  console.log(`${name.padEnd(28)} ${a.toFixed(2).padStart(10)} ${b.toFixed(2).padStart(10)} ${(a / b).toFixed(3).padStart(8)}`);
console.log(`tuf_refresh: 1000 targets, 16 delegated roles, ${u.iterations} iterations (median ms)`);
console.log(`${"".padEnd(28)} ${"upkeep".padStart(10)} ${"tuf-js".padStart(10)} ${"ratio".padStart(8)}`);
row("cold refresh + lookup", u.cold_ms_median, t.cold_ms_median);
row("warm refresh + lookup", u.warm_ms_median, t.warm_ms_median);
const worst = Math.max(u.cold_ms_median / t.cold_ms_median, u.warm_ms_median / t.warm_ms_median);
console.log(`target: upkeep <= 0.2 x tuf-js; worst ratio ${worst.toFixed(3)} ${worst <= 0.2 ? "(met)" : "(NOT met)"}`);
JS
