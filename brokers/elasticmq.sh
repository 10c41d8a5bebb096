#!/usr/bin/env bash
# ElasticMQ, an SQS-compatible server kept in memory, on 127.0.0.1 for the integration tests and
# the demo. Jars come from Maven Central through brokers/pom.xml.
#
#   brokers/elasticmq.sh fetch        download the jars into .brokers/elasticmq/lib (no-op if there)
#   brokers/elasticmq.sh start PORT   start, wait until ListQueues is answered, print endpoint=...
#   brokers/elasticmq.sh stop PORT    stop the server and delete its run directory
#
# State lives in .brokers/run/elasticmq-PORT/ (config), elasticmq-PORT.pid and elasticmq-PORT.log.
# Queues live in memory only: every start is empty. Region us-east-1, account 000000000000.
# Env: SAGABRIDGE_PYTHON (default .venv/bin/python), ELASTICMQ_HEAP_OPTS,
#      ELASTICMQ_READY_TIMEOUT (seconds, default 60).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/.brokers/elasticmq/lib
RUN=$ROOT/.brokers/run
PY=${SAGABRIDGE_PYTHON:-$ROOT/.venv/bin/python}
HEAP=${ELASTICMQ_HEAP_OPTS:--Xms128m -Xmx256m}
READY_TIMEOUT=${ELASTICMQ_READY_TIMEOUT:-60}

die() { echo "elasticmq.sh: $*" >&2; exit 1; }

# A zombie still answers kill -0; count it as gone (its parent may never reap it).
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

fetch() {
    mkdir -p "$ROOT/.brokers"
    # The stamp holds the pom's hash, so a version bump in the pom refetches.
    local stamp want
    stamp=$LIB/.fetched
    want="elasticmq $(sha256sum "$ROOT/brokers/pom.xml" | cut -d' ' -f1)"
    [[ -f $stamp && $(<"$stamp") == "$want" ]] && return 0
    # Two parallel starts must not download into the same directory.
    exec 8>"$ROOT/.brokers/elasticmq.fetch.lock"
    flock 8
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        echo "elasticmq.sh: fetching ElasticMQ jars from Maven Central" >&2
        rm -rf "$LIB.tmp"
        # Maven's output only matters when it fails (quiet mode still prints colour codes).
        if ! mvn -q -B -f "$ROOT/brokers/pom.xml" -P elasticmq dependency:copy-dependencies \
            -DoutputDirectory="$LIB.tmp" >"$ROOT/.brokers/elasticmq.fetch.log" 2>&1; then
            cat "$ROOT/.brokers/elasticmq.fetch.log" >&2
            die "fetching the jars failed"
        fi
        rm -rf "$LIB"
        mv "$LIB.tmp" "$LIB"
        echo "$want" >"$stamp"
    fi
    exec 8>&-
}

port_open() {
    "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$1" 2>/dev/null
}

# Pids of java processes started with this port's config: covers a lost or stale pid file.
server_pids() {
    local conf=$RUN/elasticmq-$1/elasticmq.conf pid
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-Dconfig.file=$conf " \
            && echo "$pid"
    done
    return 0
}

wait_ready() {
    "$PY" - "$1" "$2" "$READY_TIMEOUT" <<'EOF'
import sys, time, urllib.request

port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/",
    data=b"Action=ListQueues&Version=2012-11-05",
    headers={"Content-Type": "application/x-www-form-urlencoded"},
)
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as f:
            exited = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        exited = True
    if exited:
        sys.exit("elasticmq exited during start-up")
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            if reply.status == 200 and b"ListQueuesResponse" in reply.read():
                sys.exit(0)
    except OSError:  # refused, reset, or an HTTP error status
        pass
    time.sleep(0.2)
sys.exit(f"elasticmq not answering ListQueues after {timeout:.0f} s")
EOF
}

start() {
    local port=$1 dir=$RUN/elasticmq-$1 pidfile=$RUN/elasticmq-$1.pid log=$RUN/elasticmq-$1.log
    local t0 took pid
    t0=$EPOCHREALTIME
    fetch
    mkdir -p "$RUN"
    if [[ -f $pidfile ]] && alive "$(<"$pidfile")"; then
        die "already running on $port (pid $(<"$pidfile")); run: $0 stop $port"
    fi
    port_open "$port" && die "127.0.0.1:$port is already in use"
    rm -rf "$dir"
    mkdir -p "$dir"
    # node-address makes queue URLs point at the loopback address the server binds to.
    cat >"$dir/elasticmq.conf" <<EOF
include classpath("application.conf")

node-address {
  protocol = http
  host = "127.0.0.1"
  port = $port
  context-path = ""
}

rest-sqs {
  enabled = true
  bind-port = $port
  bind-hostname = "127.0.0.1"
  sqs-limits = strict
}

generate-node-address = false

aws {
  region = us-east-1
  accountId = "000000000000"
}
EOF
    : >"$log"
    # shellcheck disable=SC2086  # HEAP holds several options
    nohup java $HEAP -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dconfig.file="$dir/elasticmq.conf" -cp "$LIB/*" org.elasticmq.server.Main \
        >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    if ! wait_ready "$port" "$pid"; then
        tail -n 30 "$log" >&2
        stop "$port" >/dev/null 2>&1 || true
        die "start failed, see $log"
    fi
    took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "elasticmq.sh: ready on 127.0.0.1:$port in $took s (pid $pid)" >&2
    echo "endpoint=http://127.0.0.1:$port"
}

stop() {
    local port=$1 pidfile=$RUN/elasticmq-$1.pid pids pid i
    pids=$( { [[ -f $pidfile ]] && cat "$pidfile"; server_pids "$port"; } | sort -u)
    for pid in $pids; do
        alive "$pid" || continue
        kill -TERM "$pid" 2>/dev/null || continue
        for ((i = 0; i < 200; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "elasticmq.sh: pid $pid still up after 20 s, killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
        fi
        # Wait for the reaper too, so that no <defunct> java is listed once stop returns.
        for ((i = 0; i < 50; i++)); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    done
    rm -rf "$RUN/elasticmq-$port" "$pidfile"
    echo "elasticmq.sh: stopped 127.0.0.1:$port" >&2
}

case ${1:-} in
    fetch) fetch ;;
    start) [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: $0 start PORT"; start "$2" ;;
    stop) [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: $0 stop PORT"; stop "$2" ;;
    *) die "usage: $0 fetch | start PORT | stop PORT" ;;
esac
