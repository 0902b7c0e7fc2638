//! A seeded mutation fuzzer for the readers of untrusted files: NIfTI (plain
//! and gzip), safetensors, `torch.save` archives (zip + pickle, with the
//! pickle also mutated inside a re-built archive so its CRC holds) and
//! nnU-Net plans / dataset JSON (through configuration, network and label
//! checks).
//!
//! Why not cargo-fuzz or cargo-afl: cargo-fuzz needs a nightly toolchain and
//! this project builds with one stable toolchain; cargo-afl's AFL++ build
//! wants an LLVM matching rustc's (the machine has LLVM 14, rustc 1.95 uses a
//! far newer one). So this is a plain in-process mutation fuzzer: seeds
//! from the committed fixtures and `tests/fixtures/fuzz/<reader>/` (kept as
//! regressions: the smallest input of each outcome of a long run, and any
//! input that once failed), byte-level mutations (bit flips, interesting
//! integers, insertions, deletions, truncation, splices), deterministic from
//! a seed. It is guided by outcomes, not coverage: a mutant whose result
//! (`Ok`, or the error's status with digits and quoted text stripped from
//! its message) was not seen before joins the corpus.
//!
//! A finding is a panic (caught, and reported with the input written under
//! `target/fuzz-findings/`), or an abort or signal (the test process dies).
//! CI runs a short pass (`FUZZ_ITERATIONS_DEFAULT` per reader). A long run,
//! writing the smallest input seen for each outcome under
//! `<dir>/<reader>/` (a candidate regression corpus for
//! `tests/fixtures/fuzz/`):
//!
//! ```text
//! CLAIM_FUZZ_ITERATIONS=2000000 CLAIM_FUZZ_SEED=7 CLAIM_FUZZ_SAVE_CORPUS=/tmp/corpus \
//!     cargo test --release --test cli fuzz -- --nocapture
//! ```

use claim::segmentation::{DatasetInfo, Plans};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Mutants per reader in a plain `cargo test` run.
const FUZZ_ITERATIONS_DEFAULT: u64 = 1500;

/// Largest input the fuzzer makes; larger mutants are cut.
const MAX_INPUT: usize = 1 << 20;

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// One to four mutations of `input`, `others` giving splice material.
fn mutate(input: &[u8], others: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = [0u8, 0xff, 0x7f, 0x80, b'{', b'"', b'-'][rng.below(7)];
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                let bytes = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                out[i..i + 4].copy_from_slice(&bytes);
            }
            3 if len >= 8 => {
                let i = rng.below(len - 7);
                let v = [u64::MAX, 1 << 40, 1 << 62, 0, i64::MAX as u64][rng.below(5)];
                out[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(i..i, fill);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            6 => out.truncate(rng.below(len + 1)),
            7 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a).min(256);
                    let i = rng.below(len + 1);
                    out.splice(i..i, other[a..b].iter().copied());
                }
            }
            8 if len > 0 => {
                // Repeat a chunk (length fields then disagree with content).
                let a = rng.below(len);
                let b = a + rng.below(len - a).min(64);
                let chunk = out[a..b].to_vec();
                out.splice(a..a, chunk);
            }
            _ => {}
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// What a reader said, with numbers and quoted text stripped so that
/// "offset 12" and "offset 13" are one outcome, and so are "key `ab`",
/// "key `ac`" and "CRC-32 mismatch (stored 0x89abcdef)" (that
/// text echoes the input; a mutant that only changes it reaches no new code).
fn outcome(result: claim::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => {
            let stripped = strip_quoted(&e.to_string());
            let words: Vec<&str> = stripped
                .split(' ')
                .filter(|w| !w.contains(|c: char| c.is_ascii_digit()))
                .collect();
            let msg: String = words.join(" ").chars().take(80).collect();
            format!("{}:{msg}", e.status_code())
        }
    }
}

