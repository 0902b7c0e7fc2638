#!/usr/bin/env bash
# Runs claim's pre-built GPU test binaries (tools/gpu_build.sh puts them in
# .gpu/) on a GPU machine, then PyTorch fp16 on the same GPU, and prints a
# table last (tools/gpu_table.py): op, shape, relative L2 error against the
# CPU f32 engine, claim's GPU time and PyTorch's (medians after warm-up).
# Needs a driver and python3 with torch; no Rust. Results go to $OUT when
# set (each stage's files as it finishes, so a run cut short still returns
# what it did).
#
# Usage (on the GPU machine, repository root):
#   bash tools/gpu_check.sh              every stage, then the tables
#   bash tools/gpu_check.sh STAGE...     only these, in this order
# Stages, with their time limits (the sum is over one device call's 600 s,
# so a session short of time runs them over several calls and builds the
# tables here with `python3 tools/gpu_table.py DIR` on the files that came
# back):
#   device   nvidia-smi                                               (5 s)
#   kernels  the CUDA runtime and kernel tests (backend::cuda)        (240 s)
#   harness  every op on the GPU against the CPU, and op timings      (300 s)
#   models   whole models against the CPU, and their timings          (480 s; $CLAIM_MODEL_TIMEOUT)
#            ($CLAIM_GPU_ENGINE_FILTER picks the engine tests, default `gpu`)
#   torch    PyTorch fp16 ops and the denoiser                        (180 + 240 s)
#   train    PyTorch AMP training steps                               (180 s)
#   nnunet   nnUNetPredictor on the case the models stage wrote       (300 s)
#            ($CLAIM_GPU_CASE_DIR, default $OUT/case)
#   table    the tables from $OUT
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${OUT:-$(mktemp -d)}"
bin=.gpu/claim_lib_tests
ops=.gpu/op_harness
engine=.gpu/engine
case_dir="${CLAIM_GPU_CASE_DIR:-$out/case}"
export CLAIM_FIXTURES_DIR="$PWD/tests/fixtures"
all_stages=(device kernels harness models torch train nnunet table)
stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=("${all_stages[@]}")
for stage in "${stages[@]}"; do
    case " ${all_stages[*]} " in
    *" $stage "*) ;;
    *) echo "gpu_check: unknown stage '$stage' (stages: ${all_stages[*]})"; exit 2 ;;
    esac
done
needs_binaries() {
    for b in "$bin" "$ops" "$engine"; do
        [ -x "$b" ] || { echo "gpu_check: $b missing: run tools/gpu_build.sh first"; exit 1; }
    done
}

# nnU-Net's pure-Python packages (the predictor, and the PlainConvUNet the
# AMP training anchor builds) travel as wheels; installed once, on demand.
site=""
wheels_installed=0
with_site() {
    if [ "$wheels_installed" -eq 0 ]; then
        wheels_installed=1
        if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
            site="$(mktemp -d)"
            python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl || site=""
        fi
    fi
    if [ -n "$site" ]; then
        PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$@"
    else
        "$@"
    fi
}

status=0
for stage in "${stages[@]}"; do
    started=$(date +%s)
    case "$stage" in
    device)
        echo "==> device"
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || status=1
        ;;
    kernels)
        needs_binaries
        echo "==> CUDA runtime and kernel tests (backend::cuda)"
        timeout 240 "$bin" backend::cuda --test-threads=1 2>&1 | tee "$out/cuda_tests.txt" | tail -n 40
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
        ;;
    harness)
        needs_binaries
        echo "==> op harness: every op on the GPU against the CPU f32 engine"
        CLAIM_OP_REPORT="$out/parity.jsonl" CLAIM_GPU_BENCH="$out/claim_bench.jsonl" \
            timeout 300 "$ops" cuda --test-threads=1 --nocapture 2>&1 | tee "$out/harness.txt" | grep -v " ok$" | tail -n 80
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
        ;;
    models)
        needs_binaries
        echo "==> whole models: denoiser, RePaint, the nnU-Net predictor and training steps on the GPU against the CPU, and their timings"
        CLAIM_GPU_CASE_DIR="$case_dir" CLAIM_GPU_MODELS="$out/models.jsonl" timeout "${CLAIM_MODEL_TIMEOUT:-480}" \
            "$engine" "${CLAIM_GPU_ENGINE_FILTER:-gpu}" --test-threads=1 --nocapture 2>&1 |
            tee "$out/models.txt" | grep -v "^{" | tail -n 40
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
        ;;
    torch)
        echo "==> PyTorch fp16 anchor"
        timeout 180 python3 tools/torch_gpu_ops.py >"$out/torch_bench.jsonl" 2>"$out/torch_err.txt" ||
            { echo "torch timing failed:"; tail -n 20 "$out/torch_err.txt"; }
        timeout 240 python3 tools/torch_gpu_denoiser.py >"$out/torch_models.jsonl" 2>"$out/torch_models_err.txt" ||
            { echo "torch model timing failed:"; tail -n 20 "$out/torch_models_err.txt"; }
        ;;
    train)
        echo "==> PyTorch AMP training steps"
        with_site timeout 180 python3 tools/torch_gpu_train.py \
            >"$out/torch_train.jsonl" 2>"$out/torch_train_err.txt" ||
            { echo "torch training timing failed:"; tail -n 20 "$out/torch_train_err.txt"; }
        ;;
    nnunet)
        echo "==> nnU-Net's nnUNetPredictor on the same case and results folders"
        with_site true
        if [ -n "$site" ] && [ -s "$case_dir/phantom_image.f32" ]; then
            with_site timeout 300 python3 tools/nnunet_gpu_predictor.py \
                --case "$case_dir" >"$out/nnunet_bench.jsonl" 2>"$out/nnunet_err.txt" ||
                { echo "nnUNetPredictor timing failed:"; tail -n 20 "$out/nnunet_err.txt"; }
            cat "$out/nnunet_bench.jsonl"
        else
            echo "skipped: no wheels in .gpu/wheels or no case in $case_dir (run the models stage first)"
        fi
        ;;
    table)
        echo "==> table"
        python3 tools/gpu_table.py "$out" || status=1
        ;;
    esac
    echo "--- $stage: $(( $(date +%s) - started )) s"
done
echo "gpu_check: status $status"
exit $status
