#!/usr/bin/env bash
# bench/agent_footprint: the agent daemon's size and memory against its targets (ADR 0008).
# Prints the stripped size of the `upkeep-agent` binary; the memory of `upkeep-agent run` when
# idle (total RSS, private = RssAnon, file-backed = RssFile + RssShmem, from /proc/PID/status);
# the same after 10,000 check cycles of the same Daemon code on a fake clock
# (bench/agent_footprint_cycles: advance the clock by the schedule's period, Tick; each cycle
# reads and verifies the image repository for real), with the growth; and a table of the targets,
# MET or MISSED. Reports only: a MISSED target does not fail the script (exit 0); a broken set-up
# (a check that fails, a daemon that does not start) does (exit 1).
#
# The simulated device: file slots, the file bootloader, release 1.0 installed and committed; the
# image repository holds 1.0 for this hardware and 2.0 for another one, so every check verifies
# the metadata and finds nothing newer. `upkeep-agent run` reads it over HTTPS from 127.0.0.1
# (python3's http.server with a throw-away certificate, a port the kernel picks: the only
# listener besides the local API's Unix sockets in the temporary directory); the cycles read the
# published directory directly, then the same HTTPS server. No fleet server.
#   bench/agent_footprint.sh
#   UPKEEP_PRESET=release         build measured (default release: what ships; dev also works)
#   UPKEEP_BENCH_CYCLES=10000     check cycles on the fake clock
#   UPKEEP_BENCH_TIMEOUT=900      seconds the cycles (and any other single step) may take
#   UPKEEP_BENCH_GROWTH_KIB=256   private-memory growth tolerated over the cycles
#   UPKEEP_BENCH_KEEP=1           keep the temporary directory (devices, logs, harness output)
UPKEEP_PRESET="${UPKEEP_PRESET:-release}"
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
cycles="${UPKEEP_BENCH_CYCLES:-10000}"
limit="${UPKEEP_BENCH_TIMEOUT:-900}"
growth_kib="${UPKEEP_BENCH_GROWTH_KIB:-256}"
upkeep="$UPKEEP_BUILD/apps/upkeep/upkeep"
agent="$UPKEEP_BUILD/apps/upkeep-agent/upkeep-agent"
harness="$UPKEEP_BUILD/bench/agent_footprint_cycles"
supervisor="$UPKEEP_BUILD/bench/agent_footprint_supervisor"
upkeep_build_targets upkeep upkeep-agent agent_footprint_cycles agent_footprint_supervisor
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$UPKEEP_BUILD/CMakeCache.txt")

work="$(mktemp -d)"
daemon_pid=""
server_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ "${UPKEEP_BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
bounded() { timeout --kill-after=10 "$limit" "$@"; }
fail() { echo "agent footprint: $*" >&2; exit 1; }
mib() { awk -v k="$1" 'BEGIN {printf "%.2f", k / 1024}'; }        # KiB -> MiB
signed_kib() { awk -v k="$1" 'BEGIN {printf "%+d", k}'; }

# --- The binary --------------------------------------------------------------------------------
strip -o "$work/upkeep-agent.stripped" "$agent"
stripped=$(stat -c %s "$work/upkeep-agent.stripped")
unstripped=$(stat -c %s "$agent")
libraries=$(ldd "$agent" | grep -c '=>' || true)

# --- The image repository: 1.0 for this device, 2.0 for another model -------------------------
# The fake clock runs 10,000 half-hour periods (208 days) ahead: nothing may expire on the way
# (365 days is the longest a snapshot or timestamp may live). A check does the same work whatever
# the period; a short one only keeps the cycles inside the metadata's lifetime.
days=365
"$upkeep" repo init "$work/repo" --root-expiry-days $days --targets-expiry-days $days \
  --snapshot-expiry-days $days --timestamp-expiry-days $days >/dev/null
