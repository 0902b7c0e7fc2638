//! Build script: with the `cuda` feature, compiles every `kernels/*.cu`
//! into one fatbin per op family and writes `$OUT_DIR/claim_kernels.rs`,
//! which embeds them (see `kernels/README.md`). Without the feature it does
//! nothing. Without a CUDA compiler it warns once and embeds no kernels;
//! with one, any compile error (or a register spill in a GEMM/convolution
//! kernel) fails the build.
//!
//! nvcc is looked for in `CLAIM_NVCC`, then `PATH`, then the PyPI layout
//! (`site-packages/nvidia/cu13/bin/nvcc`, from `pip install
//! nvidia-cuda-nvcc==13.0.*` and friends), then `CUDA_HOME`, `CUDA_PATH`
//! and `/usr/local/cuda`. Targets come from `CLAIM_CUDA_ARCHS` (default
//! `80,90`): SASS for each, plus PTX for the first so newer GPUs can JIT
//! it. `nvidia-smi` is never asked.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    set_soname();
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=kernels");
    // PATH: a compiler installed later is found without a clean build.
    for var in ["CLAIM_NVCC", "CLAIM_CUDA_ARCHS", "CLAIM_NVCC_CCBIN", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let archs = parse_archs(env::var("CLAIM_CUDA_ARCHS").ok().as_deref());
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernel_dir = manifest.join("kernels");
    let families = kernel_families(&kernel_dir);
    match find_nvcc() {
        Ok(nvcc) => {
            let built = compile_all(&nvcc, &kernel_dir, &families, &archs, &out_dir);
            write_module(&out_dir, &arch_names(&archs), &built);
        }
        Err(why) => {
            println!(
                "cargo:warning=claim: CUDA kernels are not embedded ({why}); the CUDA back-end \
                 will report that this build has no kernels"
            );
            write_module(&out_dir, &[], &[]);
        }
    }
}

/// Gives the shared library the name a dynamic linker looks for at run
/// time: `libclaim.so.<ABI major>` on Linux (the ABI major of
/// `src/ffi/version.rs`, so the name changes exactly when a compiled
/// caller would break), `@rpath/libclaim.<major>.dylib` on macOS.
/// `bindings/install.sh` installs the file under that name with the
/// `libclaim.so` development link beside it.
fn set_soname() {
    let version_rs = "src/ffi/version.rs";
    println!("cargo:rerun-if-changed={version_rs}");
    let text = fs::read_to_string(version_rs)
        .unwrap_or_else(|e| panic!("build.rs: cannot read {version_rs}: {e}"));
    let major = abi_major(&text).unwrap_or_else(|| {
        panic!("build.rs: no `CLAIM_ABI_VERSION_MAJOR: u32 = N;` in {version_rs}")
    });
    match env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("linux") | Ok("freebsd") | Ok("netbsd") | Ok("openbsd") | Ok("android") => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libclaim.so.{major}");
        }
        Ok("macos") | Ok("ios") => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libclaim.{major}.dylib");
        }
        _ => {}
    }
}

/// The number in `pub const CLAIM_ABI_VERSION_MAJOR: u32 = N;`.
fn abi_major(version_rs: &str) -> Option<u32> {
    version_rs.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("pub const CLAIM_ABI_VERSION_MAJOR: u32 =")?;
        rest.trim().strip_suffix(';')?.trim().parse().ok()
    })
}

/// One SASS target: the number (80, 90) and an optional suffix (`a`).
#[derive(Clone, Debug)]
struct Arch(String);

/// `CLAIM_CUDA_ARCHS` as a list like `80,90` (or `80 90a`); entries are
/// digits with an optional letter suffix. A malformed list fails the build.
fn parse_archs(spec: Option<&str>) -> Vec<Arch> {
    let spec = spec
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("80,90");
    let archs: Vec<Arch> = spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.trim_start_matches("sm_").trim_start_matches("compute_");
            let digits = s.trim_end_matches(|c: char| c.is_ascii_lowercase());
            assert!(
                !digits.is_empty()
                    && digits.chars().all(|c| c.is_ascii_digit())
                    && s.len() - digits.len() <= 1,
                "CLAIM_CUDA_ARCHS: `{s}` is not an architecture like 80, 90 or 90a"
            );
            Arch(s.to_string())
        })
        .collect();
    assert!(!archs.is_empty(), "CLAIM_CUDA_ARCHS lists no architecture");
    archs
}

