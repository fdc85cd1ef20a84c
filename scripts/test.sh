#!/usr/bin/env bash
# The whole suite behind `make test`: packages, build, a private RabbitMQ+Redis stack on
# loopback (stopped again at the end), then unit, integration, interop, chaos and cluster tests.
# TESTS="unit integration interop chaos" selects suites; PYTEST_ARGS passes through (e.g. -k name).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

scripts/deps.sh || exit 1
make -j"$(nproc)" all || exit 1

export CELERIAC_RUN_DIR=${CELERIAC_RUN_DIR:-$ROOT/.run/test-stack}
export STACK_TLS=1
env_out=$(scripts/stack.sh up) || { echo "test: could not start the stack" >&2; exit 1; }
eval "$env_out"
if [ "${KEEP_STACK:-0}" != 1 ]; then
    trap 'scripts/stack.sh down' EXIT
fi

SUITES=${TESTS:-format unit integration interop chaos cluster}
pass=0; fail=0; failed=()
record() { if [ "$1" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); failed+=("$2"); fi; }

for suite in $SUITES; do
    case $suite in
    format)
        make -s format-check; record $? "make format-check" ;;
    unit)
        for t in build/tests/unit/test_*; do "$t"; record $? "$t"; done ;;
    integration|interop|chaos)
        if [ "$suite" = integration ]; then
            for t in build/tests/integration/test_*; do [ -x "$t" ] || continue; "$t"; record $? "$t"; done
        fi
        if ls tests/$suite/test_*.py >/dev/null 2>&1; then
            /usr/bin/python3 -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} tests/$suite
            record $? "pytest tests/$suite"
        fi ;;
    cluster)
        # its own three-node RabbitMQ cluster (scripts/cluster.sh), started and stopped by the test
        /usr/bin/python3 -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} tests/cluster
        record $? "pytest tests/cluster" ;;
    esac
done

[ $fail -eq 0 ] || printf 'failed: %s\n' "${failed[@]}"
echo "suites: $pass passed, $fail failed"
[ $fail -eq 0 ]
