#!/usr/bin/env bash
# The GPU tests on the CUDA emulator (kernels/emulator/README.md), for
# machines without a GPU (CI's "CUDA on the emulator" step): builds the
# emulator, then runs with it as the driver
#   1. the CUDA runtime and kernel tests (backend::cuda),
#   2. the op harness: every op on the device against the CPU f32 engine,
#   3. the engine's GPU tests that fit a CPU's time: the losses and the
#      device-side look-up backward (gpu_train::cuda_losses, _embedding),
#      and the model paths on small models (gpu_small: the denoiser's
#      forward, guidance and captured graph, RePaint with and without the
#      graph, the synthesis pipeline with the built-in model, nnU-Net's
#      predictor on a small case); with --models also the full-size
#      training tests (a training step of the CLAIM denoiser and three
#      segmenters, resident weights: 30+ minutes).
# Each must run, not skip: a "skipped: no CUDA device" line fails the check.
# Every timing stays with tools/gpu_check.sh on a GPU. Needs the CUDA
# headers (kernels/check.sh installs them) and about 5 minutes on 2 cores
# after the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash kernels/emulator/build.sh target/cuda-emulator
export LD_LIBRARY_PATH="$PWD/target/cuda-emulator${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT

run() {
    local name="$1"
    shift
    echo "--> $name"
    local started
    started=$(date +%s)
    if ! "$@" --nocapture >"$log/$name.txt" 2>&1; then
        grep -v " ok$" "$log/$name.txt" | tail -n 60
        echo "FAIL: $name on the CUDA emulator"
        exit 1
    fi
    if grep -q "skipped: no CUDA device" "$log/$name.txt"; then
        grep "skipped: no CUDA device" "$log/$name.txt" | head -n 3
        echo "FAIL: $name skipped its GPU tests: the emulator did not open"
        exit 1
    fi
    grep -E "^test result" "$log/$name.txt" | tail -n 1
    echo "    $(( $(date +%s) - started )) s"
}

echo "--> the device the CUDA build opens"
cargo run --features cuda --quiet -- info --build | tee "$log/info.txt" | grep "CUDA device" || true
grep -q "claim CUDA emulator" "$log/info.txt" || { echo "FAIL: claim info does not list the emulator"; exit 1; }

run kernels cargo test --features cuda --lib -- backend::cuda
run harness cargo test --features cuda --test op_harness -- every_op_on_cuda normal_noise_on_cuda
# One test at a time, as tools/gpu_check.sh runs them on a GPU: the tests
# share the device's default stream, and a graph capture on it (RePaint's,
# the denoiser test's) must not meet another test's work there.
if [ "${1:-}" = --models ]; then
    run engine cargo test --features cuda --test engine -- gpu_train::cuda gpu_small:: --test-threads=1
else
    run engine cargo test --features cuda --test engine -- gpu_train::cuda_losses gpu_train::cuda_embedding \
        gpu_small:: --test-threads=1
fi
echo "CUDA emulator check passed"
