"""The ctypes mirror against include/claim.h: struct layout (compiled with cc),
constants, the set of functions, and the ABI check at load."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import claim
from claim import _ffi

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def header(repo_root):
    path = repo_root / "include" / "claim.h"
    if not path.is_file():
        pytest.skip(f"no C header at {path}")
    return path


def _compile_and_run(tmp_path, source, include_dir):
    if not CC:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    src = tmp_path / "layout.c"
    exe = tmp_path / "layout"
    src.write_text(source)
    subprocess.run([CC, "-std=c99", "-I", str(include_dir), "-o", str(exe), str(src)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


def test_struct_sizes_and_offsets_match_the_header(header, tmp_path):
    lines = ['#include "claim.h"', "#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
    for name, cls in _ffi.STRUCTS.items():
        lines.append(f'    printf("{name} size %zu\\n", sizeof({name}));')
        for field, _ in cls._fields_:
            lines.append(
                f'    printf("{name}.{field} offset %zu size %zu\\n", offsetof({name}, {field}), '
                f"sizeof((({name} *)0)->{field}));"
            )
    lines += ["    return 0;", "}"]
    out = _compile_and_run(tmp_path, "\n".join(lines) + "\n", header.parent)

    c = {}
    for line in out.splitlines():
        key, *rest = line.split()
        c[key] = [int(v) for v in rest[1::2]]
    mismatches = []
    for name, cls in _ffi.STRUCTS.items():
        if c[name][0] != ctypes.sizeof(cls):
            mismatches.append(f"sizeof({name}): C {c[name][0]}, ctypes {ctypes.sizeof(cls)}")
        for field, ctype in cls._fields_:
            offset, size = c[f"{name}.{field}"]
            mine = getattr(cls, field)
            if (offset, size) != (mine.offset, ctypes.sizeof(ctype)):
                mismatches.append(
                    f"{name}.{field}: C offset {offset} size {size}, "
                    f"ctypes offset {mine.offset} size {ctypes.sizeof(ctype)}"
                )
    assert not mismatches, "\n".join(mismatches)


def test_every_struct_of_the_header_is_mirrored(header):
    declared = set(re.findall(r"^typedef struct (claim_\w+) \{", header.read_text(), re.M))
    assert declared == set(_ffi.STRUCTS), (declared ^ set(_ffi.STRUCTS))


def test_every_function_of_the_header_has_a_prototype(header):
    text = header.read_text()
    declared = set(re.findall(r"^[A-Za-z_][\w \*]*?\b(claim_\w+)\(", text, re.M))
    mirrored = set(_ffi.PROTOTYPES) | set(_ffi.OPTIONAL_PROTOTYPES)
    assert declared == mirrored, (declared ^ mirrored)
    assert not set(_ffi.PROTOTYPES) & set(_ffi.OPTIONAL_PROTOTYPES)


def test_integer_constants_match_the_header(header):
    # CLAIM_ABI_VERSION_MINOR too: a new minor means new fields or functions to mirror.
    checked = 0
    for name, value in re.findall(r"^#define (CLAIM_\w+) (-?\d+|\(1 << \d+\))\s*$", header.read_text(), re.M):
        expected = eval(value, {})  # only integer literals and (1 << n) match the pattern
        assert getattr(_ffi, name) == expected, name
        checked += 1
    assert checked > 40


def test_struct_size_is_set_to_sizeof():
    for cls in (_ffi.claim_label_scheme, _ffi.claim_aha_params, _ffi.claim_smile_params,
                _ffi.claim_bullseye_options, _ffi.claim_load_options, _ffi.claim_synthesis_params,
                _ffi.claim_segmenter_options, _ffi.claim_segmentation_params):
        assert _ffi.default(cls).struct_size == ctypes.sizeof(cls), cls.__name__
    assert _ffi.sized(_ffi.claim_volume).struct_size == ctypes.sizeof(_ffi.claim_volume)


def _import_with(library, tmp_path):
    """Imports claim in a subprocess with CLAIM_LIBRARY=library; returns stderr."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(claim.__file__)))
    env = dict(os.environ, CLAIM_LIBRARY=str(library))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    code = "import claim"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    return done.stderr


def test_missing_library_is_a_clear_error(tmp_path):
    err = _import_with(tmp_path / "nowhere" / "libclaim.so", tmp_path)
    assert "ClaimError" in err and "CLAIM_LIBRARY" in err


def test_another_abi_major_is_refused(tmp_path):
    if not CC:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    src = tmp_path / "fake.c"
    src.write_text(textwrap.dedent("""
        #include <stdint.h>
        uint32_t claim_abi_version(void) { return (3u << 16) | 0u; }
    """))
    lib = tmp_path / "libfake.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    err = _import_with(lib, tmp_path)
    assert "C ABI 3.0" in err and "needs 2.x" in err


def test_versions():
    major, minor = claim.abi_version()
    assert major == _ffi.ABI_MAJOR == 2 and minor >= _ffi.ABI_MINOR >= 1
    assert re.match(r"^\d+\.\d+\.\d+", claim.version())
    info = claim.build_info()
    assert isinstance(info.cuda_status, str) and info.cuda_status
    assert os.path.isfile(claim.library_path())
