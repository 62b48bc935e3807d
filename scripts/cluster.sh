#!/usr/bin/env bash
# A local three-broker cluster for trying Borges out: brokers 0, 1 and 2 on
# 127.0.0.1 ports 9092, 9093 and 9094, every one a voter of the metadata
# quorum, each with its own data directory and log under $BORGES_CLUSTER_DIR
# (default ./borges-cluster).
#
# Usage: scripts/cluster.sh start|stop|status|kill NODE
#   start   builds the release binary if needed, starts the brokers that are
#           not running, and waits until the cluster has a controller
#   stop    stops them (SIGTERM: each asks the controller to fence it first)
#   status  the cluster as `borges cluster describe` sees it
#   kill N  SIGKILLs broker N (0, 1 or 2), as a crash would; `start` brings
#           it back
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${BORGES_CLUSTER_DIR:-borges-cluster}
PORTS=(9092 9093 9094)
BIN=${BORGES_BIN:-target/release/borges}
CONTROLLERS="0@127.0.0.1:${PORTS[0]},1@127.0.0.1:${PORTS[1]},2@127.0.0.1:${PORTS[2]}"
BROKERS="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"

running() { # node
    local pid_file="$DIR/node$1.pid"
    [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start() {
    if [ ! -x "$BIN" ]; then
        echo "building $BIN"
        cargo build --release -p borges
    fi
    if [ "$(ulimit -l)" != "unlimited" ] && [ "$(ulimit -l)" -lt 65536 ]; then
        ulimit -l unlimited 2>/dev/null || ulimit -l 65536 2>/dev/null || true
    fi
    mkdir -p "$DIR"
    local cores=1
    for node in 0 1 2; do
        if running "$node"; then
            echo "broker $node is running (pid $(cat "$DIR/node$node.pid"))"
            continue
        fi
        "$BIN" start --node-id "$node" --listen "127.0.0.1:${PORTS[$node]}" \
            --data-dir "$DIR/node$node" --cores "$cores" --controllers "$CONTROLLERS" \
            >"$DIR/node$node.log" 2>&1 &
        echo $! >"$DIR/node$node.pid"
        echo "broker $node starting on 127.0.0.1:${PORTS[$node]} (pid $!, log $DIR/node$node.log)"
    done
    for node in 0 1 2; do
        for _ in $(seq 1 300); do
            if grep -q "listening on" "$DIR/node$node.log" 2>/dev/null; then
                break
            fi
            if ! running "$node"; then
                echo "broker $node exited; see $DIR/node$node.log" >&2
                tail -5 "$DIR/node$node.log" >&2
                exit 1
            fi
            sleep 0.1
        done
    done
    status
    echo
    echo "try: $BIN topic create orders --partitions 6 --brokers $BROKERS"
}

stop() {
    for node in 0 1 2; do
        if running "$node"; then
            kill -TERM "$(cat "$DIR/node$node.pid")"
        fi
    done
    for node in 0 1 2; do
        for _ in $(seq 1 300); do
            running "$node" || break
            sleep 0.1
        done
        if running "$node"; then
            echo "broker $node did not stop within 30 s; killing it" >&2
            kill -KILL "$(cat "$DIR/node$node.pid")" || true
        fi
        rm -f "$DIR/node$node.pid"
    done
    echo "stopped"
}

status() {
    local up=0
    for node in 0 1 2; do
        if running "$node"; then
            up=$((up + 1))
        fi
    done
    echo "$up of 3 brokers running"
    if [ "$up" -gt 0 ]; then
        "$BIN" cluster describe --brokers "$BROKERS"
    fi
}

crash() { # node
    case "${1:-}" in
    0 | 1 | 2) ;;
    *)
        echo "usage: $0 kill 0|1|2" >&2
        exit 2
        ;;
    esac
    if running "$1"; then
        kill -KILL "$(cat "$DIR/node$1.pid")"
        rm -f "$DIR/node$1.pid"
        echo "broker $1 SIGKILLed"
    else
        echo "broker $1 is not running"
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
kill) crash "${2:-}" ;;
*)
    echo "usage: $0 start|stop|status|kill NODE" >&2
    exit 2
    ;;
esac
