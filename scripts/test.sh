#!/usr/bin/env bash
# Runs the whole Borges test suite: every crate's unit, property and crash
# tests, then a short run of each benchmark so that they keep working.
# Usage: scripts/test.sh [--no-bench]
set -euo pipefail
cd "$(dirname "$0")/.."

# glommio locks memory for its io_uring rings and buffers: it needs a
# memlock limit of at least 512 KiB. Raise it where we may.
if [ "$(ulimit -l)" != "unlimited" ] && [ "$(ulimit -l)" -lt 65536 ]; then
    ulimit -l unlimited 2>/dev/null || ulimit -l 65536 2>/dev/null || true
fi
if [ "$(ulimit -l)" != "unlimited" ] && [ "$(ulimit -l)" -lt 512 ]; then
    echo "memlock limit is $(ulimit -l) KiB; glommio needs at least 512 KiB (ulimit -l)" >&2
    exit 1
fi

echo "== cargo test --workspace"
cargo test --workspace --all-targets

if [ "${1:-}" != "--no-bench" ]; then
    echo "== benchmark smoke runs (--quick)"
    cargo run --release -p borges-bench --bin storage-bench -- --quick
    cargo run --release -p borges-bench --bin produce-bench -- --quick
    cargo run --release -p borges-bench --bin consume-bench -- --quick
    cargo run --release -p borges-bench --bin group-bench -- --quick
    cargo run --release -p borges-bench --bin cluster-bench -- --quick
    cargo run --release -p borges-bench --bin replication-bench -- --quick
    cargo run --release -p borges-bench --bin request-path-bench -- --quick
    GLOMMIO_MAX_SLEEP_MS=0 cargo run --release -p borges-bench --bin stall-stress -- --secs 10
fi
