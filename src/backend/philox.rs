//! Counter-based normal noise, bit-identical on the CPU and the GPU.
//!
//! The sampler's noise must not depend on the device (GPU.md, constraint 6):
//! the same seed gives the same noise on both, so CPU and CUDA outputs
//! differ only by fp16 rounding. A counter-based generator makes every
//! element a pure function of (seed, stream, step, item, element index), so
//! any thread on any device can draw any element.
//!
//! The spec (mirrored line for line by `kernels/philox.cu`, see
//! `kernels/README.md`):
//!
//! - **Philox4x32-10** (Salmon, Moraes, Dror and Shaw, "Parallel random
//!   numbers: as easy as 1, 2, 3", SC 2011; the Random123 reference): key
//!   `[seed low 32 bits, seed high 32 bits]`, counter
//!   `[element / 4, item, step, stream]`; element `e` is lane `e % 4`.
//! - **Box–Muller** on the lane pairs (0, 1) and (2, 3):
//!   `u1 = ((x_a >> 8) + 1)·2⁻²⁴ ∈ (0, 1]`, `u2 = (x_b >> 8)·2⁻²⁴ ∈ [0, 1)`,
//!   `r = √(−2 ln u1)`, `θ = 2π u2`, lane a = `r cos θ`, lane b = `r sin θ`.
//! - `ln`, `sin` and `cos` are this file's own f32 routines, built from
//!   `+ − × ÷ √` and bit manipulation in a fixed order (Rust never contracts
//!   `a * b + c` into an FMA; the CUDA side uses `__fmul_rn`/`__fadd_rn`,
//!   which nvcc never contracts either), so both devices round identically.
//!   Their constants are given as bit patterns, the same ones in both files.

use crate::backend::desc::NoiseKey;
use rayon::prelude::*;

/// Philox4x32 multipliers and Weyl key increments (Random123's
/// `PHILOX_M4x32_0/1`, `PHILOX_W32_0/1`).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Elements of one item addressable by the 32-bit counter word 0 (4 per
/// counter value): 2³⁴.
pub const MAX_ELEMENTS_PER_ITEM: u64 = 1 << 34;

/// Philox4x32 with 10 rounds: the four output words for `counter` and `key`.
/// Each round is `(hi0, lo0) = M0·c0`, `(hi1, lo1) = M1·c2`,
/// `c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]`, and the key is bumped by
/// the Weyl increments between rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

// Constants of the f32 routines, as bit patterns (identical in philox.cu).
/// 1/3, 1/5, 1/7, 1/9: the atanh series of `ln`.
const ONE_THIRD: f32 = f32::from_bits(0x3eaa_aaab);
const ONE_FIFTH: f32 = f32::from_bits(0x3e4c_cccd);
const ONE_SEVENTH: f32 = f32::from_bits(0x3e12_4925);
const ONE_NINTH: f32 = f32::from_bits(0x3de3_8e39);
/// ln 2 split so that `e·LN2_HI` is exact for every f32 exponent (Cephes).
const LN2_HI: f32 = f32::from_bits(0x3f31_8000);
const LN2_LO: f32 = f32::from_bits(0xb95e_8083);
/// √2 rounded to f32: the mantissa is reduced to [√½, √2).
const SQRT2: f32 = f32::from_bits(0x3fb5_04f3);
/// 2π·2⁻²⁴: one step of the 24-bit angle.
const TWO_PI_2M24: f32 = f32::from_bits(0x34c9_0fdb);
/// 2⁻²⁴.
const INV_2_24: f32 = f32::from_bits(0x3380_0000);
/// −1/3!, 1/5!, −1/7!, 1/9!: Taylor series of sin on [−π/4, π/4]
/// (truncation below 2e-9).
const S1: f32 = f32::from_bits(0xbe2a_aaab);
const S2: f32 = f32::from_bits(0x3c08_8889);
const S3: f32 = f32::from_bits(0xb950_0d01);
const S4: f32 = f32::from_bits(0x3638_ef1d);
/// −1/2!, 1/4!, −1/6!, 1/8!, −1/10!: Taylor series of cos (truncation
/// below 2e-10).
const C1: f32 = f32::from_bits(0xbf00_0000);
const C2: f32 = f32::from_bits(0x3d2a_aaab);
const C3: f32 = f32::from_bits(0xbab6_0b61);
const C4: f32 = f32::from_bits(0x37d0_0d01);
const C5: f32 = f32::from_bits(0xb493_f27e);

