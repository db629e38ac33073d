# Shared by demo.sh and test.sh: set-up and build. Source it; do not run it.
set -euo pipefail

UPKEEP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UPKEEP_PRESET="${UPKEEP_PRESET:-dev}"
UPKEEP_BUILD="$UPKEEP_ROOT/build/$UPKEEP_PRESET"

upkeep_setup_and_build() {
  bash "$UPKEEP_ROOT/scripts/install-deps.sh"
  cd "$UPKEEP_ROOT"
  cmake --preset "$UPKEEP_PRESET" >/dev/null
  cmake --build --preset "$UPKEEP_PRESET" -j "$(nproc)"
}

# upkeep_serve DIR: serves DIR on 127.0.0.1 with upkeep-test-server in a fresh work directory
# ($UPKEEP_WORK, removed on exit) and sets UPKEEP_SERVE_URL to http://127.0.0.1:PORT.
upkeep_serve() {
  UPKEEP_WORK="${UPKEEP_WORK:-$(mktemp -d)}"
  "$UPKEEP_BUILD/tests/support/upkeep-test-server" --root "$1" --port-file "$UPKEEP_WORK/port" \
    >"$UPKEEP_WORK/server.log" 2>&1 &
  UPKEEP_SERVER_PID=$!
  trap 'kill "$UPKEEP_SERVER_PID" 2>/dev/null || true; wait "$UPKEEP_SERVER_PID" 2>/dev/null || true; rm -rf "$UPKEEP_WORK"' EXIT
  for _ in $(seq 1 100); do [ -s "$UPKEEP_WORK/port" ] && break; sleep 0.1; done
  UPKEEP_SERVE_URL="http://127.0.0.1:$(cat "$UPKEEP_WORK/port")"
}

# upkeep_build_targets TARGET...: configures the preset if needed and (re)builds just these
# targets (incremental; benchmarks must never measure a stale binary).
upkeep_build_targets() {
  [ -f "$UPKEEP_BUILD/build.ninja" ] || cmake --preset "$UPKEEP_PRESET" >/dev/null
  cmake --build "$UPKEEP_BUILD" --target "$@" >/dev/null
}
