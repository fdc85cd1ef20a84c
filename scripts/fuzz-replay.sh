#!/usr/bin/env bash
# Replays every fuzz target's committed corpus with the gcc-built replay binaries in $1.
set -u
build=${1:-build}
rc=0
for bin in "$build"/tests/fuzz/*-replay; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin" -replay)
    corpus=tests/fuzz/corpus/${name#fuzz_}
    if [ ! -d "$corpus" ]; then echo "fuzz-replay: no corpus $corpus for $name" >&2; rc=1; continue; fi
    printf '%s: ' "$name"
    "$bin" "$corpus" || rc=1
done
exit $rc
