#!/usr/bin/env bash
# bench/server: the fleet server's device API under load, against nginx serving a static file of
# the same size over the same mutual-TLS setup, in the same run. bench/checkin_load enrols N
# devices through the device API, then runs check-ins (each device with its own client
# certificate and an increasing counter) in two modes: a new TLS connection per check-in (the
# device's TLS session offered for resumption, as a daily-checking device does) and kept-alive
# HTTP/1.1 connections; "no-update" (nothing assigned; If-None-Match with the last ETag) and
# "update" (a target assigned to every device: the answer carries signed director targets).
# SQLite in a temporary directory; PostgreSQL in a throw-away cluster made by pg_virtualenv
# (skipped with a message without it). Everything listens on 127.0.0.1 and is stopped on exit.
# Prints one line per measurement,
#   <sqlite|postgresql|nginx> <new-connection|kept-alive> <no-update|update|static>: N/s, p50 X ms, p99 Y ms
# then the targets, MET or MISSED (a MISS does not fail; a wrong answer does: exit 1).
#   bench/server.sh
#   UPKEEP_BENCH_SECONDS=10            seconds per measurement (default 10)
#   UPKEEP_BENCH_MAX_REQUESTS=2000000  requests per measurement at most (default 2000000)
#   UPKEEP_BENCH_DEVICES=200           enrolled devices (default 200)
#   UPKEEP_BENCH_NEW_CONCURRENCY=8     devices with a check-in in flight, new-connection (default 8)
#   UPKEEP_BENCH_KEPT_CONCURRENCY=32   the same for kept-alive (default 32)
#   UPKEEP_BENCH_SERVER_THREADS=4      upkeep-server [server] threads (default 4)
#   UPKEEP_BENCH_NGINX_WORKERS=2       nginx worker_processes (default 2)
#   UPKEEP_BENCH_LOAD_THREADS=1        threads of the load generator (default 1)
#   UPKEEP_BENCH_POSTGRESQL=0          skip PostgreSQL
#   UPKEEP_BENCH_FLEET_DEVICES=100000  devices in the fleet simulation (bench/fleet_sim)
# nginx is installed with apt-get when missing (root only; otherwise its lines are skipped).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
seconds="${UPKEEP_BENCH_SECONDS:-10}"
max_requests="${UPKEEP_BENCH_MAX_REQUESTS:-2000000}"
devices="${UPKEEP_BENCH_DEVICES:-200}"
new_concurrency="${UPKEEP_BENCH_NEW_CONCURRENCY:-8}"
kept_concurrency="${UPKEEP_BENCH_KEPT_CONCURRENCY:-32}"
server_threads="${UPKEEP_BENCH_SERVER_THREADS:-4}"
nginx_workers="${UPKEEP_BENCH_NGINX_WORKERS:-2}"
load_threads="${UPKEEP_BENCH_LOAD_THREADS:-1}"
server_bin="$UPKEEP_BUILD/apps/upkeep-server/upkeep-server"
load_bin="$UPKEEP_BUILD/bench/checkin_load"
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
target_path="rootfs/x.payload"
target_length=104857600
target_sha256=$(printf 'upkeep bench target' | sha256sum | cut -d' ' -f1)

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
bounded() { timeout --kill-after=10 "$1" "${@:2}"; }
# run_child COMMAND...: runs it in the background and waits, so that a signal reaches the traps at once
# (bash runs traps only after a foreground command ends) and the cleanup can stop it.
child_pid=""
run_child() {
  local rc=0
  "$@" &
  child_pid=$!
  wait "$child_pid" || rc=$?
  child_pid=""
  return "$rc"
}
stop_child() {
  if [ -n "$child_pid" ]; then
    kill -TERM "$child_pid" 2>/dev/null || true
    wait "$child_pid" 2>/dev/null || true
    child_pid=""
  fi
}

# load ARGS...: one checkin_load run, bounded in time; its result lines go to stdout and
# $work/results; a failure is remembered (exit 1 at the end).
load() {
  local rc=0
  run_child bounded $((${seconds%.*} + 300)) "$load_bin" run --warm-up --duration "$seconds" \
    --max-requests "$max_requests" --threads "$load_threads" "$@" >"$work/load.out" 2>&1 || rc=$?
  cat "$work/load.out"
  grep -E '^(sqlite|postgresql|nginx) ' "$work/load.out" >>"$work/results" || true
  if [ "$rc" != 0 ]; then echo "FAILED (exit $rc)" >>"$work/failures"; fi
  return 0
}

