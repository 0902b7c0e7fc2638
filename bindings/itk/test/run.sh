#!/usr/bin/env bash
# Builds the Claim ITK filters' test program against an installed claim
# package and runs it against the claim CLI.
#
#   bindings/itk/test/run.sh PREFIX
#
# PREFIX: where claim is installed (lib/cmake/claim/claimConfig.cmake);
# it goes first on CMAKE_PREFIX_PATH (ITK is found in the system paths or
# the caller's CMAKE_PREFIX_PATH). Environment:
#   CLAIM_CLI        the claim CLI (default <repo>/target/release/claim)
#   CLAIM_ATLAS_DIR  the AHA atlas folder (default <repo>/../shared/data/aha-template)
#   CLAIM_ITK_BUILD  build folder to use (default: a new temporary one)
#   JOBS             parallel build jobs (default 2)
# Exits non-zero when the build or any check fails.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
prefix=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$here/.." && pwd)
repo=$(cd "$source_dir/../.." && pwd)
cli=${CLAIM_CLI:-$repo/target/release/claim}
atlas=${CLAIM_ATLAS_DIR:-$repo/../shared/data/aha-template}

if [[ ! -x $cli ]]; then
  echo "run.sh: no claim CLI at $cli (build it with cargo build --release, or set CLAIM_CLI)" >&2
  exit 1
fi
if [[ ! -f $atlas/AHA17_model_ED.nii.gz ]]; then
  echo "run.sh: no AHA17_model_ED.nii.gz in $atlas (set CLAIM_ATLAS_DIR)" >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/claim-itk.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
build=${CLAIM_ITK_BUILD:-$scratch/build}
work=$scratch/work
mkdir -p "$work"

start=$(date +%s)
cmake -S "$source_dir" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix${CMAKE_PREFIX_PATH:+;$CMAKE_PREFIX_PATH}" \
  -DCLAIM_ITK_WERROR=ON >"$scratch/configure.log" 2>&1 || { cat "$scratch/configure.log" >&2; exit 1; }
cmake --build "$build" --parallel "${JOBS:-2}"
built=$(date +%s)
echo "run.sh: configured and built in $((built - start)) s"

test_program=$build/ClaimITKTest
# The phantom: oblique short-axis stack with scar, MVO and RV (label 5).
"$cli" phantom --output "$work/phantom" --size 96 --slices 8 --scar --seed 3
"$test_program" prepare "$atlas" "$work/phantom" "$work"
# The CLI's references for the same inputs.
"$cli" aha --rv 5 --output "$work/ref_atlas_rv.nii.gz" "$work/atlas_labels.nii.gz"
"$cli" aha --output "$work/ref_phantom_norv.nii.gz" "$work/phantom_labels_norv.nii.gz"
"$cli" aha --rv 5 --rotation 30 --output "$work/ref_phantom_rv_rot30.nii.gz" "$work/phantom/labels.nii.gz"
"$cli" segment --model builtin --labels emidec-rv --image "$work/phantom/image.nii.gz" \
  --output "$work/ref_segment.nii.gz"

"$test_program" check "$work/phantom" "$work"
# The README's example on the same phantom: it must run and write both maps.
"$build/scar_app" "$work/phantom/image.nii.gz" "$work/example_labels.nii.gz" "$work/example_segments.nii.gz"
for file in example_labels.nii.gz example_segments.nii.gz; do
  [[ -s $work/$file ]] || { echo "run.sh: scar_app did not write $file" >&2; exit 1; }
done
echo "run.sh: checks passed in $(($(date +%s) - built)) s"