/// Natural logarithm of a positive, normal, finite f32 (the generator only
/// passes values in [2⁻²⁴, 1]); a few ulp accurate.
///
/// `x = 2ᵉ·m` with `m ∈ [√½, √2)`, `s = (m − 1)/(m + 1)`,
/// `ln m = 2 atanh s = 2s + 2s·s²·(1/3 + s²(1/5 + s²(1/7 + s²/9)))`
/// (|s| ≤ 0.172, truncation below 3e-9 relative), `ln x = e·ln2 + ln m`.
pub fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let mut p = ONE_NINTH;
    p = ONE_SEVENTH + z * p;
    p = ONE_FIFTH + z * p;
    p = ONE_THIRD + z * p;
    let s2 = s + s;
    let ln_m = s2 + (s2 * z) * p;
    let ef = e as f32;
    (ef * LN2_LO + ln_m) + ef * LN2_HI
}

/// `(sin x, cos x)` for `|x| ≤ π/4` by their Taylor polynomials.
fn sincos_octant(x: f32) -> (f32, f32) {
    let z = x * x;
    let mut p = S4;
    p = S3 + z * p;
    p = S2 + z * p;
    p = S1 + z * p;
    let sin = x + (x * z) * p;
    let mut q = C5;
    q = C4 + z * q;
    q = C3 + z * q;
    q = C2 + z * q;
    q = C1 + z * q;
    let cos = 1.0 + z * q;
    (sin, cos)
}

/// `(cos θ, sin θ)` for `θ = 2π·k·2⁻²⁴`, `k < 2²⁴`. The reduction is exact
/// integer arithmetic: `j` is the nearest quarter turn, `k − j·2²²` the
/// remainder (|·| ≤ 2²¹, so the angle left is within ±π/4).
pub fn cos_sin_turn24(k: u32) -> (f32, f32) {
    let k = k & 0x00ff_ffff;
    let j = (k + (1 << 21)) >> 22;
    let r = k as i32 - (j << 22) as i32;
    let (s, c) = sincos_octant(r as f32 * TWO_PI_2M24);
    match j & 3 {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    }
}

/// Two standard normals from two 32-bit words by Box–Muller.
fn box_muller(xa: u32, xb: u32) -> (f32, f32) {
    let u1 = ((xa >> 8) + 1) as f32 * INV_2_24;
    let t = -2.0 * ln_f32(u1);
    // ln u1 ≤ 0; the guard only keeps a rounding surprise from giving NaN.
    let r = if t > 0.0 { t.sqrt() } else { 0.0 };
    let (c, s) = cos_sin_turn24(xb >> 8);
    (r * c, r * s)
}

/// The four normals of one Philox counter: elements `4·block .. 4·block+4`.
pub fn normals4(key: NoiseKey, item: u32, block: u32) -> [f32; 4] {
    let x = philox4x32_10(
        [block, item, key.step, key.stream],
        [key.seed as u32, (key.seed >> 32) as u32],
    );
    let (a, b) = box_muller(x[0], x[1]);
    let (c, d) = box_muller(x[2], x[3]);
    [a, b, c, d]
}

