#!/usr/bin/env bash
# cluster.sh up|down|status|env|stop-node N|start-node N
# A three-node RabbitMQ cluster plus one Redis on 127.0.0.1, from the system packages, with all
# state under $RUN (default .run/cluster; CELERIAC_RUN_DIR=... for another one): three node names
# with their own AMQP and distribution ports, one epmd and one Erlang cookie, nodes 2 and 3
# joined to node 1 with `rabbitmqctl join_cluster`. `env` prints CELERIAC_BROKER_URL as the
# comma-separated list of the three nodes (the failover list the worker and producer take) and
# CELERIAC_CLUSTER_URL_<N> / CELERIAC_CLUSTER_CTL_<N> per node. `down` stops exactly the
# processes it started (by their pid files). Used by tests/cluster (make test-cluster).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${CELERIAC_RUN_DIR:-$ROOT/.run/cluster}
RUN=$(mkdir -p "$RUN" && cd "$RUN" && pwd)
ENVF=$RUN/cluster.env
RMQ=/usr/lib/rabbitmq/bin
NODES="1 2 3"

die() { echo "cluster: $*" >&2; exit 1; }

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

load_env() { [ -f "$ENVF" ] && . "$ENVF"; return 0; }

make_env() {
    [ -f "$ENVF" ] && return 0
    local id; id=$(echo "$RUN" | md5sum | cut -c1-8)
    {
        echo "CLUSTER_ID=$id"
        echo "EPMD_PORT=$(free_port)"
        echo "REDIS_PORT=$(free_port)"
        for n in $NODES; do
            echo "AMQP_PORT_$n=$(free_port)"
            echo "DIST_PORT_$n=$(free_port)"
        done
    } > "$ENVF"
}

node_name() { echo "cel$1-$CLUSTER_ID@localhost"; }

