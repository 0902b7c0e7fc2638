"""Builds the claim shared library and bundles it into the package.

`pip install ./bindings/python` (or `pip wheel ./bindings/python`) needs no
second step: the build_py step below either copies the library named by the
environment variable CLAIM_LIBRARY, or runs `cargo build --release --lib` in
the repository root (CLAIM_SOURCE_DIR, default: the directory two levels
above this file, which must hold Cargo.toml; CARGO_TARGET_DIR and CARGO are
honoured) and copies target/release/libclaim.so (libclaim.dylib on macOS,
claim.dll on Windows) into claim/_lib/. The wheel is marked
platform-specific; since the package has no compiled Python extension it is
tagged py3-none-<platform>: one wheel per OS/architecture for every Python
3.9+.
"""

import os
import re
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


def library_file_name():
    if sys.platform == "darwin":
        return "libclaim.dylib"
    if sys.platform == "win32":
        return "claim.dll"
    return "libclaim.so"


def source_dir():
    root = os.environ.get("CLAIM_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, "Cargo.toml")):
        raise SystemExit(
            f"claim: no Cargo.toml in {root}: set CLAIM_SOURCE_DIR to the claim repository root, "
            "or CLAIM_LIBRARY to an already-built libclaim"
        )
    return root


def crate_version():
    """The crate's version from Cargo.toml ([package] version), so the wheel
    and the library it ships carry the same number."""
    root = os.environ.get("CLAIM_SOURCE_DIR") or os.path.join(HERE, "..", "..")
    try:
        with open(os.path.join(root, "Cargo.toml"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return os.environ.get("CLAIM_VERSION", "0.0.0")
    package = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = package and re.search(r'^version\s*=\s*"([^"]+)"', package.group(1), re.M)
    return found.group(1) if found else os.environ.get("CLAIM_VERSION", "0.0.0")


def built_library():
    """Path of the library to bundle, building it with cargo when needed."""
    given = os.environ.get("CLAIM_LIBRARY")
    if given:
        if not os.path.isfile(given):
            raise SystemExit(f"claim: CLAIM_LIBRARY={given!r} is not a file")
        return given
    root = source_dir()
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        raise SystemExit(
            "claim: cargo was not found on PATH: install Rust (https://rustup.rs) or set "
            "CLAIM_LIBRARY to an already-built libclaim"
        )
    command = [cargo, "build", "--release", "--lib"]
    print("claim: running", " ".join(command), "in", root, flush=True)
    subprocess.run(command, cwd=root, check=True)
    target = os.environ.get("CARGO_TARGET_DIR") or "target"
    path = os.path.join(root, target, "release", library_file_name())
    if not os.path.isfile(path):
        raise SystemExit(f"claim: cargo finished but {path} is missing")
    return path


def strip_debug_info(path):
    """Drops the debug sections the release profile keeps (51 MB -> 10 MB
    measured); symbols stay, so backtraces still name functions.
    CLAIM_KEEP_DEBUG=1 keeps them; without a `strip` tool nothing changes."""
    if os.environ.get("CLAIM_KEEP_DEBUG") or sys.platform == "win32":
        return
    strip = shutil.which("strip")
    if strip is None:
        return
    flag = "-S" if sys.platform == "darwin" else "--strip-debug"
    subprocess.run([strip, flag, path], check=True)


class BuildPyWithLibrary(build_py):
    """build_py that also places the shared library in claim/_lib/."""

    def run(self):
        super().run()
        library = built_library()
        destination = os.path.join(self.build_lib, "claim", "_lib")
        os.makedirs(destination, exist_ok=True)
        # Under the canonical name: the package loads it by path, so the
        # soname (libclaim.so.2) does not matter.
        target = os.path.join(destination, library_file_name())
        shutil.copyfile(library, target)
        shutil.copymode(library, target)
        strip_debug_info(target)
        print(f"claim: bundled {library} as {target}", flush=True)


class BinaryDistribution(Distribution):
    """Not pure: the package ships a native library (platlib, platform wheel)."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        # ctypes only: any CPython 3 works, but only on this platform.
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    version=crate_version(),
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
)