head -c $((1024 * 1024)) /dev/urandom >"$work/rootfs.img"
"$upkeep" image build "$work/rootfs.img" -o "$work/build" >/dev/null
image_size=$(stat -c %s "$work/rootfs.img")
release() {  # release VERSION HARDWARE
  cat >"$work/meta-$1.json" <<JSON
{"upkeep": {"schema": 1, "component": "rootfs", "version": "$1", "hardware": ["$2"],
  "security_version": 1, "kind": ["feature"],
  "disruption": {"reboot": true, "downtime_seconds": 30, "available_during_update": []},
  "settings_impact": {"effect": "none", "note": ""},
  "payload": {"format": "chunked", "installed_size": $image_size,
              "chunk_index": "rootfs/rootfs-$1.chunks.json"}}}
JSON
  "$upkeep" repo add-target "$work/repo" "$work/build/rootfs.img.payload" \
    --name "rootfs/rootfs-$1.payload" --meta "$work/meta-$1.json" >/dev/null
  "$upkeep" repo add-target "$work/repo" "$work/build/rootfs.img.chunks.json" \
    --name "rootfs/rootfs-$1.chunks.json" --meta "$work/meta-$1.json" >/dev/null
}
release 1.0 bench-dev
release 2.0 other-dev
for key in "$work"/repo/keys/*.pem; do
  "$upkeep" repo sign "$work/repo" targets --key "$key" >/dev/null 2>&1 || true  # only targets keys count
done
"$upkeep" repo publish "$work/repo" "$work/www" >/dev/null

# `upkeep-agent run` reads the repository over HTTPS from 127.0.0.1 (a port the kernel picks), as
# a device reads its maker's repository: the configuration file takes only http(s) URLs for
# repository.url. The cycles read the same published directory directly (--repository), then
# over HTTPS (UPKEEP_BENCH_HTTPS_CYCLES=0: directory only).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
cat >"$work/serve.py" <<'PY'
import http.server, functools, ssl, sys
root, cert, key, port_file = sys.argv[1:5]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
handler = functools.partial(Quiet, directory=root)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
with open(port_file + ".tmp", "w") as f: f.write(str(httpd.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
httpd.serve_forever()
PY
timeout "$limit" python3 "$work/serve.py" "$work/www" "$work/tls.crt" "$work/tls.key" "$work/port" &
server_pid=$!
for _ in $(seq 1 100); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || fail "the HTTPS server for the repository did not start"
repository_url="https://127.0.0.1:$(cat "$work/port")"

# --- The simulated device, 1.0 installed and committed -----------------------------------------
config() {  # config DEVICE_DIR: writes DEVICE_DIR/agent.toml
  cat >"$1/agent.toml" <<TOML
[device]
hardware = "bench-dev"
data_dir = "$1/data"

[trust]
root = "$work/www/metadata/1.root.json"

[repository]
url = "$repository_url"
ca_file = "$work/tls.crt"

[slots]
a = "$1/slot-a"
b = "$1/slot-b"

[bootloader]
type = "file"
env = "$1/bootenv"
cmdline = "$1/cmdline"
boot_id = "$1/boot_id"

[health]
commands = [["/bin/true"]]

[schedule]
boot_delay_min_seconds = 0
boot_delay_max_seconds = 0
period_seconds = 1800
window_start_seconds = 0
window_length_seconds = 60

[local_api]
socket = "$1/run/agent.sock"
TOML
}
dev="$work/device"
mkdir -p "$dev"
head -c $((1024 * 1024)) /dev/urandom >"$dev/slot-a"
: >"$dev/slot-b"
printf 'upkeep_slot=a\n' >"$dev/bootenv"
config "$dev"
bounded "$agent" -c "$dev/agent.toml" simulate-boot >/dev/null
bounded "$agent" -c "$dev/agent.toml" install "$work/www" rootfs/rootfs-1.0.payload \
  >"$work/install.out" 2>&1 || { cat "$work/install.out" >&2; fail "installing 1.0 failed"; }
bounded "$agent" -c "$dev/agent.toml" simulate-boot >/dev/null
bounded "$agent" -c "$dev/agent.toml" commit >"$work/commit.out" 2>&1 ||
  { cat "$work/commit.out" >&2; fail "committing 1.0 failed"; }
# The cycles run on copies of the device as it is now, so no run sees another's schedule.
cp -a "$dev" "$work/device-fresh"

# --- The daemon, idle --------------------------------------------------------------------------
# Started, it runs the boot check at once (boot delay 0), finds nothing newer and waits for the
# next period's window. Measured once the check is recorded (schedule.json) and a few seconds passed.
"$agent" -c "$dev/agent.toml" run >"$work/daemon.log" 2>&1 &
daemon_pid=$!
checked=""
for _ in $(seq 1 300); do
  if grep -q '"failures":0' "$dev/data/schedule.json" 2>/dev/null &&
     grep -q '"last_success":[0-9]' "$dev/data/schedule.json"; then
    checked=yes
    break
  fi
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$checked" ]; then
  cat "$work/daemon.log" "$dev/data/schedule.json" >&2 2>/dev/null || true
  fail "the daemon's boot check did not succeed within 30 s"
fi
[ -S "$dev/run/agent.sock" ] || fail "no local API socket at $dev/run/agent.sock"
sleep 3
status_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
idle_rss=$(status_kib "$daemon_pid" VmRSS)
idle_anon=$(status_kib "$daemon_pid" RssAnon)
idle_file=$(($(status_kib "$daemon_pid" RssFile) + $(status_kib "$daemon_pid" RssShmem)))
idle_threads=$(status_kib "$daemon_pid" Threads)
kill -TERM "$daemon_pid"
for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$daemon_pid" 2>/dev/null; then fail "the daemon did not stop on SIGTERM within 10 s"; fi
wait "$daemon_pid" || fail "the daemon exited with status $? on SIGTERM"
daemon_pid=""
bounded "$agent" -c "$dev/agent.toml" --json status >"$work/status.json"
grep -q '"update":null' "$work/status.json" ||
  fail "the daemon started an update; the repository was meant to hold nothing newer"

# --- The supervisor's floor (ADR 0008): the local API alone, idle -------------------------------
mkdir -p "$work/supervisor"
read -r _ sup_rss sup_anon sup_file sup_shmem < <(bounded "$supervisor" "$work/supervisor/agent.sock")
sup_file=$((sup_file + sup_shmem))

# --- The cycles on the fake clock --------------------------------------------------------------
# cycles NAME REPOSITORY: runs agent_footprint_cycles on a fresh copy of the device and sets
# NAME_boot_*, NAME_end_* (KiB), NAME_ok, NAME_failed, NAME_elapsed, NAME_samples.
cycles() {
  local name="$1" repository="$2" rc=0 out="$work/cycles-$1.out"
  rm -rf "$work/device-$name"
  cp -a "$work/device-fresh" "$work/device-$name"
  config "$work/device-$name"
  bounded "$harness" "$work/device-$name/agent.toml" --repository "$repository" \
    --cycles "$cycles" --sample-every "$warmup" --max-seconds "$limit" \
    >"$out" 2>"$work/cycles-$name.err" || rc=$?
  if [ "$rc" != 0 ]; then
    cat "$out" "$work/cycles-$name.err" >&2
    fail "agent_footprint_cycles ($name) exited $rc (1: a check failed, 2: out of time)"
  fi
  f() { awk -v l="$1" -v f="$2" '$1 == "mem" && $2 == l {print $f}' "$out" | tail -n 1; }
  printf -v "${name}_boot_rss" '%s' "$(f boot 4)"
  printf -v "${name}_boot_anon" '%s' "$(f boot 5)"
  printf -v "${name}_boot_file" '%s' "$(($(f boot 6) + $(f boot 7)))"
  printf -v "${name}_warm_anon" '%s' "$(awk -v c="$warmup" '$1 == "mem" && $3 == c {print $5}' "$out" | head -n 1)"
  printf -v "${name}_end_rss" '%s' "$(f end 4)"
  printf -v "${name}_end_anon" '%s' "$(f end 5)"
  printf -v "${name}_end_file" '%s' "$(($(f end 6) + $(f end 7)))"
  printf -v "${name}_ok" '%s' "$(awk '$1 == "checks" {print $2}' "$out")"
  printf -v "${name}_failed" '%s' "$(awk '$1 == "checks" {print $3}' "$out")"
  printf -v "${name}_elapsed" '%s' "$(awk '$1 == "elapsed" {print $2}' "$out")"
  printf -v "${name}_samples" '%s' "$(awk '$1 == "mem" {printf "%s%s", sep, $5; sep = " "}' "$out")"
}
# Growth is judged from the end of a warm-up (the first tenth of the cycles) to the end: the
# allocator settles in the first few checks (see bench/README.md), after which memory must stay
# flat. The growth since the boot check is printed as well.
warmup=$((cycles / 10 > 0 ? cycles / 10 : 1))
runs="dir"
cycles dir "$work/www"
if [ "${UPKEEP_BENCH_HTTPS_CYCLES:-1}" = 1 ]; then
  runs="dir https"
  cycles https "$repository_url"
fi

# --- Report ------------------------------------------------------------------------------------
echo "agent footprint: build $UPKEEP_PRESET ($build_type), $(nproc) CPUs, $(uname -m)"
echo "stripped binary: $(mib $((stripped / 1024))) MiB ($stripped bytes; a stripped copy of" \
  "$(realpath --relative-to="$UPKEEP_ROOT" "$agent"), $unstripped bytes unstripped;" \
  "$libraries shared libraries)"
echo "upkeep-agent run, idle after its boot check over HTTPS ($idle_threads threads):"
echo "idle RSS: $(mib "$idle_rss") MiB"
echo "idle private: $(mib "$idle_anon") MiB"
echo "idle file-backed: $(mib "$idle_file") MiB"
v() { local n="${1}_$2"; echo "${!n}"; }
for run in $runs; do
  label=$([ "$run" = dir ] && echo "the published directory" || echo "HTTPS on 127.0.0.1")
  echo "agent_footprint_cycles, repository read from $label (the same Daemon and local API on a" \
    "fake clock), after its boot check: RSS $(mib "$(v "$run" boot_rss)") MiB," \
    "private $(mib "$(v "$run" boot_anon)") MiB, file-backed $(mib "$(v "$run" boot_file)") MiB"
  echo "after $cycles cycles RSS: $(mib "$(v "$run" end_rss)") MiB"
  echo "after $cycles cycles private: $(mib "$(v "$run" end_anon)") MiB"
  echo "after $cycles cycles file-backed: $(mib "$(v "$run" end_file)") MiB"
  echo "growth over $cycles cycles: RSS $(signed_kib $(($(v "$run" end_rss) - $(v "$run" boot_rss)))) KiB," \
    "private $(signed_kib $(($(v "$run" end_anon) - $(v "$run" boot_anon)))) KiB," \
    "file-backed $(signed_kib $(($(v "$run" end_file) - $(v "$run" boot_file)))) KiB"
  echo "  checks: $(v "$run" ok) succeeded, $(v "$run" failed) failed, in $(v "$run" elapsed) s;" \
    "private KiB at the boot check and every $warmup cycles: $(v "$run" samples)"
done
echo "supervisor floor (ADR 0008: the local API alone, no libcurl, no update code), idle:" \
  "RSS $(mib "$sup_rss") MiB, private $(mib "$sup_anon") MiB, file-backed $(mib "$sup_file") MiB"
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "MET" : "MISSED"}'; }
row() { printf '%-60s %-14s %s\n' "$1" "$2" "$3"; }
stripped_mib=$(awk -v b="$stripped" 'BEGIN {printf "%.2f", b / 1048576}')
row "target" "measured" "verdict"
row "stripped binary <= 4 MiB" "$stripped_mib MiB" "$(verdict "$stripped_mib" 4)"
row "idle private <= 2 MiB" "$(mib "$idle_anon") MiB" "$(verdict "$(mib "$idle_anon")" 2)"
row "idle RSS <= 12 MiB" "$(mib "$idle_rss") MiB" "$(verdict "$(mib "$idle_rss")" 12)"
for run in $runs; do
  row "after $cycles cycles ($run): private <= 2 MiB" "$(mib "$(v "$run" end_anon)") MiB" \
    "$(verdict "$(mib "$(v "$run" end_anon)")" 2)"
  row "after $cycles cycles ($run): RSS <= 12 MiB" "$(mib "$(v "$run" end_rss)") MiB" \
    "$(verdict "$(mib "$(v "$run" end_rss)")" 12)"
  growth=$(($(v "$run" end_anon) - $(v "$run" warm_anon)))
  row "no growth ($run): private, cycle $warmup to $cycles, <= +$growth_kib KiB" \
    "$(signed_kib $growth) KiB" "$(verdict "$growth" "$growth_kib")"
done
exit 0