# the environment of node n (rabbitmq-server and rabbitmqctl alike)
node_env() {
    local n=$1 d=$RUN/node$1 ap dp
    ap=AMQP_PORT_$n; dp=DIST_PORT_$n
    export HOME=$RUN/home # one cookie for the three nodes and the CLI
    export RABBITMQ_NODENAME; RABBITMQ_NODENAME=$(node_name "$n")
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=${!ap}
    export RABBITMQ_DIST_PORT=${!dp}
    export ERL_EPMD_PORT=$EPMD_PORT
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_CRASH_DUMP=$d/log/erl_crash.dump
    export RABBITMQ_MNESIA_BASE=$d/mnesia
    export RABBITMQ_LOG_BASE=$d/log
    export RABBITMQ_CONFIG_FILE=$d/rabbitmq
    export RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
    export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
    export RABBITMQ_PID_FILE=$d/pid
    export RABBITMQ_ENABLED_PLUGINS=""
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() { local n=$1; shift; (node_env "$n"; "$RMQ/rabbitmqctl" -n "$(node_name "$n")" "$@"); }

node_alive() { ctl "$1" -q status >/dev/null 2>&1; }

node_config() {
    local n=$1 d=$RUN/node$1 ap
    ap=AMQP_PORT_$n
    mkdir -p "$d/mnesia" "$d/log" "$RUN/home"
    {
        echo "listeners.tcp.1 = 127.0.0.1:${!ap}"
        echo "loopback_users = none"
        echo "consumer_timeout = 3600000"
        echo "log.file.level = warning"
    } > "$d/rabbitmq.conf"
    echo "[]." > "$d/advanced.config"
    echo "[]." > "$d/enabled_plugins"
    if [ ! -f "$RUN/home/.erlang.cookie" ]; then
        head -c 20 /dev/urandom | md5sum | cut -c1-20 > "$RUN/home/.erlang.cookie"
        chmod 400 "$RUN/home/.erlang.cookie"
    fi
}

epmd_start() {
    if [ -f "$RUN/epmd.pid" ] && kill -0 "$(cat "$RUN/epmd.pid")" 2>/dev/null; then return 0; fi
    setsid epmd -port "$EPMD_PORT" -address 127.0.0.1 > "$RUN/epmd.log" 2>&1 < /dev/null &
    echo $! > "$RUN/epmd.pid"
}

node_start() {
    local n=$1
    node_alive "$n" && return 0
    node_config "$n"
    (node_env "$n"; setsid "$RMQ/rabbitmq-server" > "$RUN/node$n/log/startup.log" 2>&1 < /dev/null &
     echo $! > "$RUN/node$n/launcher.pid")
}

node_wait() {
    local n=$1
    for _ in $(seq 1 120); do
        if ctl "$n" -q await_startup >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    tail -20 "$RUN/node$n/log/startup.log" >&2 || true
    die "node $n did not start (logs in $RUN/node$n/log)"
}

# Stops node n: a clean shutdown, then its VM by pid if it is still there.
node_stop() {
    local n=$1 pidf=$RUN/node$1/pid
    node_alive "$n" && { ctl "$n" -q shutdown >/dev/null 2>&1 || true; }
    for f in "$pidf" "$RUN/node$n/launcher.pid"; do
        if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
    done
}

joined() { ctl 1 -q cluster_status --formatter json 2>/dev/null | grep -q "$(node_name "$1")"; }

join() {
    local n=$1
    for _ in $(seq 1 3); do
        ctl 1 -q cluster_status --formatter json 2>/dev/null | /usr/bin/python3 -c \
            "import json,sys; sys.exit(0 if '$(node_name "$n")' in json.load(sys.stdin)['running_nodes'] else 1)" \
            && return 0
        ctl "$n" -q stop_app >/dev/null
        ctl "$n" -q join_cluster "$(node_name 1)" >/dev/null || true
        ctl "$n" -q start_app >/dev/null
    done
    die "node $n did not join the cluster"
}

redis_alive() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

redis_start() {
    redis_alive && return 0
    mkdir -p "$RUN/redis"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --daemonize yes \
        --pidfile "$RUN/redis/redis.pid" --logfile "$RUN/redis/redis.log" --save "" >/dev/null
    for _ in $(seq 1 50); do redis_alive && return 0; sleep 0.1; done
    die "Redis did not start (log in $RUN/redis/redis.log)"
}

redis_stop() {
    if [ -f "$RUN/redis/redis.pid" ]; then
        kill "$(cat "$RUN/redis/redis.pid")" 2>/dev/null || true
        rm -f "$RUN/redis/redis.pid"
    fi
}

print_env() {
    local urls="" ap
    for n in $NODES; do
        ap=AMQP_PORT_$n
        urls="$urls${urls:+,}amqp://guest:guest@127.0.0.1:${!ap}/"
        echo "export CELERIAC_CLUSTER_URL_$n=amqp://guest:guest@127.0.0.1:${!ap}/"
        echo "export CELERIAC_CLUSTER_NODE_$n=$(node_name "$n")"
    done
    echo "export CELERIAC_BROKER_URL=$urls"
    echo "export CELERIAC_RESULT_BACKEND=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export CELERIAC_CLUSTER_SCRIPT=$ROOT/scripts/cluster.sh"
    echo "export CELERIAC_RUN_DIR=$RUN"
}

cmd=${1:-status}
command -v redis-server >/dev/null || die "redis-server missing: run scripts/deps.sh"
[ -x "$RMQ/rabbitmq-server" ] || die "rabbitmq-server missing: run scripts/deps.sh"
case "$cmd" in
up)
    make_env; load_env
    epmd_start
    for n in $NODES; do node_start "$n"; done
    redis_start
    for n in $NODES; do node_wait "$n"; done
    join 2; join 3
    # The delay levels (celeriac.delay.<n>) are classic queues living on the node that first
    # declared them: mirror them on every node so a stopped node does not take them away
    # (RabbitMQ 3.x classic mirroring; the task queues themselves are quorum queues).
    ctl 1 -q set_policy --apply-to queues celeriac-delay '^celeriac\.delay\.' \
        '{"ha-mode":"all","ha-sync-mode":"automatic"}' >/dev/null
    echo "cluster: 3 RabbitMQ nodes on 127.0.0.1:$AMQP_PORT_1,$AMQP_PORT_2,$AMQP_PORT_3, Redis on $REDIS_PORT (state in $RUN)" >&2
    print_env ;;
down)
    load_env
    [ -n "${CLUSTER_ID:-}" ] || exit 0
    redis_stop
    for n in 3 2 1; do node_stop "$n"; done
    if [ -f "$RUN/epmd.pid" ]; then kill "$(cat "$RUN/epmd.pid")" 2>/dev/null || true; rm -f "$RUN/epmd.pid"; fi
    echo "cluster: stopped" >&2 ;;
status)
    load_env
    [ -n "${CLUSTER_ID:-}" ] || { echo "cluster: not set up"; exit 1; }
    ctl 1 cluster_status ;;
env)
    load_env
    [ -n "${CLUSTER_ID:-}" ] || die "not set up: run scripts/cluster.sh up"
    print_env ;;
stop-node)
    load_env; node_stop "${2:?node number}" ;;
start-node)
    load_env; node_start "${2:?node number}"; node_wait "$2" ;;
ctl)
    load_env; n=${2:?node number}; shift 2; ctl "$n" "$@" ;;
*)
    die "usage: cluster.sh up|down|status|env|stop-node N|start-node N|ctl N ARGS..." ;;
esac
