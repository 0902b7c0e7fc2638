#!/usr/bin/env bash
# Reproduces the built-in models in models/ (see models/README.md for the
# wall times measured). Usage: tools/make_builtin_models.sh [WORK_DIR]
# Runs the release `claim` of this checkout; the results are bit-identical
# on any x86-64 machine with the same build (seeded runs, f32 on the CPU).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$root/target/builtin-models}"
mkdir -p "$work"
cargo build --release --manifest-path "$root/Cargo.toml"
claim="$root/target/release/claim"

# The diffusion model: CLAIM's one-channel 2-D layout and 72-pixel windows,
# a small network (dim 16, mults 1,2,4), on 24 scarred phantoms.
time "$claim" train diffusion --phantom 24 --phantom-seed 1000 --phantom-size 192 --phantom-slices 10 \
  -o "$work/diffusion.safetensors" --steps 1500 --batch 8 --dim 16 --dim-mults 1,2,4 --heads 2 \
  --dim-head 16 --crop 72 --lr 2e-3 --ema-decay 0.99 --ema-every 5 --ema-start 500 --seed 11 \
  --checkpoint-every 500

# The segmenter: nnU-Net 2d, features 16..128, 96-pixel patches, on 16
# scarred phantoms (fold 0 holds out 4 of them).
time "$claim" train segmenter --phantom 16 --phantom-seed 1000 --phantom-size 192 --phantom-slices 10 \
  -o "$work/segmenter" --epochs 1 --iterations-per-epoch 1000 --batch 8 --features 16,32,64,128 \
  --patch 96,96 --seed 4

# Stored as f16.
"$claim" import "$work/diffusion.safetensors" -o "$root/models/claim-diffusion-phantom.safetensors" --half
"$claim" import "$work/segmenter" -o "$root/models/claim-segmenter-phantom.safetensors" --half