/// `sm_XX` for every target, then `compute_XX` (PTX) of the first.
fn arch_names(archs: &[Arch]) -> Vec<String> {
    let mut names: Vec<String> = archs.iter().map(|a| format!("sm_{}", a.0)).collect();
    names.push(format!("compute_{}", archs[0].0));
    names
}

/// The `.cu` files of `dir`, sorted: (family name, path).
fn kernel_families(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            Some((stem, p))
        })
        .collect();
    out.sort();
    out
}

/// The CUDA compiler, or why there is none.
fn find_nvcc() -> Result<PathBuf, String> {
    if let Some(explicit) = env::var_os("CLAIM_NVCC").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        assert!(
            path.is_file(),
            "CLAIM_NVCC is set to {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let candidate = dir.join("nvcc");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    for site in python_site_dirs() {
        for layout in ["nvidia/cu13/bin/nvcc", "nvidia/cuda_nvcc/bin/nvcc"] {
            let candidate = site.join(layout);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let homes = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env::var_os(v).map(PathBuf::from))
        .chain([PathBuf::from("/usr/local/cuda")]);
    for home in homes {
        let candidate = home.join("bin/nvcc");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err("no nvcc in CLAIM_NVCC, PATH, the pip packages (nvidia-cuda-nvcc) or CUDA_HOME".into())
}

/// Python's package directories (site, user site, sys.path), asked of
/// `python3` or `python`; empty when neither runs.
fn python_site_dirs() -> Vec<PathBuf> {
    const SCRIPT: &str = "import site, sys\n\
        dirs = []\n\
        try:\n    dirs += site.getsitepackages()\nexcept Exception:\n    pass\n\
        try:\n    dirs.append(site.getusersitepackages())\nexcept Exception:\n    pass\n\
        dirs += sys.path\n\
        print('\\n'.join(d for d in dirs if d))\n";
    for python in ["python3", "python"] {
        let Ok(out) = Command::new(python).arg("-c").arg(SCRIPT).output() else {
            continue;
        };
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| PathBuf::from(l.trim()))
                .filter(|p| p.is_dir())
                .collect();
        }
    }
    Vec::new()
}

/// A compiled family: name and fatbin path.
struct Built {
    family: String,
    fatbin: PathBuf,
}

/// Register use of one kernel for one target, from `ptxas -v`.
#[derive(Default, Clone, Debug)]
struct Resources {
    kernel: String,
    arch: String,
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
    smem: u32,
}

/// Families whose kernels must not spill (their speed is the point).
fn must_not_spill(family: &str) -> bool {
    family.starts_with("gemm") || family.starts_with("conv")
}

/// Compiles every family (in parallel), checks the ptxas reports and
/// writes `kernel_resources.tsv` beside the fatbins.
fn compile_all(
    nvcc: &Path,
    kernel_dir: &Path,
    families: &[(String, PathBuf)],
    archs: &[Arch],
    out_dir: &Path,
) -> Vec<Built> {
    let mut gencode = Vec::new();
    for a in archs {
        gencode.push("-gencode".to_string());
        gencode.push(format!("arch=compute_{0},code=sm_{0}", a.0));
    }
    gencode.push("-gencode".to_string());
    gencode.push(format!("arch=compute_{0},code=compute_{0}", archs[0].0));
    let ccbin = env::var_os("CLAIM_NVCC_CCBIN").filter(|v| !v.is_empty());

    let results: Vec<(String, PathBuf, std::io::Result<std::process::Output>)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = families
                .iter()
                .map(|(family, source)| {
                    let fatbin = out_dir.join(format!("{family}.fatbin"));
                    let mut cmd = Command::new(nvcc);
                    cmd.arg("-fatbin")
                        .args(&gencode)
                        .args(["-O3", "-std=c++17", "-Xptxas", "-v"])
                        .arg(format!("-I{}", kernel_dir.display()));
                    if let Some(cc) = &ccbin {
                        cmd.arg("-ccbin").arg(cc);
                    }
                    cmd.arg("-o").arg(&fatbin).arg(source);
                    let family = family.clone();
                    s.spawn(move || (family, fatbin, cmd.output()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("nvcc thread panicked"))
                .collect()
        });

    let mut table =
        String::from("family\tkernel\tarch\tregisters\tstack\tspill_stores\tspill_loads\tsmem\n");
    let mut built = Vec::new();
    let mut fatal = Vec::new();
    for (family, fatbin, output) in results {
        let output = output.unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            panic!(
                "nvcc failed on kernels/{family}.cu ({}):\n{log}",
                output.status
            );
        }
        for r in parse_ptxas(&log) {
            let _ = writeln!(
                table,
                "{family}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.kernel, r.arch, r.registers, r.stack, r.spill_stores, r.spill_loads, r.smem
            );
            if r.spill_stores + r.spill_loads > 0 {
                let msg = format!(
                    "kernel {} ({family}.cu, {}) spills: {} bytes stored, {} loaded ({} registers)",
                    r.kernel, r.arch, r.spill_stores, r.spill_loads, r.registers
                );
                if must_not_spill(&family) {
                    fatal.push(msg);
                } else {
                    println!("cargo:warning=claim: {msg}");
                }
            }
        }
        built.push(Built { family, fatbin });
    }
    fs::write(out_dir.join("kernel_resources.tsv"), table).expect("write kernel_resources.tsv");
    assert!(
        fatal.is_empty(),
        "register spills in GEMM/convolution kernels:\n{}",
        fatal.join("\n")
    );
    built
}

