#!/usr/bin/env bash
# Times `claim augment` with the built-in models on a 10-case phantom
# dataset (2 cases with scar, copied; 8 normal sources, one synthetic case
# each) and prints the CPU split between synthesis and the rest, as the
# README reports it.
#
#   tools/augment_bench.sh [WORK_DIR] [T_START] [JUMP_LENGTH] [JUMP_N_SAMPLE]
#
# Defaults: target/augment-bench, and the demo's RePaint schedule 300/2/2
# (598 network evaluations per batch; CLAIM's inference setting 300/5/5
# runs 1480). Every lesion slice of a case goes in one network batch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work="${1:-target/augment-bench}"
t_start="${2:-300}"
jump_length="${3:-2}"
jump_n_sample="${4:-2}"

cargo build --release --quiet
claim="$(pwd)/target/release/claim"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
"$claim" phantom --cases 10 --scarred 2 --seed 500 -o data
cat > augment.json <<JSON
{"seed": 1, "per_case": 1,
 "synthesis": {"t_start": $t_start, "jump_length": $jump_length, "jump_n_sample": $jump_n_sample,
               "batch_size": 16}}
JSON
/usr/bin/time -v "$claim" augment --input data --model builtin --config augment.json -o out \
    2> time.log
grep -E "Elapsed|Maximum resident" time.log
python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("out/manifest.jsonl")]
synth = [r for r in rows if r["kind"] == "synthetic"]
stages = ["read_s", "smile_s", "synthesis_s", "write_s"]
total = {s: sum(r["timings"][s] for r in synth) for s in stages}
print(f"{len(synth)} synthetic cases, {sum(r['network_evaluations'] for r in synth)} network evaluations")
print("wall time per stage, summed over cases: " + ", ".join(f"{s} {v:.2f}" for s, v in total.items()))
PY
