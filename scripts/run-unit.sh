#!/usr/bin/env bash
# Runs cmocka unit test binaries; prints one closing line "N passed, N failed".
set -u
pass=0; fail=0; failed=()
for t in "$@"; do
    if "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); failed+=("$t"); fi
done
[ $fail -eq 0 ] || printf 'failed: %s\n' "${failed[@]}"
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ]