# measure_backend NAME DATABASE_URL: a fresh server on that database, N devices enrolled, the
# four check-in measurements. Leaves the no-update answer size in $work/answer_bytes.
measure_backend() {
  local name="$1" url="$2" dir="$work/$1" port="" i
  mkdir -p "$dir"
  sed -e "s|^address = .*|address = \"127.0.0.1\"|" -e "s|^port = .*|port = 0|" \
    -e "s|^threads = .*|threads = $server_threads|" -e "s|^burst = .*|burst = $((devices + 10))|" \
    -e "s|^url = \"sqlite:.*|url = \"$url\"|" "$work/srv/server.toml" >"$dir/server.toml"
  local cli=("$server_bin" -c "$dir/server.toml" --log-level error)
  : >"$dir/tokens"
  for ((i = 0; i < devices; i += 1)); do
    "${cli[@]}" admin token create --model bench-dev >>"$dir/tokens"
  done
  : >"$dir/server.log"
  "$server_bin" -c "$dir/server.toml" --log-level info serve >>"$dir/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*serving the device API on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/server.log" || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "$name: upkeep-server did not start:" >&2
    tail -n 5 "$dir/server.log" >&2
    echo "FAILED ($name did not start)" >>"$work/failures"
    stop_server
    return 0
  fi
  local url_arg=(--url "https://127.0.0.1:$port" --ca "$work/srv/device-ca.pem")
  if ! run_child bounded 600 "$load_bin" enrol "${url_arg[@]}" --model bench-dev --tokens "$dir/tokens" \
      --out "$dir/devices" >"$dir/device-ids" 2>"$dir/enrol.err"; then
    echo "$name: enrolment failed: $(tail -n 3 "$dir/enrol.err")" >&2
    echo "FAILED ($name enrolment)" >>"$work/failures"
    stop_server
    return 0
  fi
  local run=("${url_arg[@]}" --devices "$dir/devices" --request checkin)
  # One check-in per device first: the first signs all three director files, later ones only a
  # new timestamp. Its answer size is the static file's size.
  run_child bounded 120 "$load_bin" run "${run[@]}" --mode kept-alive --concurrency "$kept_concurrency" \
    --max-requests "$devices" --duration 60 --label warm-up >"$dir/warm-up.out" 2>&1 || true
  sed -n 's/.*, \([0-9]*\) bytes on average.*/\1/p' "$dir/warm-up.out" >"$work/answer_bytes.$name"
  load "${run[@]}" --if-none-match --mode new-connection --concurrency "$new_concurrency" \
    --label "$name new-connection no-update"
  load "${run[@]}" --if-none-match --mode kept-alive --concurrency "$kept_concurrency" \
    --label "$name kept-alive no-update"
  while read -r id; do
    "${cli[@]}" admin devices assign "$id" --target "$target_path" --length "$target_length" \
      --sha256 "$target_sha256" >/dev/null
  done <"$dir/device-ids"
  load "${run[@]}" --expect-body-contains "$target_path" --mode new-connection \
    --concurrency "$new_concurrency" --label "$name new-connection update"
  load "${run[@]}" --expect-body-contains "$target_path" --mode kept-alive \
    --concurrency "$kept_concurrency" --label "$name kept-alive update"
  stop_server
}

# --- Inside pg_virtualenv: only the PostgreSQL measurements, into the caller's $work -----------
if [ "${1:-}" = "--postgresql-inside" ]; then
  work="$2"
  echo "$$" >"$work/inside.pid"
  trap 'stop_child; stop_server' EXIT
  trap 'exit 130' INT TERM
  pg_url="postgresql://${PGUSER:-postgres}:${PGPASSWORD:-}@${PGHOST:-localhost}:${PGPORT:-5432}/${PGDATABASE:-postgres}"
  measure_backend postgresql "$pg_url"
  exit 0
fi

upkeep_build_targets upkeep-server checkin_load fleet_sim
nginx_bin="$(command -v nginx || true)"
[ -n "$nginx_bin" ] || [ ! -x /usr/sbin/nginx ] || nginx_bin=/usr/sbin/nginx
if [ -z "$nginx_bin" ] && [ "$(id -u)" = 0 ]; then
  echo "installing nginx (apt-get install -y nginx) for the baseline" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null 2>&1 || true
  nginx_bin="$(command -v nginx || true)"
  [ -n "$nginx_bin" ] || [ ! -x /usr/sbin/nginx ] || nginx_bin=/usr/sbin/nginx
fi

