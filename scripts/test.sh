#!/usr/bin/env bash
# Installs dependencies, builds the dev preset and runs the test suite.
#   scripts/test.sh              unit, integration, interop and fuzz-replay tests
#   UPKEEP_TEST_ALL=1 scripts/test.sh   also the `slow` label
# Extra arguments are passed to ctest (e.g. -R UpdaterTest).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
upkeep_setup_and_build

cd "$UPKEEP_ROOT"
exclude=(-LE slow)
if [ "${UPKEEP_TEST_ALL:-0}" = "1" ]; then exclude=(); fi
ctest --preset "$UPKEEP_PRESET" "${exclude[@]}" "$@"
