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
