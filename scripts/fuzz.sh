#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer with AddressSanitizer) of the
# targets in fuzz/: the request body parsers, the config reader and the DSL
# importer. `make fuzz` runs this, then the stable mutation loop; `make
# fuzz-setup` installs cargo-fuzz. Nightly only, so never part of `make test`
# or CI: without nightly or cargo-fuzz it says why and exits 0.
#
#   scripts/fuzz.sh [SECS [TARGET...]]   SECS per target (default 300)
#
# Each target's corpus is fuzz/corpus/<target>/ (not committed), seeded from
# the seeds the stable loop uses; libFuzzer keeps the inputs that reach new
# code there, so later runs start where earlier ones stopped. A crash stops
# the script (exit 1) with libFuzzer's report; the input is saved in
# fuzz/artifacts/<target>/ and replays with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-…
# The first build compiles every dependency again under nightly with the
# sanitizer, llama.cpp's C++ included (some 20 min on 2 cores; later runs reuse
# fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-300}
shift || true
all=(dify_message_body workflow_run_body openai_chat_body knowledge_body config_reader dsl_importer)
targets=("$@")
if [ $# -eq 0 ]; then targets=("${all[@]}"); fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: SKIP coverage-guided fuzzing: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: SKIP coverage-guided fuzzing: cargo-fuzz is not installed (make fuzz-setup)" >&2
    exit 0
fi

# The seeds: the same files the stable loop starts from.
seed() { # target, files...
    local dir=fuzz/corpus/$1
    shift
    mkdir -p "$dir"
    for f in "$@"; do cp -n "$f" "$dir/seed-$(basename "$f")"; done
}
for t in dify_message_body workflow_run_body openai_chat_body knowledge_body; do
    seed "$t" tests/fixtures/fuzz/"$t"/*.json
done
seed config_reader configs/*.toml
seed dsl_importer tests/fixtures/dsl/*.yml configs/*.yml

export CARGO_INCREMENTAL=0
cargo +nightly fuzz build --release --sanitizer address
mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    log=fuzz/logs/$t.log
    echo "fuzz.sh: $t for ${secs} s (full log: $log)"
    # -timeout: an input that takes 10 s is a hang, reported as a crash.
    set +e
    cargo +nightly fuzz run --release --sanitizer address "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    # The last coverage line (execs, cov: edges, ft: features, corpus) and the totals.
    grep -E '^#[0-9]+' "$log" | tail -n 1
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz.sh: $t FAILED (exit $status); the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
