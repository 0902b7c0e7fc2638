#!/usr/bin/env bash
# Builds and runs the consumers of an installed claim (bindings/install.sh):
#
#   bindings/examples/run.sh PREFIX [ATLAS_DIR]
#
# - the installed headers compiled as C99 and C++17 with -Wall -Wextra
#   -Wpedantic -Werror, each included twice;
# - c/aha_atlas.c built with `cc $(pkg-config --cflags --libs claim)`;
# - the CMake project in cmake/ (find_package(claim 0.1 REQUIRED)): the C++
#   example on claim::claim, the C example on claim::claim_static;
# - each program run on the AHA atlas (each checks that over 80 % of the
#   myocardium lands in the atlas's own segment); their segment maps must be
#   identical;
# - the shared library's soname is libclaim.so.<ABI major>, and programs
#   linked to it ask for that name.
set -euo pipefail

prefix="${1:?usage: run.sh PREFIX [ATLAS_DIR]}"
prefix="$(cd "$prefix" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
atlas_dir="${2:-${CLAIM_ATLAS_DIR:-$repo/../shared/data/aha-template}}"
atlas="$atlas_dir/AHA17_model_ED.nii.gz"
[ -f "$atlas" ] || { echo "run.sh: no atlas at $atlas" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cc="${CC:-cc}"
cxx="${CXX:-c++}"

echo "== installed headers, C99 and C++17, -Wall -Wextra -Wpedantic -Werror, included twice"
printf '#include "claim.h"\n#include "claim.h"\nint main(void) { return claim_abi_version() >> 16 == CLAIM_ABI_VERSION_MAJOR ? 0 : 1; }\n' > "$work/twice.c"
printf '#include "claim.h"\n#include "claim.hpp"\n#include "claim.h"\n#include "claim.hpp"\nint main() { return claim::abi_compatible() ? 0 : 1; }\n' > "$work/twice.cpp"
"$cc" -std=c99 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags claim) "$work/twice.c" -o "$work/twice_c" $(pkg-config --libs claim) -Wl,-rpath,"$prefix/lib"
"$cxx" -std=c++17 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags claim) "$work/twice.cpp" -o "$work/twice_cpp" $(pkg-config --libs claim) -Wl,-rpath,"$prefix/lib"
"$work/twice_c"
"$work/twice_cpp"

echo "== soname"
soname="$(readelf -d "$prefix/lib/libclaim.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
needed="$(readelf -d "$work/twice_c" | sed -n 's/.*Shared library: \[\(libclaim[^]]*\)\]/\1/p')"
echo "soname $soname; a program linked with -lclaim needs $needed"
[ -n "$soname" ] && [ "$soname" = "$needed" ] && [ -e "$prefix/lib/$soname" ] || {
    echo "run.sh: soname '$soname', needed '$needed', or $prefix/lib/$soname missing" >&2
    exit 1
}

echo "== pkg-config (shared): cc \$(pkg-config --cflags --libs claim)"
echo "   pkg-config says: $(pkg-config --modversion claim): $(pkg-config --cflags --libs claim)"
(
    cd "$here/c"
    # readme:begin
    export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
    cc -std=c99 -Wall -Wextra -Werror aha_atlas.c -o "$work/aha_atlas_c" \
        $(pkg-config --cflags --libs claim) -Wl,-rpath,"$(pkg-config --variable=libdir claim)"
    "$work/aha_atlas_c" "$atlas" "$work/c.nii.gz"
    # readme:end
)

echo "== pkg-config (static): cc \$(pkg-config --static --cflags --libs claim)"
"$cc" -std=c99 -Wall -Wextra -Werror "$here/c/aha_atlas.c" -o "$work/aha_atlas_c_static" \
    $(pkg-config --cflags claim) "$prefix/lib/libclaim.a" $(pkg-config --static --libs-only-l claim | sed 's/-lclaim//')
if readelf -d "$work/aha_atlas_c_static" | grep -q 'libclaim'; then
    echo "run.sh: the static build still needs libclaim.so" >&2
    exit 1
fi
"$work/aha_atlas_c_static" "$atlas" "$work/c_static.nii.gz"

echo "== CMake: find_package(claim 0.1 REQUIRED), claim::claim and claim::claim_static"
cmake -S "$here/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" > "$work/cmake.log" \
    || { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/cmake" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$work/cmake/aha_atlas_cpp" "$atlas" "$work/cpp.nii.gz"
"$work/cmake/aha_atlas_static" "$atlas" "$work/cmake_static.nii.gz"

echo "== CMake refuses a version it is not"
mkdir -p "$work/wrong"
printf 'cmake_minimum_required(VERSION 3.16)\nproject(wrong LANGUAGES C)\nfind_package(claim 9.0 REQUIRED)\n' > "$work/wrong/CMakeLists.txt"
if cmake -S "$work/wrong" -B "$work/wrong/build" -DCMAKE_PREFIX_PATH="$prefix" > "$work/wrong.log" 2>&1; then
    echo "run.sh: find_package(claim 9.0) succeeded" >&2
    exit 1
fi

echo "== the segment maps agree"
cmp_maps() { # the decompressed NIfTI files are byte-identical
    cmp <(gzip -dc "$1") <(gzip -dc "$2") || { echo "run.sh: $1 and $2 differ" >&2; exit 1; }
}
cmp_maps "$work/c.nii.gz" "$work/c_static.nii.gz"
cmp_maps "$work/c.nii.gz" "$work/cpp.nii.gz"
cmp_maps "$work/c.nii.gz" "$work/cmake_static.nii.gz"
echo "run.sh: every consumer built and ran against $prefix"