/// The exact bits of the first 8 normals for seed 42, item 3, stream 1,
/// step 7 (elements 0..8): the GPU parity test requires `philox_normal_f32`
/// to produce these bits, and a unit test here pins the CPU to them.
pub const GOLDEN_SEED42_ITEM3_STREAM1_STEP7: [u32; 8] = [
    0xbe2c775c, 0xbf8c50a9, 0x3fdf0845, 0xbfad52d0, 0x3dd11ade, 0x3e8162ee, 0x3d9092a7, 0xbf4d1128,
];

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// Fills `out[i]` with the standard normal of element `first_element + i`
/// of `item` under `key`. The result does not depend on how the range is
/// split, so any slice of an item's noise can be drawn on its own.
///
/// # Panics
/// When the range passes [`MAX_ELEMENTS_PER_ITEM`] (64 GiB of f32 noise
/// for one item: a caller's bug, not an input).
pub fn philox_normals(key: NoiseKey, item: u32, first_element: u64, out: &mut [f32]) {
    let end = first_element.checked_add(out.len() as u64);
    assert!(
        end.is_some_and(|e| e <= MAX_ELEMENTS_PER_ITEM),
        "philox_normals: elements {first_element}..+{} pass 2^34",
        out.len()
    );
    if out.len() <= CHUNK {
        fill_seq(key, item, first_element, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| fill_seq(key, item, first_element + (i * CHUNK) as u64, chunk));
    }
}

