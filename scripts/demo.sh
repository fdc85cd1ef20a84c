#!/usr/bin/env bash
# make demo: on a fresh Debian machine, install what is missing, build, start RabbitMQ and Redis
# on loopback, start `worker --queue users` and `worker --queue email`, create a few users (one a
# duplicate, one invalid), show the welcome mails the email service sent through the broker,
# and stop everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Installing missing Debian packages (scripts/deps.sh)"
scripts/deps.sh
say "Building (make)"
make -j"$(nproc)" all >/dev/null

export CELERIAC_RUN_DIR=${CELERIAC_DEMO_RUN_DIR:-$ROOT/.run/demo-stack}
say "Starting RabbitMQ and Redis on 127.0.0.1 (scripts/stack.sh up)"
eval "$(scripts/stack.sh up)"

DATA=${CELERIAC_DEMO_DATA_DIR:-$ROOT/.run/demo-data}
rm -rf "$DATA" && mkdir -p "$DATA"
export CELERIAC_DATA_DIR=$DATA
export CELERIAC_EMAIL_OUTBOX_FILE=$DATA/outbox.jsonl
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    scripts/stack.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "Starting workers: worker --queue users, worker --queue email"
build/bin/worker --queue users --concurrency 2 --hostname users@demo --log-format text \
    --loglevel warning > "$DATA/worker-users.log" 2>&1 &
pids+=($!)
build/bin/worker --queue email --concurrency 1 --hostname email@demo --log-format text \
    --loglevel warning > "$DATA/worker-email.log" 2>&1 &
pids+=($!)

P=build/bin/producer
run() {
    printf '$ producer'; printf " %q" "$@"; printf '\n'
    "$P" "$@" || printf '  (exit code %d)\n' $?
}

say "Creating users; each new user's welcome mail goes out through the email queue (--link)"
run call users.create '["alice", "alice@example.com"]' --link email.send_welcome --timeout 20
run call users.create '["bob"]' '{"email": "bob@example.com"}' --link email.send_welcome --timeout 20
run call users.create '["carol", "carol@example.com"]' --link email.send_welcome --timeout 20
say "A duplicate username fails cleanly, with the handler's exception"
run call users.create '["alice", "other@example.com"]' --timeout 20
say "So does an invalid email"
run call users.create '["dave", "not-an-email"]' --timeout 20

say "All users (users.list)"
run call users.list --timeout 20

say "The welcome mails in the outbox"
for _ in $(seq 1 50); do
    [ "$(wc -l < "$CELERIAC_EMAIL_OUTBOX_FILE" 2>/dev/null || echo 0)" -ge 3 ] && break
    sleep 0.2
done
cat "$CELERIAC_EMAIL_OUTBOX_FILE" 2>/dev/null || echo "(no mail yet: see $DATA/worker-email.log)"

say "Done. Try next (after: eval \"\$(scripts/stack.sh up)\" and starting a worker):"
cat <<'TXT'
  build/bin/worker --queue users,email,bench &
  build/bin/producer send bench.noop '[{"any": ["json", 1, 2.5, null]}]' --wait
  build/bin/producer send bench.flaky '[2]' --queue bench --wait     # retried twice, then 2
  build/bin/producer send bench.sleep '[1]' --countdown 3 --wait     # delayed in the broker
  build/bin/producer inspect queues users email bench
  build/bin/producer --help
TXT