work="$(mktemp -d)"
chmod 0755 "$work"  # nginx's workers read the static file and certificates
nginx_pid=""
cleanup() {
  # The PostgreSQL measurements run in a script under pg_virtualenv: stop it first (bounded).
  if [ -n "$child_pid" ] && [ -s "$work/inside.pid" ]; then
    inside=$(cat "$work/inside.pid")
    kill -TERM "$inside" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$inside" 2>/dev/null || break; sleep 0.1; done
  fi
  stop_child
  stop_server
  if [ -n "$nginx_pid" ]; then
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # run the cleanup on a signal too
: >"$work/results"
: >"$work/failures"

"$server_bin" init "$work/srv" --ip 127.0.0.1 >/dev/null
echo "server: $devices devices, upkeep-server threads $server_threads, nginx workers $nginx_workers;" \
  "in flight: new-connection $new_concurrency, kept-alive $kept_concurrency;" \
  "load generator threads $load_threads; ${seconds} s each; $(nproc) CPUs; build $UPKEEP_PRESET"

measure_backend sqlite "sqlite:$work/sqlite/fleet.db"

# --- nginx: the same certificates, a static file the size of a no-update check-in answer -------
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
answer_bytes=$(cat "$work/answer_bytes.sqlite" 2>/dev/null || true)
[ -n "$answer_bytes" ] || answer_bytes=4096
if [ -n "$nginx_bin" ] && [ -d "$work/sqlite/devices" ]; then
  mkdir -p "$work/nginx/www" "$work/nginx/tmp"
  head -c "$answer_bytes" /dev/zero | tr '\0' 'x' >"$work/nginx/www/checkin.json"
  nginx_port=$(free_port)
  user_line=""
  [ "$(id -u)" != 0 ] || user_line="user $(id -un) $(id -gn);"
  cat >"$work/nginx/nginx.conf" <<NGINX
$user_line
worker_processes $nginx_workers;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  default_type application/json;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $work/srv/server.pem;
    ssl_certificate_key $work/srv/server.key;
    ssl_client_certificate $work/srv/device-ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:upkeep_bench:10m;
    ssl_session_tickets on;
    root $work/nginx/www;
  }
}
NGINX
  "$nginx_bin" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" >"$work/nginx/stdout" 2>&1 &
  nginx_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && break
    sleep 0.1
  done
  run=(--url "https://127.0.0.1:$nginx_port" --ca "$work/srv/device-ca.pem"
    --devices "$work/sqlite/devices" --request static --path /checkin.json
    --expect-body-contains xxxx)
  load "${run[@]}" --mode new-connection --concurrency "$new_concurrency" \
    --label "nginx new-connection static"
  load "${run[@]}" --mode kept-alive --concurrency "$kept_concurrency" \
    --label "nginx kept-alive static"
  kill -TERM "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  nginx_pid=""
else
  echo "nginx: not installed (apt-get install nginx, as root): no baseline" >&2
fi

if [ "${UPKEEP_BENCH_POSTGRESQL:-1}" = 0 ]; then
  echo "postgresql: skipped (UPKEEP_BENCH_POSTGRESQL=0)"
elif ! command -v pg_virtualenv >/dev/null; then
  echo "postgresql: skipped (pg_virtualenv from postgresql-common is not installed)"
else
  # -t: the cluster in a temporary directory, also as root; stopped when the command ends.
  run_child bounded 900 pg_virtualenv -t bash "$self" --postgresql-inside "$work" >"$work/pg.out" 2>&1 ||
    echo "postgresql: pg_virtualenv failed (exit $?): skipped" >&2
  grep -vE '^(Creating|Ver|Dropping|[0-9]+ )' "$work/pg.out" || true
fi

# --- Targets -------------------------------------------------------------------------------------
field() {  # field LABEL rate|p50|p99
  awk -v label="$1" -v f="$2" '
    index($0, label ":") == 1 {
      sub(/^[^:]*: /, ""); split($0, a, ", ");
      if (f == "rate") { sub(/\/s$/, "", a[1]); print a[1] }
      if (f == "p50") { split(a[2], b, " "); print b[2] }
      if (f == "p99") { split(a[3], b, " "); print b[2] } }' "$work/results" | head -n 1
}
echo
echo "results:"
sed 's/^/  /' "$work/results"
target() {  # target NAME BASELINE RATIO [P99_LIMIT]
  local a b p99 verdict ratio
  a=$(field "$1" rate)
  b=$(field "$2" rate)
  if [ -z "$a" ] || [ -z "$b" ]; then
    echo "MISSED $1 >= $3x $2: not measured"
    return
  fi
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}')
  verdict=$(awk -v r="$ratio" -v t="$3" 'BEGIN {print (r >= t) ? "MET" : "MISSED"}')
  if [ -n "${4:-}" ]; then
    p99=$(field "$1" p99)
    verdict=$(awk -v v="$verdict" -v p="$p99" -v t="$4" \
      'BEGIN {print (v == "MET" && p <= t) ? "MET" : "MISSED"}')
    echo "$verdict $1 >= $3x $2 with p99 <= $4 ms: $a/s / $b/s = $ratio, p99 $p99 ms"
  else
    echo "$verdict $1 >= $3x $2: $a/s / $b/s = $ratio"
  fi
}
echo "targets:"
target "sqlite new-connection no-update" "nginx new-connection static" 0.8 20
target "sqlite kept-alive no-update" "nginx kept-alive static" 0.7

# How fast a release reaches a large fleet through the real rollout code (no TLS): daily
# randomised check-ins, 90% of devices online.
echo "fleet simulation:"
timeout 1800 "$UPKEEP_BUILD/bench/fleet_sim" --devices "${UPKEEP_BENCH_FLEET_DEVICES:-100000}" |
  sed 's/^/  /' || echo "fleet simulation failed" >>"$work/failures"
if [ -s "$work/failures" ]; then
  echo "some measurements failed (see above):"
  sed 's/^/  /' "$work/failures"
  exit 1
fi
exit 0
