#!/usr/bin/env bash
# Checks packaging/systemd/upkeep-agent.service with systemd's own tools, offline:
#   - `systemd-analyze verify` reports nothing (it exits 0 even for unknown or misspelt keys, so
#     any output fails the test); a copy with one misspelt key must be reported, which shows the
#     check can fail;
#   - the hardening directives the service depends on are set;
#   - `systemd-analyze security --offline=yes` rates the exposure at most 5.0 (systemd >= 252).
# Skipped (exit 77) without systemd-analyze.
#   systemd_unit_test.sh UNIT_FILE AGENT_BINARY
set -euo pipefail
unit="$1"
agent="$(realpath "$2")"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP: systemd-analyze is not installed"
  exit 77
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# verify checks that ExecStart's program exists: point it at the binary just built.
sed "s#^ExecStart=/usr/bin/upkeep-agent #ExecStart=$agent #" "$unit" >"$work/upkeep-agent.service"
grep -q "^ExecStart=$agent run\$" "$work/upkeep-agent.service" ||
  { echo "FAIL: ExecStart is not '/usr/bin/upkeep-agent run'"; exit 1; }
verify() {  # verify FILE: prints what systemd-analyze reports
  (cd "$work" && systemd-analyze verify --man=no --generators=no "$1" 2>&1) || true
}
out=$(verify upkeep-agent.service)
if [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify reported:"
  echo "$out"
  exit 1
fi
sed 's/^ProtectSystem=/ProtectSytem=/' "$work/upkeep-agent.service" >"$work/misspelt.service"
if [ -z "$(verify misspelt.service)" ]; then
  echo "FAIL: systemd-analyze verify did not report a misspelt key; the check above proves nothing"
  exit 1
fi

for setting in "Type=simple" "Restart=on-failure" "ProtectSystem=strict" "NoNewPrivileges=yes" \
    "PrivateTmp=yes" "ProtectHome=yes" "ProtectKernelTunables=yes" "ProtectKernelModules=yes" \
    "ProtectControlGroups=yes" "LockPersonality=yes" "MemoryDenyWriteExecute=yes" \
    "RestrictRealtime=yes" "SystemCallArchitectures=native" "StateDirectory=upkeep" \
    "RuntimeDirectory=upkeep" "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"; do
  grep -qx "$setting" "$unit" || { echo "FAIL: $setting is missing"; exit 1; }
done
grep -q '^ReadWritePaths=.*/var/lib/upkeep' "$unit" && grep -q '^ReadWritePaths=.*/run/upkeep' "$unit" ||
  { echo "FAIL: ReadWritePaths must hold /var/lib/upkeep and /run/upkeep"; exit 1; }
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit")
[ -n "$caps" ] || { echo "FAIL: no CapabilityBoundingSet"; exit 1; }
for cap in CAP_SYS_ADMIN CAP_SYS_MODULE CAP_SYS_BOOT CAP_NET_ADMIN CAP_SYS_PTRACE CAP_SYS_RAWIO; do
  case " $caps " in *" $cap "*) echo "FAIL: $cap in the bounding set"; exit 1 ;; esac
done

if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  if ! (cd "$work" && systemd-analyze security --offline=yes --threshold=50 \
        upkeep-agent.service >"$work/security.out" 2>&1); then
    tail -n 3 "$work/security.out"
    echo "FAIL: exposure above 5.0"
    exit 1
  fi
  tail -n 1 "$work/security.out"
else
  echo "systemd-analyze security --offline is not supported here; exposure not rated"
fi
echo "PASS"