/// The per-kernel lines of a `ptxas -v` log.
fn parse_ptxas(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    // (kernel, arch) of the entry being compiled, and the function whose
    // properties the next line describes.
    let mut current: Option<(String, String)> = None;
    let mut props_for: Option<String> = None;
    let quoted = |line: &str, n: usize| line.split('\'').nth(2 * n + 1).map(str::to_string);
    let number_before = |line: &str, word: &str| -> u32 {
        let idx = match line.find(word) {
            Some(i) => i,
            None => return 0,
        };
        line[..idx]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in log.lines() {
        if line.contains("Compiling entry function") {
            if let (Some(k), Some(a)) = (quoted(line, 0), quoted(line, 1)) {
                out.push(Resources {
                    kernel: k.clone(),
                    arch: a.clone(),
                    ..Resources::default()
                });
                current = Some((k, a));
            }
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            props_for = Some(rest.trim().to_string());
        } else if line.contains("bytes stack frame") {
            if let (Some(f), Some((k, _)), Some(r)) = (&props_for, &current, out.last_mut()) {
                if f == k {
                    r.stack = number_before(line, "bytes stack frame");
                    r.spill_stores = number_before(line, "bytes spill stores");
                    r.spill_loads = number_before(line, "bytes spill loads");
                }
            }
            props_for = None;
        } else if line.contains("Used") && line.contains("registers") {
            if let Some(r) = out.last_mut().filter(|_| current.is_some()) {
                r.registers = number_before(line, "registers");
                r.smem = number_before(line, "bytes smem");
            }
        }
    }
    out
}

/// Writes `claim_kernels.rs`: the targets and the embedded fatbins, each
/// in 16-byte aligned storage (the driver reads fatbin headers in place).
fn write_module(out_dir: &Path, archs: &[String], built: &[Built]) {
    let mut src = String::from("// Generated by build.rs from kernels/*.cu; do not edit.\n\n");
    let _ = writeln!(
        src,
        "/// GPU targets with code in [`FATBINS`] (`sm_XX` SASS, `compute_XX` PTX).\n\
         pub const KERNEL_ARCHS: &[&str] = &[{}];\n",
        archs
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !built.is_empty() {
        src.push_str(
            "/// 16-byte aligned bytes.\n#[repr(C, align(16))]\npub struct AlignedBytes<T: ?Sized>(pub T);\n\n",
        );
    }
    let mut entries = Vec::new();
    for (i, b) in built.iter().enumerate() {
        let len = fs::metadata(&b.fatbin)
            .unwrap_or_else(|e| panic!("nvcc wrote no {}: {e}", b.fatbin.display()))
            .len();
        let path = b.fatbin.to_str().expect("OUT_DIR is valid UTF-8");
        let _ = writeln!(
            src,
            "static FATBIN_{i}: AlignedBytes<[u8; {len}]> = AlignedBytes(*include_bytes!({path:?}));"
        );
        entries.push(format!("({:?}, &FATBIN_{i}.0)", b.family));
    }
    let _ = writeln!(
        src,
        "\n/// One fatbin per kernel family (`kernels/<family>.cu`), by family name.\n\
         pub static FATBINS: &[(&str, &[u8])] = &[{}];",
        entries.join(", ")
    );
    fs::write(out_dir.join("claim_kernels.rs"), src).expect("write claim_kernels.rs");
}
