#!/usr/bin/env bash
# Compile check of the CUDA kernels on a machine without a GPU (CI's
# "CUDA kernels" step; kernels/README.md):
#  1. finds nvcc (CLAIM_NVCC, PATH, pip packages) or installs the pinned
#     CUDA 13.0 compiler packages from PyPI;
#  2. cargo build --features cuda --lib, then clippy with the feature;
#  3. checks with cuobjdump that every embedded fatbin holds SASS for each
#     target of CLAIM_CUDA_ARCHS (default 80,90) and PTX for the first;
#  4. prints the registers/spills of every kernel (ptxas -v, collected by
#     build.rs) and fails on a spill in a GEMM/convolution kernel;
#  5. runs the convolution's B-tile gather on the host against direct
#     convolutions (kernels/tests/conv_tile_host.cu), the weight gradient's
#     gather and split-K schedule against its definition
#     (kernels/tests/conv_wgrad_host.cu), and the sliding-window
#     sum against window-by-window accumulation (kernels/tests/sliding_host.cu);
#  6. runs the CUDA build's tests without a driver.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The 13.0 line: the GPU machines run driver 580 (CUDA 13.0), which JITs
# only PTX of an ISA it knows (GPU.md).
PIP_PACKAGES=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)
# cuobjdump has no 13.0 wheel (the first is 13.2); it only reads fatbins,
# and a newer reader lists older ones.
CUOBJDUMP_PACKAGE=nvidia-cuda-cuobjdump==13.2.86

# shellcheck source=kernels/find_tool.sh
source kernels/find_tool.sh

pip_install() {
    [ -n "$PYTHON" ] || { echo "check.sh: no python to install $* with"; exit 1; }
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"
}

echo "--> CUDA compiler"
if ! NVCC="$(find_tool nvcc)"; then
    echo "nvcc not found; installing ${PIP_PACKAGES[*]}"
    pip_install "${PIP_PACKAGES[@]}"
    NVCC="$(find_tool nvcc)" || { echo "check.sh: nvcc still not found after pip install"; exit 1; }
fi
"$NVCC" --version | tail -n 2
if ! CUOBJDUMP="$(find_tool cuobjdump)"; then
    echo "cuobjdump not found; installing $CUOBJDUMP_PACKAGE"
    pip_install "$CUOBJDUMP_PACKAGE"
    CUOBJDUMP="$(find_tool cuobjdump)" || { echo "check.sh: cuobjdump still not found"; exit 1; }
fi
export CLAIM_NVCC="$NVCC"

echo "--> cargo build --features cuda --lib"
start=$(date +%s)
cargo build --features cuda --lib
echo "build took $(( $(date +%s) - start )) s"

echo "--> cargo clippy --features cuda --all-targets -- -D warnings"
cargo clippy --features cuda --all-targets -- -D warnings

# The build script's OUT_DIR (holds the fatbins, claim_kernels.rs and the
# ptxas table); the build above is fresh, so this is a no-op rebuild.
OUT_DIR="$(cargo build --features cuda --lib --message-format=json 2>/dev/null | "$PYTHON" -c '
import json, sys

