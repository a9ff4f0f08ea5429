#!/usr/bin/env bash
# Build every fuzz target and run each for SECONDS_PER_TARGET seconds (default 30), one
# after the other, on a scratch copy of its seed corpus. Exits non-zero if any target
# crashes (or fails its invariants); prints the executions per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#   TARGETS="ike_responder reassembly" fuzz/run.sh 600     # a subset
#
# For the long local runs on a 2-core machine, start two of these with disjoint TARGETS.
#
# Needs a nightly toolchain and cargo-fuzz (`cargo +nightly install cargo-fuzz --locked`).
# FUZZ_TOOLCHAIN overrides the toolchain (`+nightly`; empty: plain `cargo`).
#
# The checked-in seeds (fuzz/corpus/<target>/) are only read: libFuzzer works on
# fuzz/target/corpus-run/<target>/, which keeps growing across runs (delete it to start
# over). Crash inputs go to fuzz/artifacts/<target>/; logs to fuzz/target/corpus-run/.
set -euo pipefail

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || ((secs == 0)); then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$fuzz_dir")"
toolchain="${FUZZ_TOOLCHAIN-+nightly}"
cargo=(cargo)
rustc=(rustc)
if [[ -n "$toolchain" ]]; then
    cargo+=("$toolchain")
    rustc+=("$toolchain")
fi
triple="$("${rustc[@]}" -vV | sed -n 's/^host: //p')"
run_dir="$fuzz_dir/target/corpus-run"

cd "$root"
# Bounded like the runs: a cold build of all targets takes a few minutes.
timeout 1800 "${cargo[@]}" fuzz build --fuzz-dir "$fuzz_dir" --target "$triple"
mapfile -t targets < <("${cargo[@]}" fuzz list --fuzz-dir "$fuzz_dir")
if [[ -n "${TARGETS:-}" ]]; then
    read -r -a wanted <<<"$TARGETS"
    for w in "${wanted[@]}"; do
        if ! printf '%s\n' "${targets[@]}" | grep -qx -- "$w"; then
            echo "unknown target: $w (have: ${targets[*]})" >&2
            exit 2
        fi
    done
    targets=("${wanted[@]}")
fi

mkdir -p "$run_dir"
failed=()
summary=()
for t in "${targets[@]}"; do
    bin="$fuzz_dir/target/$triple/release/$t"
    corpus="$run_dir/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    log="$run_dir/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [[ -d "$fuzz_dir/corpus/$t" ]]; then
        cp -pR "$fuzz_dir/corpus/$t/." "$corpus/"
    fi
    before="$(ls -A "$artifacts")"

    echo "== $t: ${secs}s (log: ${log#"$root"/})"
    rc=0
    # -jobs=1 -workers=1: one child process, whose output libFuzzer copies to stderr at
    # the end (its fuzz-0.log lands in a directory of its own, so that parallel runs
    # do not share one). The timeout is a backstop only.
    mkdir -p "$run_dir/$t.cwd"
    (
        cd "$run_dir/$t.cwd"
        timeout -k 30 $((secs + 120)) "$bin" "$corpus" \
            -max_total_time="$secs" -jobs=1 -workers=1 -rss_limit_mb=2048 -timeout=10 \
            -print_final_stats=1 -artifact_prefix="$artifacts/"
    ) >"$log" 2>&1 || rc=$?

    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -n1 | grep -o '[0-9]*$' || true)"
    after="$(ls -A "$artifacts")"
    if ((rc != 0)) || [[ "$after" != "$before" ]]; then
        failed+=("$t")
        summary+=("$(printf '%-16s %8s execs  FAILED (exit %d)' "$t" "${execs:-?}" "$rc")")
        echo "-- $t FAILED (exit $rc); new artifacts:" >&2
        comm -13 <(echo "$before") <(echo "$after") | sed "s|^|   ${artifacts#"$root"/}/|" >&2
        grep -E -A30 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY" "$log" | head -n 60 >&2 || true
    else
        summary+=("$(printf '%-16s %8s execs  ok' "$t" "${execs:-?}")")
    fi
done

echo
echo "== ${secs}s per target"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/; keep them as regression seeds)" >&2
    exit 1
fi
