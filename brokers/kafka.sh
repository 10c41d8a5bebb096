#!/usr/bin/env bash
# A one-node Apache Kafka 4 (KRaft, combined broker+controller) on 127.0.0.1, for the
# integration tests and the demo. Jars come from Maven Central through brokers/pom.xml.
#
#   brokers/kafka.sh fetch         download the jars into .brokers/kafka/lib (no-op when present)
#   brokers/kafka.sh start PORT    fresh storage, start, wait until ready, print bootstrap=...
#   brokers/kafka.sh stop PORT     stop the broker and delete its data
#
# State lives in .brokers/run/kafka-PORT/ (data, configs), kafka-PORT.pid and kafka-PORT.log.
# Env: SAGABRIDGE_PYTHON (default .venv/bin/python, needs aiokafka), KAFKA_HEAP_OPTS,
#      KAFKA_READY_TIMEOUT (seconds, default 90), KAFKA_LOG_LEVEL (default WARN).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=$ROOT/.brokers/kafka/lib
RUN=$ROOT/.brokers/run
PY=${SAGABRIDGE_PYTHON:-$ROOT/.venv/bin/python}
HEAP=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-90}
LOG_LEVEL=${KAFKA_LOG_LEVEL:-WARN}

die() { echo "kafka.sh: $*" >&2; exit 1; }

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
    want="kafka $(sha256sum "$ROOT/brokers/pom.xml" | cut -d' ' -f1)"
    [[ -f $stamp && $(<"$stamp") == "$want" ]] && return 0
    # Two parallel starts must not download into the same directory.
    exec 8>"$ROOT/.brokers/kafka.fetch.lock"
    flock 8
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        echo "kafka.sh: fetching Kafka jars from Maven Central" >&2
        rm -rf "$LIB.tmp"
        # Maven's output only matters when it fails (quiet mode still prints colour codes).
        if ! mvn -q -B -f "$ROOT/brokers/pom.xml" -P kafka dependency:copy-dependencies \
            -DoutputDirectory="$LIB.tmp" >"$ROOT/.brokers/kafka.fetch.log" 2>&1; then
            cat "$ROOT/.brokers/kafka.fetch.log" >&2
            die "fetching the jars failed"
        fi
        rm -rf "$LIB"
        mv "$LIB.tmp" "$LIB"
        echo "$want" >"$stamp"
    fi
    exec 8>&-
}

free_port() {
    "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

port_open() {
    "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$1" 2>/dev/null
}

# Pids of java processes started with this port's config: covers a lost or stale pid file.
broker_pids() {
    local props=$RUN/kafka-$1/server.properties pid
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "kafka.Kafka $props" \
            && echo "$pid"
    done
    return 0
}

wait_ready() {
    local port=$1 pid=$2
    "$PY" - "$port" "$pid" "$READY_TIMEOUT" <<'EOF'
import asyncio, logging, sys, time

from aiokafka import AIOKafkaClient

port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


async def answered() -> bool:
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as f:
            exited = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        exited = True
    if exited:
        sys.exit("kafka exited during start-up")
    if asyncio.run(answered()):
        sys.exit(0)
    time.sleep(0.3)
sys.exit(f"kafka not answering metadata requests after {timeout:.0f} s")
EOF
}

start() {
    local port=$1 dir=$RUN/kafka-$1 pidfile=$RUN/kafka-$1.pid log=$RUN/kafka-$1.log
    local t0 took cport cluster_id pid
    t0=$EPOCHREALTIME
    fetch
    mkdir -p "$RUN"
    if [[ -f $pidfile ]] && alive "$(<"$pidfile")"; then
        die "already running on $port (pid $(<"$pidfile")); run: $0 stop $port"
    fi
    port_open "$port" && die "127.0.0.1:$port is already in use"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    cport=$(free_port)
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# One partition instead of 50: the first group join then waits for one coordinator load.
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
# Log4j's own hook would race Kafka's shutdown logging and fall back to stderr.
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = $log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
# At INFO, Kafka writes about ten lines per partition created: megabytes in a test run.
rootLogger.level = $LOG_LEVEL
rootLogger.appenderRef.file.ref = file
# Start, version and shutdown lines stay, to read the timeline of a failed run.
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
logger.version.name = org.apache.kafka.common.utils.internals.AppInfoParser
logger.version.level = INFO
EOF
    : >"$log"
    local java_opts=(-Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties")
    # The cluster id is a base64url UUID, as `kafka-storage random-uuid` prints; Python
    # makes one without a second JVM start. One starting with '-' would read as an option.
    cluster_id=$("$PY" -c 'import base64, uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
    if not cid.startswith("-"):
        print(cid)
        break')
    java -Xmx256m "${java_opts[@]}" -cp "$LIB/*" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$dir/server.properties" >>"$log" 2>&1 \
        || die "storage format failed, see $log"
    # shellcheck disable=SC2086  # HEAP holds several options
    nohup java $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        "${java_opts[@]}" -cp "$LIB/*" kafka.Kafka "$dir/server.properties" \
        >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    if ! wait_ready "$port" "$pid"; then
        tail -n 30 "$log" >&2
        stop "$port" >/dev/null 2>&1 || true
        die "start failed, see $log"
    fi
    took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "kafka.sh: ready on 127.0.0.1:$port in $took s (pid $pid)" >&2
    echo "bootstrap=127.0.0.1:$port"
}

stop() {
    local port=$1 pidfile=$RUN/kafka-$1.pid pids pid i
    pids=$( { [[ -f $pidfile ]] && cat "$pidfile"; broker_pids "$port"; } | sort -u)
    for pid in $pids; do
        alive "$pid" || continue
        kill -TERM "$pid" 2>/dev/null || continue
        # A clean shutdown of one node takes a few seconds; then force it.
        for ((i = 0; i < 300; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "kafka.sh: pid $pid still up after 30 s, killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
        fi
        # Wait for the reaper too, so that no <defunct> java is listed once stop returns.
        for ((i = 0; i < 50; i++)); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    done
    rm -rf "$RUN/kafka-$port" "$pidfile"
    echo "kafka.sh: stopped 127.0.0.1:$port" >&2
}

case ${1:-} in
    fetch) fetch ;;
    start) [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: $0 start PORT"; start "$2" ;;
    stop) [[ ${2:-} =~ ^[0-9]+$ ]] || die "usage: $0 stop PORT"; stop "$2" ;;
    *) die "usage: $0 fetch | start PORT | stop PORT" ;;
esac