def name_of(pid):
    # "path+file:///dir#name@1.0", "path+file:///dir/name#1.0" or "name 1.0 (...)"
    if "#" in pid:
        frag = pid.rsplit("#", 1)[1]
        return frag.split("@")[0] if "@" in frag else pid.rsplit("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return pid.split(" ")[0]

out = ""
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "build-script-executed" and name_of(msg.get("package_id", "")) == "claim":
        out = msg.get("out_dir", out)
print(out)
')"
[ -n "$OUT_DIR" ] && [ -f "$OUT_DIR/claim_kernels.rs" ] || { echo "check.sh: no claim_kernels.rs found (OUT_DIR '$OUT_DIR')"; exit 1; }
echo "OUT_DIR: $OUT_DIR"

echo "--> embedded fatbins"
IFS=', ' read -r -a ARCHS <<< "${CLAIM_CUDA_ARCHS:-80,90}"
failed=0
n_cu=0
for cu in kernels/*.cu; do
    n_cu=$((n_cu + 1))
    family="$(basename "$cu" .cu)"
    fatbin="$OUT_DIR/$family.fatbin"
    if [ ! -s "$fatbin" ] || ! grep -q "include_bytes!(\"$fatbin\")" "$OUT_DIR/claim_kernels.rs"; then
        echo "FAIL $family: no embedded fatbin"
        failed=1
        continue
    fi
    listing="$("$CUOBJDUMP" --list-elf --list-ptx "$fatbin")"
    missing=""
    for arch in "${ARCHS[@]}"; do
        arch="${arch#sm_}"
        grep -Eq "ELF file .*\.sm_${arch}\.cubin" <<< "$listing" || missing="$missing sm_${arch}(SASS)"
    done
    first="${ARCHS[0]#sm_}"
    grep -Eq "PTX file .*\.sm_${first}\.ptx" <<< "$listing" || missing="$missing compute_${first}(PTX)"
    if [ -n "$missing" ]; then
        echo "FAIL $family: missing$missing"
        echo "$listing"
        failed=1
    else
        echo "ok   $family: $(tr '\n' ' ' <<< "$listing" | sed 's/  */ /g')"
    fi
done
[ "$n_cu" -gt 0 ] || { echo "check.sh: no kernels/*.cu"; exit 1; }

echo "--> registers and spills (ptxas -v)"
table="$OUT_DIR/kernel_resources.tsv"
[ -s "$table" ] || { echo "check.sh: no $table"; exit 1; }
column -t -s $'\t' "$table" 2>/dev/null || cat "$table"
spills="$(awk -F'\t' 'NR > 1 && ($6 + $7) > 0' "$table")"
if [ -n "$spills" ]; then
    echo "spilling kernels:"
    echo "$spills"
    if awk -F'\t' 'NR > 1 && ($6 + $7) > 0 && ($1 ~ /^(gemm|conv)/) { bad = 1 } END { exit !bad }' "$table"; then
        echo "FAIL: a GEMM/convolution kernel spills"
        failed=1
    fi
fi

echo "--> the convolution gather on the host (kernels/tests/conv_tile_host.cu)"
# ConvTileB's own code, run thread by thread on the CPU against direct 2-D,
# 3-D and transposed convolutions; needs no GPU. The pip layout keeps the
# static CUDA runtime in <root>/lib, which nvcc.profile does not name.
host_check="$OUT_DIR/conv_tile_host"
"$NVCC" -std=c++17 -O1 -Ikernels -L"$(dirname "$(dirname "$NVCC")")/lib" \
    kernels/tests/conv_tile_host.cu -o "$host_check"
"$host_check" || { echo "FAIL: the convolution gather differs from a direct convolution"; failed=1; }

echo "--> the weight gradient's gather and split-K schedule on the host (kernels/tests/conv_wgrad_host.cu)"
# WgradTileB, wgrad_split_range and SliceCursor, run thread by thread on the
# CPU against the weight gradients of direct 2-D, 3-D and transposed
# convolutions, with one split, a few, and more splits than slices.
wgrad_check="$OUT_DIR/conv_wgrad_host"
"$NVCC" -std=c++17 -O1 -Ikernels -L"$(dirname "$(dirname "$NVCC")")/lib" \
    kernels/tests/conv_wgrad_host.cu -o "$wgrad_check"
"$wgrad_check" || { echo "FAIL: the weight-gradient gather differs from the definition"; failed=1; }

echo "--> the sliding-window sum on the host (kernels/tests/sliding_host.cu)"
# sliding_sum_at, the code of sliding_accumulate_f16's threads, against
# nnU-Net's window-by-window f16 accumulation, bit for bit.
sliding_check="$OUT_DIR/sliding_host"
"$NVCC" -std=c++17 -O1 -Ikernels -L"$(dirname "$(dirname "$NVCC")")/lib" \
    kernels/tests/sliding_host.cu -o "$sliding_check"
"$sliding_check" || { echo "FAIL: the sliding-window sum differs from window-by-window accumulation"; failed=1; }

echo "--> the CUDA build on this GPU-less machine (cargo test --features cuda)"
# Without a driver: CUDA requests fail with Error::Device naming the
# missing driver (never a panic), every GPU test says "skipped: no CUDA
# device", and the CPU engine is unchanged with the feature on.
cargo test --features cuda --lib -- backend:: nn::device ffi::diffusion ffi::segmentation ffi::version
cargo run --features cuda --quiet -- info --build | tee "$OUT_DIR/info_build.txt"
for arch in "${ARCHS[@]}"; do
    grep -q "sm_${arch#sm_}" "$OUT_DIR/info_build.txt" ||
        { echo "FAIL: claim info --build does not list sm_${arch#sm_}"; failed=1; }
done

if [ "$failed" -ne 0 ]; then
    echo "CUDA kernel check FAILED"
    exit 1
fi
echo "CUDA kernel check passed"
