#!/usr/bin/env bash
# Where a stream through Dynamo 1.6.1's global router is held: Dynamo alone (no slurmserve), one host.
#
# Starts, with file discovery in a temporary folder: one mock-engine worker in namespace `fast`, its local
# router (python -m dynamo.router), the global router (python -m dynamo.global_router, one agg pool),
# a frontend scoped to the global router's namespace (frontend -> global router -> local router -> worker)
# and one scoped to `fast` (frontend -> worker). Then measures, with benchmarks/stream_arrivals.py, 4
# streams at a time, connections kept alive (as most clients keep them):
#   1. each Dynamo hop without HTTP: the worker, the local router, the global router (Dynamo's own client);
#   2. HTTP through each frontend;
#   3. with a C compiler: 2. again, the frontends started with benchmarks/nodelay_shim.c preloaded, which
#      sets TCP_NODELAY on the connections they accept;
#   4. as root: 2. again in a network namespace of its own whose loopback ACKs at once (ip route ...
#      quickack 1), i.e. without the client's delayed ACK.
# 1 streams token by token at every hop. 2 holds the first tokens through the global router about 40 ms,
# the headers long before them: the frontend's HTTP socket has no TCP_NODELAY (see it with
# `strace -f -e trace=setsockopt,accept4 -p FRONTEND_PID`: every Dynamo-internal socket gets TCP_NODELAY,
# the accepted HTTP one none), so Nagle's algorithm holds each small SSE write until the client's delayed
# ACK of the one before (the headers, then each chunk). Tokens that trickle in through the routers one by
# one pay it; a worker's burst straight to the frontend mostly leaves in one write. 3 and 4 each remove
# one half of that, and the hold is gone.
#
#   benchmarks/global_router_stream.sh [PYTHON]   (default: .venv/bin/python; MODEL= a model folder)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SELF=$REPO/benchmarks/global_router_stream.sh
PYTHON=${1:-$REPO/.venv/bin/python}
MODEL=${MODEL:-$REPO/slurmserve/models/tiny-mock}

serve() {  # start the processes in $WORK, wait for both frontends; FRONTEND_ENV: more env for the frontends
    cd "$WORK"
    ln -sfn "$MODEL" tiny-mock  # the global router's --model-name is also its model path (1.6.1)
    cat > global_router.json <<'EOF'
{"mode": "agg", "num_agg_pools": 1, "agg_pool_dynamo_namespaces": ["fast"],
 "agg_pool_selection_strategy": {"ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 1,
   "itl_min_ms": 0, "itl_max_ms": 1000, "itl_resolution": 1, "agg_pool_mapping": [[0]]}}
EOF
    export DYN_DISCOVERY_BACKEND=file DYN_FILE_KV=$WORK/discovery DYN_SDK_DISABLE_ANSI_LOGGING=1
    local name
    for name in DYN_TCP_RPC_HOST DYN_TCP_RESPONSE_STREAM_HOST DYN_EVENT_PLANE_HOST DYN_SYSTEM_HOST; do
        export "$name=127.0.0.1"
    done
    local ready=DYN_SYSTEM_STARTING_HEALTH_STATUS=ready  # the routers answer /health only with it
    DYN_NAMESPACE=fast DYN_SYSTEM_PORT=18101 DYN_HEALTH_CHECK_ENABLED=true "$PYTHON" -m dynamo.mocker \
        --model-path "$MODEL" --model-name fast--tiny-mock --speedup-ratio 100 > mocker.log 2>&1 & PIDS+=($!)
    wait_for http://127.0.0.1:18101/health
    env $ready DYN_NAMESPACE=fast DYN_SYSTEM_PORT=18102 "$PYTHON" -m dynamo.router \
        --endpoint fast.backend.generate > router.log 2>&1 & PIDS+=($!)
    wait_for http://127.0.0.1:18102/health
    env $ready DYN_NAMESPACE=gr DYN_SYSTEM_PORT=18103 "$PYTHON" -m dynamo.global_router \
        --config global_router.json --model-name tiny-mock --namespace gr > global_router.log 2>&1 & PIDS+=($!)
    wait_for http://127.0.0.1:18103/health
    env ${FRONTEND_ENV:-} "$PYTHON" -m dynamo.frontend --http-host 127.0.0.1 --http-port 18080 \
        --router-mode round-robin --namespace gr > frontend-global-router.log 2>&1 & PIDS+=($!)
    env ${FRONTEND_ENV:-} "$PYTHON" -m dynamo.frontend --http-host 127.0.0.1 --http-port 18081 \
        --router-mode round-robin --namespace fast > frontend-pool.log 2>&1 & PIDS+=($!)
    wait_for http://127.0.0.1:18080/v1/models tiny-mock
    wait_for http://127.0.0.1:18081/v1/models fast--tiny-mock
}

client() {  # 80 requests, 4 at a time
    "$PYTHON" "$REPO/benchmarks/stream_arrivals.py" --requests 80 --concurrency 4 "$@"
}

wait_for() {  # URL [TEXT]: until it answers (with TEXT), at most 60 s
    local _
    for _ in $(seq 600); do
        if curl -sf "$1" 2>/dev/null | grep -q "${2:-}"; then return; fi
        sleep 0.1
    done
    echo "no answer from $1; logs in $WORK" >&2
    exit 1
}

stop() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

through_http() {
    client http http://127.0.0.1:18080 tiny-mock --label "HTTP, through the global router"
    client http http://127.0.0.1:18081 fast--tiny-mock --label "HTTP, the pool directly       "
}

if [ "${1:-}" = --quickack-inside ]; then  # the fourth part, in a namespace of its own
    PYTHON=$2 MODEL=$3
    ip link set lo up
    for route in 127.0.0.0/8 127.0.0.1; do
        ip route replace local $route dev lo proto kernel scope host src 127.0.0.1 table local quickack 1
    done
    WORK=$(mktemp -d) PIDS=()
    trap stop EXIT
    serve
    through_http
    exit
fi

WORK=$(mktemp -d) PIDS=()
trap stop EXIT
serve
echo "== 1. each Dynamo hop, Dynamo's own client, no HTTP"
for endpoint in fast.backend.generate fast.router.generate gr.global_router.generate; do
    client dynamo $endpoint --label "$(printf '%-26s' $endpoint)" 2>/dev/null
done
echo "== 2. HTTP, the frontend's socket as Dynamo 1.6.1 opens it"
through_http
stop
if command -v cc > /dev/null; then
    echo "== 3. HTTP again, TCP_NODELAY set on the frontends' accepted sockets (benchmarks/nodelay_shim.c)"
    WORK=$(mktemp -d) PIDS=()
    cc -shared -fPIC -O2 -o "$WORK/nodelay_shim.so" "$REPO/benchmarks/nodelay_shim.c" -ldl
    FRONTEND_ENV=LD_PRELOAD=$WORK/nodelay_shim.so serve
    through_http
    stop
else
    echo "== 3. skipped: needs a C compiler (cc) for the shim"
fi
if [ "$(id -u)" = 0 ] && command -v unshare > /dev/null; then
    echo "== 4. HTTP again, the loopback ACKing at once (no delayed ACK for Nagle's algorithm to wait on)"
    unshare -n bash "$SELF" --quickack-inside "$PYTHON" "$MODEL"
else
    echo "== 4. skipped: needs root (a network namespace whose loopback route has quickack 1)"
fi
