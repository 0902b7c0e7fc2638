#!/usr/bin/env bash
# Builds claim in release mode and installs it into a prefix:
#
#   bindings/install.sh --prefix DIR [--libdir lib] [--features cuda] [--no-build] [--keep-debug]
#
#   DIR/include/claim.h, claim.hpp, itkClaim*.h (the header-only ITK filters)
#   DIR/lib/libclaim.so.<abi major>.<abi minor>    the shared library, soname libclaim.so.<abi major>
#   DIR/lib/libclaim.so.<abi major> -> ...         the name programs load
#   DIR/lib/libclaim.so -> ...                     the name the linker finds (-lclaim)
#   DIR/lib/libclaim.a                             the static library
#   DIR/lib/pkgconfig/claim.pc                     pkg-config --cflags --libs claim
#   DIR/lib/cmake/claim/claimConfig.cmake          find_package(claim 0.1) -> claim::claim
#   DIR/lib/cmake/claim/claimConfigVersion.cmake     (and claim::claim_static)
#   DIR/share/claim/install_manifest.txt           every file installed, for uninstalling
#
# The libraries are installed without their debug sections (the release
# profile keeps them for profiling: 51 MB -> 10 MB for the .so); symbols stay,
# so backtraces still name functions. --keep-debug installs them as built.
# DESTDIR is honoured the usual way (files go to $DESTDIR$DIR; the paths
# written into claim.pc stay $DIR). The CMake files find the prefix from
# their own location, so an installed tree can be moved.
set -euo pipefail

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

prefix=""
libdir="lib"
features=""
build=1
keep_debug=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --libdir) libdir="${2:?--libdir needs a name}"; shift 2 ;;
        --libdir=*) libdir="${1#*=}"; shift ;;
        --features) features="${2:?--features needs a list}"; shift 2 ;;
        --features=*) features="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        --keep-debug) keep_debug=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ -z "$prefix" ]; then
    echo "install.sh: --prefix DIR is required" >&2
    usage >&2
    exit 2
