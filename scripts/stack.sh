#!/usr/bin/env bash
# stack.sh up|down|status|env|restart-rabbitmq|restart-redis
# Runs RabbitMQ and Redis from the system packages on 127.0.0.1 with all state under $RUN
# (default .run/stack): no Docker, no systemd, free ports so a system-wide instance or another
# stack (CELERIAC_RUN_DIR=...) does not clash. `up` twice is harmless; `down` stops exactly the
# processes it started. With STACK_TLS=1 RabbitMQ also listens for amqps with a CA made here.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${CELERIAC_RUN_DIR:-$ROOT/.run/stack}
RUN=$(mkdir -p "$RUN" && cd "$RUN" && pwd)
ENVF=$RUN/stack.env
RMQ=/usr/lib/rabbitmq/bin

die() { echo "stack: $*" >&2; exit 1; }

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

load_env() { [ -f "$ENVF" ] && . "$ENVF"; return 0; }

make_env() {
    [ -f "$ENVF" ] && return 0
    local id; id=$(echo "$RUN" | md5sum | cut -c1-8)
    cat > "$ENVF" <<EOV
STACK_ID=$id
AMQP_PORT=$(free_port)
AMQPS_PORT=$(free_port)
DIST_PORT=$(free_port)
EPMD_PORT=$(free_port)
MGMT_PORT=$(free_port)
REDIS_PORT=$(free_port)
EOV
}