/// [`philox_normals`] on the calling thread.
fn fill_seq(key: NoiseKey, item: u32, first_element: u64, out: &mut [f32]) {
    let mut e = first_element;
    let mut rest = out;
    while !rest.is_empty() {
        let lane = (e % 4) as usize;
        let vals = normals4(key, item, (e / 4) as u32);
        let take = (4 - lane).min(rest.len());
        let (head, tail) = rest.split_at_mut(take);
        head.copy_from_slice(&vals[lane..lane + take]);
        rest = tail;
        e += take as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's `kat_vectors`, the three `philox4x32 10` lines
    /// (counter, key → output).
    #[test]
    fn known_answers() {
        let cases = [
            (
                [0u32; 4],
                [0u32; 2],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want, "{ctr:08x?} {key:08x?}");
        }
    }

    /// The constants are the values their names say, rounded to f32.
    #[test]
    fn constants_are_what_they_claim() {
        let f = |v: f64| v as f32;
        assert_eq!(ONE_THIRD, f(1.0 / 3.0));
        assert_eq!(ONE_FIFTH, f(1.0 / 5.0));
        assert_eq!(ONE_SEVENTH, f(1.0 / 7.0));
        assert_eq!(ONE_NINTH, f(1.0 / 9.0));
        assert_eq!(LN2_LO, f(std::f64::consts::LN_2 - LN2_HI as f64));
        assert!((LN2_HI as f64 + LN2_LO as f64 - std::f64::consts::LN_2).abs() < 1e-11);
        assert_eq!(SQRT2, std::f32::consts::SQRT_2);
        assert_eq!(TWO_PI_2M24, f(std::f64::consts::TAU / 16_777_216.0));
        assert_eq!(INV_2_24, f(1.0 / 16_777_216.0));
        let fact = |n: u32| (1..=n).map(f64::from).product::<f64>();
        assert_eq!(
            [S1, S2, S3, S4],
            [-1.0 / fact(3), 1.0 / fact(5), -1.0 / fact(7), 1.0 / fact(9)].map(f)
        );
        assert_eq!(
            [C1, C2, C3, C4, C5],
            [
                -0.5,
                1.0 / fact(4),
                -1.0 / fact(6),
                1.0 / fact(8),
                -1.0 / fact(10)
            ]
            .map(f)
        );
    }

    #[test]
    fn ln_matches_std() {
        let mut worst = 0f64;
        // Every value the generator feeds in is (k + 1)·2⁻²⁴; sample them
        // densely near 1 (where ln is small) and across the range.
        let ks = (0..200_000u32)
            .chain((0..100_000u32).map(|i| i * 167))
            .chain((16_777_216 - 100_000)..16_777_216);
        for k in ks {
            let u = (k + 1) as f32 * INV_2_24;
            let want = (u as f64).ln();
            let err = (ln_f32(u) as f64 - want).abs() / want.abs().max(1.0);
            worst = worst.max(err);
        }
        assert!(worst < 4e-7, "ln relative error {worst}");
        for x in [1e-30f32, 1e-5, 0.3, 1.0, 1.5, 2.0, 10.0, 1e20] {
            let want = (x as f64).ln();
            assert!(
                (ln_f32(x) as f64 - want).abs() <= 4e-7 * want.abs().max(1.0),
                "ln {x}"
            );
        }
        assert_eq!(ln_f32(1.0), 0.0);
    }

    #[test]
    fn sin_cos_match_std() {
        let mut worst = 0f64;
        for k in (0..16_777_216u32)
            .step_by(97)
            .chain([0, 1, 1 << 21, (1 << 22) - 1, 16_777_215])
        {
            let theta = std::f64::consts::TAU * k as f64 / 16_777_216.0;
            let (c, s) = cos_sin_turn24(k);
            worst = worst
                .max((c as f64 - theta.cos()).abs())
                .max((s as f64 - theta.sin()).abs());
        }
        assert!(worst < 4e-7, "sin/cos absolute error {worst}");
        assert_eq!(cos_sin_turn24(0), (1.0, 0.0));
    }

    #[test]
    fn normals_have_standard_statistics() {
        let key = NoiseKey {
            seed: 0x1234_5678_9abc_def0,
            stream: 2,
            step: 11,
        };
        let n = 1_000_000;
        let mut v = vec![0f32; n];
        philox_normals(key, 5, 0, &mut v);
        assert!(v.iter().all(|x| x.is_finite()));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1e-3 for the mean, 1.4e-3 for the variance.
        assert!(mean.abs() < 5e-3, "mean {mean}");
        assert!((var - 1.0).abs() < 7e-3, "variance {var}");
        // Tails: P(|z| > 2) = 0.0455, P(|z| > 3) = 0.0027, P(|z| > 4) = 6.3e-5.
        for (t, p) in [
            (1.0, 0.317_310_5),
            (2.0, 0.045_500_26),
            (3.0, 0.002_699_8),
            (4.0, 6.334e-5),
        ] {
            let freq = v.iter().filter(|x| x.abs() > t).count() as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (freq - p).abs() < 5.0 * se + 1e-6,
                "P(|z|>{t}) = {freq}, want {p}"
            );
        }
        // Each lane on its own is standard too (the pairs are not mixed up).
        for lane in 0..4 {
            let l: Vec<f64> = v.iter().skip(lane).step_by(4).map(|&x| x as f64).collect();
            let m = l.iter().sum::<f64>() / l.len() as f64;
            let s = l.iter().map(|x| (x - m).powi(2)).sum::<f64>() / l.len() as f64;
            assert!(
                m.abs() < 1e-2 && (s - 1.0).abs() < 1.5e-2,
                "lane {lane}: {m} {s}"
            );
        }
    }

    #[test]
    fn draws_are_deterministic_and_independent_of_splitting() {
        let key = NoiseKey {
            seed: 7,
            stream: 0,
            step: 3,
        };
        let mut whole = vec![0f32; 40_000];
        philox_normals(key, 1, 5, &mut whole);
        let mut again = vec![0f32; 40_000];
        philox_normals(key, 1, 5, &mut again);
        assert_eq!(whole, again);
        // An unaligned sub-range drawn alone equals the same slice.
        let mut part = vec![0f32; 1_003];
        philox_normals(key, 1, 5 + 20_001, &mut part);
        assert_eq!(part[..], whole[20_001..21_004]);
        // Changing any key part or the item changes the noise.
        let mut other = vec![0f32; 64];
        for (k, item) in [
            (NoiseKey { seed: 8, ..key }, 1),
            (NoiseKey { stream: 1, ..key }, 1),
            (NoiseKey { step: 4, ..key }, 1),
            (key, 2),
        ] {
            philox_normals(k, item, 5, &mut other);
            assert_ne!(other[..], whole[..64]);
        }
    }

    #[test]
    fn golden_vector() {
        let key = NoiseKey {
            seed: 42,
            stream: 1,
            step: 7,
        };
        let mut v = [0f32; 8];
        philox_normals(key, 3, 0, &mut v);
        let bits = v.map(f32::to_bits);
        assert_eq!(bits, GOLDEN_SEED42_ITEM3_STREAM1_STEP7, "{v:?} {bits:08x?}");
    }
}