/// `text` with what lies between its first and last `` ` ``, between `"`
/// quotes (Rust's `{:?}` and JSON's escapes honoured), square brackets or
/// braces (nested, their strings skipped whole) replaced by `_`.
fn strip_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let close = match c {
            '`' | '"' => c,
            '[' => ']',
            '{' => '}',
            _ => {
                out.push(c);
                continue;
            }
        };
        match c {
            // Names are quoted as-is, backticks included: the quote ends
            // at the last backtick.
            '`' => {
                let rest = chars.as_str();
                let end = rest.rfind('`').map_or(rest.len(), |i| i + 1);
                chars = rest[end..].chars();
            }
            '"' => skip_string(&mut chars),
            _ => {
                let mut depth = 1;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => skip_string(&mut chars),
                        '[' | '{' => depth += 1,
                        ']' | '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        out.extend([c, '_', close]);
    }
    out
}

/// Skips the rest of a `"`-quoted string (its opening quote already read).
fn skip_string(chars: &mut std::str::Chars) {
    while let Some(q) = chars.next() {
        match q {
            '\\' => {
                chars.next();
            }
            '"' => return,
            _ => {}
        }
    }
}

#[test]
fn outcomes_leave_out_what_echoes_the_input() {
    let format = |m: &str| outcome(Err(claim::Error::format(m)));
    let same = [
        (
            r#"label `a}b` = {"x\"}{":[1,{"y":2}]} is not an integer"#,
            r#"label `c` = {"z":3} is not an integer"#,
        ),
        (
            "zip entry \"a\\\"b\": CRC-32 mismatch (stored 0x89abcdef, data 0x0000beef)",
            "zip entry \"c\": CRC-32 mismatch (stored 0x01234567, data 0x76543210)",
        ),
        ("magic [ab, ec] at byte 12", "magic [f, ca, 0] at byte 7"),
        (
            "state dict entry `a`b` is a `x` object, not a tensor",
            "state dict entry `c` is a `y`z` object, not a tensor",
        ),
    ];
    for (a, b) in same {
        assert_eq!(format(a), format(b), "{a} | {b}");
    }
    assert_ne!(
        format("offset 1 past the end"),
        format("offset 1 too small")
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The members of a zip archive whose members are stored (as torch.save
/// writes them), from the central directory (torch.save's local headers
/// leave the sizes to a data descriptor).
fn stored_members(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32_at =
        |i: usize| u32::from_le_bytes([zip[i], zip[i + 1], zip[i + 2], zip[i + 3]]) as usize;
    let eocd = (0..zip.len() - 3)
        .rev()
        .find(|&i| zip[i..i + 4] == *b"PK\x05\x06")
        .expect("end of central directory");
    let count = u16_at(eocd + 10);
    let mut at = u32_at(eocd + 16);
    let mut members = Vec::new();
    for _ in 0..count {
        assert_eq!(zip[at..at + 4], *b"PK\x01\x02");
        assert_eq!(u16_at(at + 10), 0, "fixture members are stored");
        let size = u32_at(at + 24);
        let name_len = u16_at(at + 28);
        let skip = name_len + u16_at(at + 30) + u16_at(at + 32);
        let name = String::from_utf8_lossy(&zip[at + 46..at + 46 + name_len]).into_owned();
        let local = u32_at(at + 42);
        let start = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        members.push((name, zip[start..start + size].to_vec()));
        at += 46 + skip;
    }
    members
}

/// A zip archive of stored `members` with correct CRCs.
fn stored_zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        let mut fixed = Vec::new();
        fixed.extend_from_slice(&20u16.to_le_bytes()); // version needed
        fixed.extend_from_slice(&0u16.to_le_bytes()); // flags
        fixed.extend_from_slice(&0u16.to_le_bytes()); // stored
        fixed.extend_from_slice(&[0; 4]); // time, date
        fixed.extend_from_slice(&crc.sum().to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
        fixed.extend_from_slice(&0u16.to_le_bytes()); // extra
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&fixed);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        central.extend_from_slice(&fixed);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&[0; 4]); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let central_at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&central_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The committed regression inputs for `target` (`tests/fixtures/fuzz/<target>/`).
fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = fixtures().join("fuzz").join(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn iterations() -> u64 {
    std::env::var("CLAIM_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FUZZ_ITERATIONS_DEFAULT)
}

fn seed() -> u64 {
    std::env::var("CLAIM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c1a1)
}

/// Where `CLAIM_FUZZ_SAVE_CORPUS` asks the corpus to be written, if it does.
fn save_corpus_dir() -> Option<PathBuf> {
    std::env::var_os("CLAIM_FUZZ_SAVE_CORPUS").map(PathBuf::from)
}

/// 64-bit FNV-1a, for stable names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Writes the smallest input of each outcome to `<dir>/<name>/<hash>`, and
/// which outcome each one gave to `<dir>/<name>.outcomes` (beside the
/// folder, so that a folder copied into `tests/fixtures/fuzz/` holds inputs
/// only).
fn save_corpus(dir: &Path, name: &str, smallest: &HashMap<String, Vec<u8>>) {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
    let mut index: Vec<(usize, String, &str)> = Vec::new();
    for (outcome, input) in smallest {
        let file = format!("{:016x}", fnv1a(input));
        let path = folder.join(&file);
        std::fs::write(&path, input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        index.push((input.len(), file, outcome));
    }
    index.sort();
    let lines: String = index
        .iter()
        .map(|(len, file, outcome)| format!("{file}\t{len}\t{}\n", outcome.replace('\n', " ")))
        .collect();
    let path = dir.join(format!("{name}.outcomes"));
    std::fs::write(&path, lines).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!(
        "fuzz {name}: {} inputs written to {}",
        smallest.len(),
        folder.display()
    );
}

/// Runs `target` on every seed, then on `iterations()` mutants; panics
/// (after writing the input under target/fuzz-findings/) when it panics.
/// Keeps the smallest input seen for each outcome, written out when
/// `CLAIM_FUZZ_SAVE_CORPUS` names a folder.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) -> claim::Result<()>) {
    let mut corpus = seeds;
    corpus.extend(regressions(name));
    assert!(!corpus.is_empty(), "{name}: no seeds");
    // Outcome -> the smallest input that produced it.
    let mut smallest: HashMap<String, Vec<u8>> = HashMap::new();
    let mut keep = |outcome: String, input: &[u8]| -> bool {
        match smallest.get_mut(&outcome) {
            Some(best) => {
                if input.len() < best.len() {
                    *best = input.to_vec();
                }
                false
            }
            None => {
                smallest.insert(outcome, input.to_vec());
                true
            }
        }
    };
    let mut rng = Rng(seed() ^ fnv1a(name.as_bytes()));
    let run = |input: &[u8]| catch_unwind(AssertUnwindSafe(|| target(input)));
    for input in corpus.clone() {
        match run(&input) {
            Ok(result) => {
                keep(outcome(result), &input);
            }
            Err(_) => report(name, &input),
        }
    }
    let total = iterations();
    let start = std::time::Instant::now();
    for _ in 0..total {
        let parent = &corpus[rng.below(corpus.len())];
        let child = mutate(parent, &corpus, &mut rng);
        match run(&child) {
            Ok(result) => {
                if keep(outcome(result), &child) && corpus.len() < 4096 {
                    corpus.push(child);
                }
            }
            Err(_) => report(name, &child),
        }
    }
    println!(
        "fuzz {name}: {total} mutants in {:.1} s, {} outcomes, corpus {}",
        start.elapsed().as_secs_f64(),
        smallest.len(),
        corpus.len()
    );
    if let Some(dir) = save_corpus_dir() {
        save_corpus(&dir, name, &smallest);
    }
}

fn report(name: &str, input: &[u8]) -> ! {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}-{}", input.len()));
    let _ = std::fs::write(&path, input);
    panic!(
        "fuzz {name}: the reader panicked on {} bytes (saved to {})",
        input.len(),
        path.display()
    );
}

/// A small NIfTI-1 image, every voxel type claim reads.
fn nifti_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let geometry = claim::Geometry::with_spacing([1.5, 1.25, 8.0]);
    let labels: Vec<u8> = (0..6 * 5 * 3).map(|n| (n % 5) as u8).collect();
    let v = claim::Volume::from_vec([6, 5, 3], labels, geometry).unwrap();
    let images = [
        claim::Image::U8(v.clone()),
        claim::Image::I16(v.map(|x| i16::from(*x) - 2)),
        claim::Image::F32(v.map(|x| f32::from(*x) * 0.5)),
    ];
    for image in &images {
        seeds.push(claim::io::nifti::write_image_to_bytes(image, false).unwrap());
    }
    seeds
}

#[test]
fn fuzz_nifti_reader() {
    fuzz("nifti", nifti_seeds(), |bytes| {
        claim::io::nifti::read_image_from_bytes(bytes, "fuzz.nii").map(|_| ())
    });
}

/// The gzip container: mutants of the decompressed image, recompressed (so
/// the header parser sees them), and raw mutants of the gzip stream.
#[test]
fn fuzz_nifti_gz_reader() {
    let seeds: Vec<Vec<u8>> = nifti_seeds().iter().map(|s| gzip(s)).collect();
    fuzz("nifti_gz", seeds, |bytes| {
        claim::io::nifti::read_image_from_bytes(bytes, "fuzz.nii.gz").map(|_| ())
    });
    let plain = nifti_seeds();
    let mut rng = Rng(seed());
    for _ in 0..iterations() / 4 {
        let child = gzip(&mutate(&plain[rng.below(plain.len())], &plain, &mut rng));
        let result = catch_unwind(AssertUnwindSafe(|| {
            claim::io::nifti::read_image_from_bytes(&child, "fuzz.nii.gz").map(|_| ())
        }));
        if result.is_err() {
            report("nifti_gz_inner", &gunzip(&child));
        }
    }
}

#[test]
fn fuzz_safetensors_reader() {
    let seeds = vec![
        read("denoiser/unet3d_uncond_io.safetensors"),
        b"\x02\x00\x00\x00\x00\x00\x00\x00{}".to_vec(),
        {
            let header = br#"{"a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}}"#;
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header);
            b.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
            b
        },
    ];
    fuzz("safetensors", seeds, |bytes| {
        claim::nn::Weights::from_safetensors(bytes).map(|_| ())
    });
}

/// Reads a checkpoint and materialises its state dict, as `claim import`
/// does.
fn read_checkpoint(bytes: &[u8]) -> claim::Result<()> {
    let value = claim::io::torch::read_torch_bytes(bytes)?;
    let dict = ["state_dict", "model", "network_weights"]
        .iter()
        .find_map(|k| value.get(k))
        .unwrap_or(&value);
    claim::io::torch::state_dict_tensors(dict).map(|_| ())
}

#[test]
fn fuzz_torch_archive_reader() {
    let seeds = vec![
        read("torch/lefusion.pt"),
        read("torch/state_dict.pt"),
        read("torch/state_dict_deflate.pt"),
    ];
    fuzz("torch_zip", seeds, read_checkpoint);
}

/// The pickle inside a valid archive (CRC recomputed), so that mutants
/// reach the unpickler instead of stopping at the CRC check.
#[test]
fn fuzz_torch_pickle_reader() {
    let members = stored_members(&read("torch/lefusion.pt"));
    let pickle_at = members
        .iter()
        .position(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    let members_for = |pickle: &[u8]| {
        let mut m = members.clone();
        m[pickle_at].1 = pickle.to_vec();
        stored_zip(&m)
    };
    let rebuilt = read_checkpoint(&members_for(&members[pickle_at].1));
    assert!(rebuilt.is_ok(), "{rebuilt:?}");
    let seeds = vec![members[pickle_at].1.clone()];
    fuzz("torch_pickle", seeds, |pickle| {
        read_checkpoint(&members_for(pickle))
    });
}

/// Plans and dataset JSON through everything the loader checks before
/// weights: every configuration resolved and its network configured.
fn check_plans(plans: &[u8], dataset: &[u8]) -> claim::Result<()> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let dataset = DatasetInfo::parse(&text(dataset))?;
    let plans = Plans::parse(&text(plans))?;
    for name in plans.configuration_names() {
        let config = plans.configuration(&name)?;
        config.network_config(dataset.channel_names.len(), dataset.num_classes())?;
    }
    Ok(())
}

#[test]
fn fuzz_plans_reader() {
    let base = "nnunet/Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__";
    let dataset = read(&format!("{base}2d/dataset.json"));
    let seeds = vec![
        read(&format!("{base}2d/plans.json")),
        read(&format!("{base}3d_fullres/plans.json")),
    ];
    fuzz("plans", seeds, |plans| check_plans(plans, &dataset));
    let plans = read(&format!("{base}2d/plans.json"));
    fuzz("dataset", vec![dataset.clone()], |dataset| {
        check_plans(&plans, dataset)
    });
}
