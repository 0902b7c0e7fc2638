#!/usr/bin/env bash
# Builds the GPU test binaries on the development machine (which has Rust
# and nvcc but no GPU) and copies them into .gpu/ (git-ignored) for
# tools/gpu_check.sh to run on the GPU machine (which has a driver and
# PyTorch but no Rust). See ../shared/design/GPU.md, "Testing on the GPU
# test machine".
#
# Usage: tools/gpu_build.sh            (then carry .gpu to the GPU machine)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=.gpu
rm -rf "$out"
mkdir -p "$out"

# The lib's unit tests hold the CUDA runtime tests; tests/op_harness.rs
# runs every op (and the benchmark list) on the GPU against the CPU;
# tests/engine holds the whole-model parity tests and timings (gpu.rs).
cargo test --release --features cuda --lib --test op_harness --test engine --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
' >"$out/executables.txt"

test -s "$out/executables.txt" || { echo "gpu_build: no test executable built"; exit 1; }
while read -r name exe; do
    # Line tables are not needed there; stripping keeps the carry small.
    case "$name" in
    claim) dest=claim_lib_tests ;;
    *) dest="$name" ;;
    esac
    objcopy --strip-debug "$exe" "$out/$dest"
    chmod +x "$out/$dest"
done <"$out/executables.txt"
cp tools/gpu_check.sh tools/torch_gpu_ops.py tools/torch_gpu_denoiser.py tools/torch_gpu_train.py \
    tools/nnunet_gpu_predictor.py "$out/"
# nnU-Net's predictor for the segmentation speed comparison: the GPU
# machine has PyTorch but no nnunetv2 and no package index, so its
# pure-Python packages travel as wheels (the versions the fixtures were
# made with; tools/nnunet_gpu_predictor.py stands in for the compiled
# readers it imports but does not call).
mkdir -p "$out/wheels"
python3 -m pip wheel --quiet --no-deps -w "$out/wheels" nnunetv2==2.8.1 acvl-utils==0.2.6 \
    dynamic-network-architectures==0.4.4 batchgenerators==0.25.5 ||
    echo "gpu_build: no nnunetv2 wheels (offline?); gpu_check.sh will skip nnUNetPredictor"
ls -la "$out"
du -sh "$out"
