#!/usr/bin/env bash
# CLAIM's comparison in miniature, on phantoms (docs/EXPERIMENTS.md):
# four segmenters with the same budget (steps, batch, network, seeds),
#   a  real cases only
#   b  real + synthetic, upstream-style masks   (--patterns claim)
#   c  real + synthetic, claim's SMILE masks    (ischaemic + non-ischaemic)
#   d  the joint loop: c, with the generator training alongside (λ = 0.01)
# then every segmenter on the same held-out phantoms: scar Dice, HD95 and
# scar-burden error, mean ± sd, as a table and an SVG bar chart.
#
# Usage: tools/claim_ablation.sh [WORK_DIR] [STEPS]
# Default sizes run in about 25 minutes on 2 cores (release build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$root/target/claim-ablation}"
steps="${2:-400}"
mkdir -p "$work"
cargo build --release --manifest-path "$root/Cargo.toml"
claim="$root/target/release/claim"

# The cohort: 6 scarred ("real") cases, seeds 3000–3005; 12 normal cases,
# seeds 3006–3017; 10 held-out scarred test cases, seeds 3200–3209. The
# generator starts from the built-in model (trained on seeds 1000–1023).
common=(--phantom 6 --phantom-seed 3000 --phantom-normal 12 --phantom-size 96 --phantom-slices 8
  --steps "$steps" --start-step 0 --every 1 --seg-features 16,32,64,128 --seg-patch 64,64
  --seg-batch 8 --seg-iterations-per-epoch 50 --synthetic-cases 2 --synthetic-slices 2 --synth-every 10
  --seed 5
  --checkpoint-every 100000 --generator-init builtin)
smile=ischemic,midwall,epicardial,insertion

run_arm() {
  local name="$1"; shift
  if [[ -f "$work/$name/validation.csv" ]]; then
    echo "arm $name: done already"
    return
  fi
  rm -rf "${work:?}/$name"
  echo "arm $name: claim train joint $*"
  /usr/bin/time -f "arm $name: %e s" "$claim" train joint "${common[@]}" -o "$work/$name" "$@"
}

start=$(date +%s)
run_arm a --freeze-generator --lambda 0 --real-fraction 1
run_arm b --freeze-generator --lambda 0 --patterns claim
run_arm c --freeze-generator --lambda 0 --patterns "$smile"
run_arm d --lambda 0.01 --patterns "$smile" --lr 2e-4 --batch 4 --ema-start 0 --ema-every 1 --ema-decay 0.9

for i in $(seq 0 9); do
  case_dir="$work/test/case_$i"
  [[ -f "$case_dir/labels.nii.gz" ]] || "$claim" phantom -o "$case_dir" --seed $((3200 + i)) --scar --size 96 --slices 8 > /dev/null
done
for arm in a b c d; do
  mkdir -p "$work/$arm/test"
  for i in $(seq 0 9); do
    case_dir="$work/test/case_$i"
    "$claim" segment --model "$work/$arm/segmenter" --image "$case_dir/image.nii.gz" \
      -o "$work/$arm/test/case_$i.nii.gz" --labels emidec-rv > /dev/null
    "$claim" eval "$work/$arm/test/case_$i.nii.gz" "$case_dir/labels.nii.gz" --labels emidec-rv --no-segments --json \
      > "$work/$arm/test/case_$i.json"
  done
done
echo "total: $(( $(date +%s) - start )) s" | tee "$work/wall_time.txt"
python3 "$root/tools/ablation_report.py" "$work" "$root/docs"
