# Sourced by kernels/check.sh and kernels/emulator/build.sh: finds the
# CUDA tools (nvcc, cuobjdump) where a CUDA toolkit or the pinned PyPI
# packages put them.

PYTHON="$(command -v python3 || command -v python || true)"

site_dirs() {
    [ -n "$PYTHON" ] || return 0
    "$PYTHON" - <<'EOF'
import site, sys
dirs = []
try:
    dirs += site.getsitepackages()
except Exception:
    pass
try:
    dirs.append(site.getusersitepackages())
except Exception:
    pass
dirs += sys.path
print("\n".join(d for d in dirs if d))
EOF
}

# find_tool NAME: CLAIM_<NAME> (for nvcc), PATH, then the pip layouts.
find_tool() {
    local name="$1" dir
    if [ "$name" = nvcc ] && [ -n "${CLAIM_NVCC:-}" ]; then
        echo "$CLAIM_NVCC"
        return 0
    fi
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    local dirs
    dirs="$(site_dirs)"
    while IFS= read -r dir; do
        [ -n "$dir" ] || continue
        for layout in nvidia/cu13/bin nvidia/cuda_nvcc/bin nvidia/cuda_cuobjdump/bin; do
            if [ -x "$dir/$layout/$name" ]; then
                echo "$dir/$layout/$name"
                return 0
            fi
        done
    done <<< "$dirs"
    return 1
}