fi
case "$libdir" in
    /*|*..*) echo "install.sh: --libdir is a name under the prefix (lib, lib64, lib/x86_64-linux-gnu), not '$libdir'" >&2; exit 2 ;;
esac
# An absolute prefix: claim.pc and the messages name it.
mkdir -p "${DESTDIR:-}$prefix"
prefix="$(cd "${DESTDIR:-}$prefix" && pwd)"
prefix="${prefix#"${DESTDIR:-}"}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Versions: the package version from Cargo.toml, the ABI version from
# src/ffi/version.rs (the soname's number, as build.rs sets it).
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
abi_major="$(sed -n 's/^pub const CLAIM_ABI_VERSION_MAJOR: u32 = \([0-9]*\);$/\1/p' src/ffi/version.rs)"
abi_minor="$(sed -n 's/^pub const CLAIM_ABI_VERSION_MINOR: u32 = \([0-9]*\);$/\1/p' src/ffi/version.rs)"
if [ -z "$version" ] || [ -z "$abi_major" ] || [ -z "$abi_minor" ]; then
    echo "install.sh: cannot read the versions from Cargo.toml and src/ffi/version.rs" >&2
    exit 1
fi

case "$(uname -s)" in
    Darwin)
        shared_dev="libclaim.dylib"
        shared_soname="libclaim.${abi_major}.dylib"
        shared_real="libclaim.${abi_major}.${abi_minor}.dylib"
        ;;
    *)
        shared_dev="libclaim.so"
        shared_soname="libclaim.so.${abi_major}"
        shared_real="libclaim.so.${abi_major}.${abi_minor}"
        ;;
esac

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ "$build" = 1 ]; then
    echo "install.sh: building claim ${version} (ABI ${abi_major}.${abi_minor}) in release mode"
    if [ -n "$features" ]; then
        cargo build --release --lib --features "$features"
    else
        cargo build --release --lib
    fi
fi
built="$target_dir/release"
for file in "$shared_dev" libclaim.a; do
    if [ ! -f "$built/$file" ]; then
        echo "install.sh: $built/$file is missing (run without --no-build)" >&2
        exit 1
    fi
done

# Libraries a program linking libclaim.a needs besides it (what
# `rustc --print native-static-libs` lists for the standard library).
case "$(uname -s)" in
    Darwin) static_libs="-lSystem -lc -lm" ;;
    *) static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc" ;;
esac

dest="${DESTDIR:-}$prefix"
manifest=()
install_file() { # MODE SOURCE DIR [NAME]
    local mode="$1" source="$2" dir="$3" name="${4:-$(basename "$2")}"
    mkdir -p "$dest/$dir"
    # Into a temporary name, then renamed: a running program that has the
    # old library mapped keeps its copy intact.
    cp "$source" "$dest/$dir/.$name.tmp"
    chmod "$mode" "$dest/$dir/.$name.tmp"
    mv -f "$dest/$dir/.$name.tmp" "$dest/$dir/$name"
    manifest+=("$prefix/$dir/$name")
}
install_link() { # TARGET DIR NAME
    mkdir -p "$dest/$2"
    ln -sfn "$1" "$dest/$2/$3"
    manifest+=("$prefix/$2/$3")
}
generate() { # DIR NAME, contents on stdin
    mkdir -p "$dest/$1"
    cat > "$dest/$1/.$2.tmp"
    chmod 644 "$dest/$1/.$2.tmp"
    mv -f "$dest/$1/.$2.tmp" "$dest/$1/$2"
    manifest+=("$prefix/$1/$2")
}

install_file 644 include/claim.h include
install_file 644 bindings/cpp/claim.hpp include
# The header-only ITK filters (bindings/itk): usable through claim::claim's
# include directory once ITK is found too.
for header in bindings/itk/include/itkClaim*.h; do
    install_file 644 "$header" include
done
install_file 755 "$built/$shared_dev" "$libdir" "$shared_real"
install_link "$shared_real" "$libdir" "$shared_soname"
install_link "$shared_soname" "$libdir" "$shared_dev"
install_file 644 "$built/libclaim.a" "$libdir"
if [ "$keep_debug" = 0 ] && command -v strip >/dev/null 2>&1; then
    case "$(uname -s)" in
        Darwin) strip_flag="-S" ;;
        *) strip_flag="--strip-debug" ;;
    esac
    strip "$strip_flag" "$dest/$libdir/$shared_real" "$dest/$libdir/libclaim.a"
fi

subst() {
    sed -e "s|@PREFIX@|$prefix|g" \
        -e "s|@LIBDIR@|$libdir|g" \
        -e "s|@VERSION@|$version|g" \
        -e "s|@ABI_MAJOR@|$abi_major|g" \
        -e "s|@ABI_MINOR@|$abi_minor|g" \
        -e "s|@SHARED_REAL@|$shared_real|g" \
        -e "s|@SHARED_SONAME@|$shared_soname|g" \
        -e "s|@STATIC_LIBS@|$static_libs|g" \
        "$1"
}
generate "$libdir/pkgconfig" claim.pc < <(subst bindings/cmake/claim.pc.in)
generate "$libdir/cmake/claim" claimConfig.cmake < <(subst bindings/cmake/claimConfig.cmake.in)
generate "$libdir/cmake/claim" claimConfigVersion.cmake < <(subst bindings/cmake/claimConfigVersion.cmake.in)

generate share/claim install_manifest.txt < <(printf '%s\n' "${manifest[@]}" "$prefix/share/claim/install_manifest.txt")

echo "install.sh: installed claim ${version} into ${dest}:"
printf '  %s\n' "${manifest[@]}"
echo "Use it with:"
echo "  pkg-config: PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig pkg-config --cflags --libs claim"
echo "  CMake:      cmake -DCMAKE_PREFIX_PATH=$prefix ...   then find_package(claim 0.1 REQUIRED) and claim::claim"