rmq_env() {
    export HOME=$RUN/rabbitmq
    export RABBITMQ_NODENAME=celeriac-$STACK_ID@localhost
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$AMQP_PORT
    export RABBITMQ_DIST_PORT=$DIST_PORT
    export ERL_EPMD_PORT=$EPMD_PORT
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_CRASH_DUMP=$RUN/rabbitmq/log/erl_crash.dump
    export RABBITMQ_MNESIA_BASE=$RUN/rabbitmq/mnesia
    export RABBITMQ_LOG_BASE=$RUN/rabbitmq/log
    export RABBITMQ_CONFIG_FILE=$RUN/rabbitmq/rabbitmq
    export RABBITMQ_ADVANCED_CONFIG_FILE=$RUN/rabbitmq/advanced.config
    export RABBITMQ_ENABLED_PLUGINS_FILE=$RUN/rabbitmq/enabled_plugins
    export RABBITMQ_PID_FILE=$RUN/rabbitmq/pid
    export RABBITMQ_ENABLED_PLUGINS=""
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

make_tls() {
    local d=$RUN/tls
    [ -f "$d/server.pem" ] && return 0
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=celeriac test CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/server.key" \
        -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=celeriac-client" -keyout "$d/client.key" \
        -out "$d/client.csr" 2>/dev/null
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -out "$d/client.pem" 2>/dev/null
    chmod 644 "$d"/*
}

rmq_config() {
    mkdir -p "$RUN/rabbitmq/mnesia" "$RUN/rabbitmq/log"
    {
        echo "listeners.tcp.1 = 127.0.0.1:$AMQP_PORT"
        echo "loopback_users = none"
        echo "consumer_timeout = 3600000"
        echo "log.file.level = warning"
        if [ "${STACK_TLS:-0}" = 1 ]; then
            echo "listeners.ssl.1 = 127.0.0.1:$AMQPS_PORT"
            echo "ssl_options.cacertfile = $RUN/tls/ca.pem"
            echo "ssl_options.certfile = $RUN/tls/server.pem"
            echo "ssl_options.keyfile = $RUN/tls/server.key"
            echo "ssl_options.verify = verify_peer"
            echo "ssl_options.fail_if_no_peer_cert = false"
        fi
    } > "$RUN/rabbitmq/rabbitmq.conf"
    echo "[]." > "$RUN/rabbitmq/advanced.config"
    echo "[]." > "$RUN/rabbitmq/enabled_plugins"
    # a fixed cookie under our own HOME so rabbitmqctl finds the node
    if [ ! -f "$RUN/rabbitmq/.erlang.cookie" ]; then
        head -c 20 /dev/urandom | md5sum | cut -c1-20 > "$RUN/rabbitmq/.erlang.cookie"
        chmod 400 "$RUN/rabbitmq/.erlang.cookie"
    fi
}

rmq_alive() { rmq_env; "$RMQ/rabbitmqctl" -q status >/dev/null 2>&1; }
redis_alive() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

rmq_start() {
    rmq_alive && return 0
    [ "${STACK_TLS:-0}" = 1 ] && make_tls
    rmq_config
    rmq_env
    epmd -port "$EPMD_PORT" -address 127.0.0.1 -daemon 2>/dev/null || true
    setsid "$RMQ/rabbitmq-server" > "$RUN/rabbitmq/log/startup.log" 2>&1 < /dev/null &
    echo $! > "$RUN/rabbitmq/launcher.pid"
}

rmq_wait() {
    rmq_env
    for _ in $(seq 1 120); do
        if "$RMQ/rabbitmqctl" -q await_startup >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    tail -20 "$RUN/rabbitmq/log/startup.log" >&2 || true
    die "RabbitMQ did not start (logs in $RUN/rabbitmq/log)"
}

redis_start() {
    redis_alive && return 0
    mkdir -p "$RUN/redis"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN/redis" --daemonize yes \
        --pidfile "$RUN/redis/redis.pid" --logfile "$RUN/redis/redis.log" \
        --appendonly yes --appendfsync everysec --save "" >/dev/null
    for _ in $(seq 1 50); do redis_alive && return 0; sleep 0.1; done
    die "Redis did not start (log in $RUN/redis/redis.log)"
}

rmq_stop() {
    rmq_env
    if rmq_alive; then "$RMQ/rabbitmqctl" -q shutdown >/dev/null 2>&1 || true; fi
    if [ -f "$RUN/rabbitmq/launcher.pid" ]; then
        kill "$(cat "$RUN/rabbitmq/launcher.pid")" 2>/dev/null || true
        rm -f "$RUN/rabbitmq/launcher.pid"
    fi
    # the Erlang VM and epmd started for this node only (matched by our unique node name / port)
    pkill -f "celeriac-$STACK_ID@localhost" 2>/dev/null || true
    pkill -f "epmd -port $EPMD_PORT " 2>/dev/null || true
}

redis_stop() {
    if [ -f "$RUN/redis/redis.pid" ]; then
        kill "$(cat "$RUN/redis/redis.pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$(cat "$RUN/redis/redis.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
        rm -f "$RUN/redis/redis.pid"
    fi
}

print_env() {
    echo "export CELERIAC_BROKER_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
    echo "export CELERIAC_RESULT_BACKEND=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export CELERIAC_STACK_DIR=$RUN"
    echo "export CELERIAC_RABBITMQCTL='env HOME=$RUN/rabbitmq RABBITMQ_NODENAME=celeriac-$STACK_ID@localhost ERL_EPMD_PORT=$EPMD_PORT $RMQ/rabbitmqctl'"
    if [ "${STACK_TLS:-0}" = 1 ] || [ -f "$RUN/tls/ca.pem" ]; then
        echo "export CELERIAC_TEST_AMQPS_URL=amqps://guest:guest@localhost:$AMQPS_PORT/"
        echo "export CELERIAC_TEST_TLS_DIR=$RUN/tls"
    fi
}

cmd=${1:-status}
command -v redis-server >/dev/null || die "redis-server missing: run scripts/deps.sh"
[ -x "$RMQ/rabbitmq-server" ] || die "rabbitmq-server missing: run scripts/deps.sh"
case "$cmd" in
up)
    make_env; load_env
    rmq_start; redis_start; rmq_wait
    echo "stack: RabbitMQ on 127.0.0.1:$AMQP_PORT, Redis on 127.0.0.1:$REDIS_PORT (state in $RUN)" >&2
    print_env ;;
down)
    load_env
    [ -n "${STACK_ID:-}" ] || exit 0
    redis_stop; rmq_stop
    echo "stack: stopped" >&2 ;;
status)
    load_env
    [ -n "${STACK_ID:-}" ] || { echo "stack: not set up"; exit 1; }
    rc=0
    if rmq_alive; then echo "rabbitmq: up on 127.0.0.1:$AMQP_PORT"; else echo "rabbitmq: down"; rc=1; fi
    if redis_alive; then echo "redis: up on 127.0.0.1:$REDIS_PORT"; else echo "redis: down"; rc=1; fi
    exit $rc ;;
env)
    load_env
    [ -n "${STACK_ID:-}" ] || die "not set up: run scripts/stack.sh up"
    print_env ;;
restart-rabbitmq)
    load_env; rmq_stop; sleep "${2:-0}"; rmq_start; rmq_wait ;;
stop-rabbitmq)
    load_env; rmq_stop ;;
start-rabbitmq)
    load_env; rmq_start; rmq_wait ;;
restart-redis)
    load_env; redis_stop; sleep "${2:-0}"; redis_start ;;
stop-redis)
    load_env; redis_stop ;;
start-redis)
    load_env; redis_start ;;
*)
    die "usage: stack.sh up|down|status|env|restart-rabbitmq|restart-redis|stop-*|start-*" ;;
esac
