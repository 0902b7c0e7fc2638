//! Tests of the CUDA back-end against the CPU engine. Those that need a GPU
//! print `skipped: no CUDA device (<reason>)` and return when none opens.
//!
//! Every GPU test runs on its own handle with output poisoning on (each
//! buffer handed out is NaN-filled first), so an element a kernel fails to
//! write shows up as NaN. Inputs are random, never zeros; fp16 inputs are
//! rounded to f16 before the CPU sees them, so a comparison measures the
//! kernel's error, not the input's rounding.

use super::{CudaDevice, CudaStorage};
use crate::backend::cpu::{CpuDevice, CpuStorage};
use crate::backend::desc::{
    AncestralStep, AttentionDesc, AxisDesc, BinaryOp, BroadcastDesc, Conv3dGeometry, ConvGeometry,
    KnownBlend, LinearAttentionDesc, LinearDesc, NormActivation, NormDesc, NormOperands,
    OptimizerRule, OptimizerStep, UnaryOp, WindowSumDesc,
};
use crate::backend::{BackendDevice, BackendStorage, NoiseKey};
use crate::nn::DType;
use crate::{Error, Result};

/// A fresh handle on the first GPU with poisoned outputs, or `None` after
/// printing why the test is skipped.
fn gpu() -> Option<CudaDevice> {
    let dev = CudaDevice::open(0).and_then(|d| d.with_new_stream());
    match dev {
        Ok(d) => {
            d.poison_outputs(true);
            Some(d)
        }
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// `n` random values: normal × `scale` + `shift`, never exactly zero.
fn random(n: usize, seed: u64, scale: f32, shift: f32) -> Vec<f32> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..n)
        .map(|_| {
            let v = rng.normal() as f32 * scale + shift;
            if v == 0.0 {
                1e-3
            } else {
                v
            }
        })
        .collect()
}

/// Rounds values to what a storage of `dtype` holds.
fn rounded(data: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => data.to_vec(),
        DType::F16 => data
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
    }
}

/// The same values on the GPU (as `dtype`) and on the CPU (rounded alike).
fn pair(dev: &CudaDevice, data: &[f32], dtype: DType) -> Result<(CudaStorage, CpuStorage)> {
    Ok((
        dev.storage_from_f32(data, dtype)?,
        CpuStorage::new(rounded(data, dtype)),
    ))
}

/// ‖got − want‖ / ‖want‖, with any non-finite value in `got` (an unwritten,
/// poisoned element) counted as infinite.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    if got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        num += (*g as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Asserts the GPU result is within `tol` of the CPU's (relative L2).
fn assert_close(what: &str, got: &CudaStorage, want: &CpuStorage, tol: f64) -> Result<()> {
    let (g, w) = (got.to_host_f32()?, want.to_host_f32()?);
    let err = rel_l2(&g, &w);
    assert!(err <= tol, "{what}: relative L2 error {err:e} > {tol:e}");
    Ok(())
}

/// Asserts bit-identical results.
fn assert_exact(what: &str, got: &CudaStorage, want: &[f32]) -> Result<()> {
    let g = got.to_host_f32()?;
    assert_eq!(g.len(), want.len(), "{what}: lengths differ");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}: element {i}: {a} vs {b}");
    }
    Ok(())
}

/// Tolerance of an fp16 path (GPU.md: < 1e-2) and of an f32 one.
fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1e-2,
        DType::F32 => 1e-5,
    }
}

const DTYPES: [DType; 2] = [DType::F16, DType::F32];

#[test]
fn open_without_driver_names_the_missing_driver() {
    if super::driver::driver_present() {
        eprintln!("skipped: libcuda is present, so the no-driver message cannot be checked");
        return;
    }
    match CudaDevice::open(0) {
        Err(Error::Device(m)) => {
            assert!(m.contains("libcuda.so.1 not found"), "{m}");
            assert!(m.contains("no NVIDIA driver"), "{m}");
        }
        other => panic!("expected a device error, got {other:?}"),
    }
    let info = super::runtime_info();
    assert!(
        matches!(&info, Err(m) if m.contains("libcuda.so.1 not found")),
        "{info:?}"
    );
    // A second try answers the same from the cached probe.
    assert!(matches!(CudaDevice::open(3), Err(Error::Device(_))));
}

#[test]
fn device_reports_itself() {
    let Some(dev) = gpu() else { return };
    let (major, _) = dev.compute_capability();
    assert!(major >= 7, "{dev:?}");
    assert!(!dev.name().is_empty());
    assert_eq!(dev.ordinal(), 0);
    let info = super::runtime_info().expect("runtime info with a device");
    assert!(
        info.driver_version >= 11000 && !info.devices.is_empty(),
        "{info:?}"
    );
    assert!(!super::kernel_archs().is_empty());
    // The default handle is shared; a new stream is a new handle.
    let a = CudaDevice::open(0).unwrap();
    let b = CudaDevice::open(0).unwrap();
    assert!(a.same_stream(&b) && a.same_gpu(&dev) && !a.same_stream(&dev));
    // An ordinal past the last device names the count.
    match CudaDevice::open(1000) {
        Err(Error::Device(m)) => assert!(m.contains("visible"), "{m}"),
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[test]
fn upload_download_round_trip() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let data = random(1001, 1, 3.0, 0.0);
    let s = CudaStorage::from_host_f32(&dev, &data, DType::F32)?;
    assert_exact("f32 round trip", &s, &data)?;
    let h = CudaStorage::from_host_f32(&dev, &data, DType::F16)?;
    assert_eq!(h.byte_len(), 2002);
    assert_exact("f16 round trip", &h, &rounded(&data, DType::F16))?;
    // Casts on the device round as the host does.
    assert_exact(
        "f32→f16",
        &s.to_dtype(DType::F16)?,
        &rounded(&data, DType::F16),
    )?;
    assert_exact(
        "f16→f32",
        &h.to_dtype(DType::F32)?,
        &rounded(&data, DType::F16),
    )?;
    assert_exact(
        "f16 copy",
        &h.to_dtype(DType::F16)?,
        &rounded(&data, DType::F16),
    )?;
    let empty = CudaStorage::from_host_f32(&dev, &[], DType::F16)?;
    assert!(empty.is_empty() && empty.to_host_f32()?.is_empty());
    for dtype in DTYPES {
        let full = dev.storage_full(-2.5, 777, dtype)?;
        assert_exact("fill", &full, &[-2.5; 777])?;
    }
    Ok(())
}

#[test]
fn allocator_reuses_freed_buffers() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    dev.empty_cache();
    assert_eq!(dev.cached_bytes(), 0);
    let a = CudaStorage::from_host_f32(&dev, &random(5000, 2, 1.0, 0.0), DType::F16)?;
    let addr = a.address()?;
    drop(a);
    let cached = dev.cached_bytes();
    assert!(cached >= 10_000, "{cached}");
    // A request of another size in the same bucket (10 000 and 9 998
    // bytes both round up to 10 240) gets the same buffer back.
    let b = dev.storage_full(1.0, 4999, DType::F16)?;
    assert_eq!(b.address()?, addr);
    assert_eq!(dev.cached_bytes(), 0, "the only cached buffer was taken");
    assert_exact("reused buffer", &b, &[1.0; 4999])?;
    drop(b);
    dev.empty_cache();
    assert_eq!(dev.cached_bytes(), 0);
    Ok(())
}

#[test]
fn philox_noise_is_bit_identical_to_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let keys = [
        NoiseKey {
            seed: 42,
            stream: 1,
            step: 7,
        },
        NoiseKey {
            seed: 0,
            stream: 0,
            step: 0,
        },
        NoiseKey {
            seed: u64::MAX,
            stream: 3,
            step: 999,
        },
        NoiseKey {
            seed: 0x1234_5678_9abc_def0,
            stream: 2,
            step: 11,
        },
    ];
    for key in keys {
        for (items, per_item) in [
            (vec![3u32], 8usize),
            (vec![0, 5, 9], 1001),
            (vec![7], 65_539),
        ] {
            let got = dev.normal_noise(key, &items, per_item, DType::F32)?;
            let want = CpuDevice.normal_noise(key, &items, per_item, DType::F32)?;
            assert_exact(
                &format!("noise {key:?} items {items:?} × {per_item}"),
                &got,
                want.as_slice(),
            )?;
        }
    }
    // F16 noise is the F32 noise rounded.
    let key = keys[0];
    let h = dev.normal_noise(key, &[1, 2], 333, DType::F16)?;
    let want = CpuDevice.normal_noise(key, &[1, 2], 333, DType::F32)?;
    assert_exact("f16 noise", &h, &rounded(want.as_slice(), DType::F16))?;
    Ok(())
}

/// Softmax axes: long rows (a block each), wide columns, a single value.
const SOFTMAX_AXES: [AxisDesc; 3] = [
    AxisDesc {
        outer: 37,
        size: 300,
        inner: 1,
    },
    AxisDesc {
        outer: 2,
        size: 5,
        inner: 4096,
    },
    AxisDesc {
        outer: 3,
        size: 1,
        inner: 9,
    },
];

/// Every unary op, each with parameters where it has them.
const EVERY_UNARY_OP: [UnaryOp; 13] = [
    UnaryOp::Silu,
    UnaryOp::Gelu,
    UnaryOp::LeakyRelu(0.01),
    UnaryOp::Affine(1.5, -0.25),
    UnaryOp::Exp,
    UnaryOp::Neg,
    UnaryOp::Square,
    UnaryOp::Sqrt,
    UnaryOp::Recip,
    UnaryOp::RoundHalf,
    UnaryOp::Abs,
    UnaryOp::Ln,
    UnaryOp::IsZero,
];

/// 4099 random inputs for `op`: positive where the op needs them.
fn unary_input(op: UnaryOp) -> Vec<f32> {
    match op {
        UnaryOp::Sqrt | UnaryOp::Recip | UnaryOp::Ln => random(4099, 3, 0.3, 2.0)
            .into_iter()
            .map(f32::abs)
            .collect(),
        // Whole numbers, a third of them 0 (and −0).
        UnaryOp::IsZero | UnaryOp::Abs => random(4099, 3, 1.0, 0.0)
            .into_iter()
            .map(f32::round)
            .collect(),
        _ => random(4099, 3, 2.0, 0.0),
    }
}

#[test]
fn unary_ops_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for dtype in DTYPES {
        for op in EVERY_UNARY_OP {
            let (g, c) = pair(&dev, &unary_input(op), dtype)?;
            assert_close(
                &format!("{op:?} {dtype:?}"),
                &g.unary(op)?,
                &c.unary(op)?,
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

/// The backward kernels of training (issue 15): `g·op′(x)` for every
/// unary op, the softmax backward over rows and columns, and the sums of
/// bias and broadcast gradients (one column, wide rows, many tiles).
#[test]
fn backward_unary_softmax_and_sums_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for dtype in DTYPES {
        let (gg, cg) = pair(&dev, &random(4099, 4, 1.0, 0.0), dtype)?;
        for op in EVERY_UNARY_OP {
            let (gx, cx) = pair(&dev, &unary_input(op), dtype)?;
            assert_close(
                &format!("{op:?} backward {dtype:?}"),
                &gx.unary_backward(&gg, op)?,
                &cx.unary_backward(&cg, op)?,
                tol(dtype),
            )?;
        }
        for (i, axis) in SOFTMAX_AXES.into_iter().enumerate() {
            let n = axis.outer * axis.size * axis.inner;
            let (gl, _) = pair(&dev, &random(n, 80 + i as u64, 3.0, 0.0), dtype)?;
            let gy = gl.softmax(axis)?;
            // The CPU backward sees the GPU's (rounded) probabilities.
            let cy = CpuStorage::new(gy.to_host_f32()?);
            let (gg, cg) = pair(&dev, &random(n, 90 + i as u64, 1.0, 0.0), dtype)?;
            assert_close(
                &format!("softmax backward {axis:?} {dtype:?}"),
                &gy.softmax_backward(&gg, axis)?,
                &cy.softmax_backward(&cg, axis)?,
                tol(dtype),
            )?;
        }
        for (i, axis) in [
            // A linear layer's bias: rows summed per output feature.
            AxisDesc {
                outer: 1,
                size: 5000,
                inner: 64,
            },
            // A convolution's spatial sum, then its batch sum.
            AxisDesc {
                outer: 96,
                size: 4096,
                inner: 1,
            },
            AxisDesc {
                outer: 1,
                size: 3,
                inner: 32,
            },
            // Broadcast gradients: many inner tiles, the last one partial.
            AxisDesc {
                outer: 3,
                size: 7,
                inner: 70_001,
            },
            // Rows (a block each) with fewer values than threads.
            AxisDesc {
                outer: 5,
                size: 3,
                inner: 1,
            },
            AxisDesc {
                outer: 4,
                size: 0,
                inner: 5,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let n = axis.outer * axis.size * axis.inner;
            let (gx, cx) = pair(&dev, &random(n.max(1), 100 + i as u64, 1.0, 0.5), dtype)?;
            let (gx, cx) = if n == 0 {
                (
                    dev.storage_full(0.0, 0, dtype)?,
                    CpuStorage::new(Vec::new()),
                )
            } else {
                (gx, cx)
            };
            let got = gx.reduce_sum(axis)?;
            assert_eq!(got.len(), axis.outer * axis.inner, "{axis:?}");
            assert_close(
                &format!("reduce_sum {axis:?} {dtype:?}"),
                &got,
                &cx.reduce_sum(axis)?,
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

#[test]
fn binary_ops_broadcast_like_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let cases: [(&[usize], &[usize], &[usize]); 4] = [
        (&[2, 3, 4, 5], &[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[1, 3, 1, 5], &[2, 3, 4, 5]),
        (&[2, 1, 4, 1], &[1, 3, 1, 5], &[2, 3, 4, 5]),
        (&[7, 1], &[1, 1], &[7, 1]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    for dtype in DTYPES {
        for (i, (l, r, o)) in cases.iter().enumerate() {
            let desc = BroadcastDesc {
                lhs: l.to_vec(),
                rhs: r.to_vec(),
                out: o.to_vec(),
            };
            let a = random(l.iter().product(), 10 + i as u64, 1.0, 0.0);
            // Away from zero, for the division.
            let b = random(r.iter().product(), 20 + i as u64, 0.2, 1.5);
            let (ga, ca) = pair(&dev, &a, dtype)?;
            let (gb, cb) = pair(&dev, &b, dtype)?;
            for op in ops {
                assert_close(
                    &format!("{op:?} {l:?}·{r:?} {dtype:?}"),
                    &ga.binary(&gb, op, &desc)?,
                    &ca.binary(&cb, op, &desc)?,
                    tol(dtype),
                )?;
            }
        }
        let a = random(3000, 30, 1.0, 0.0);
        let b = random(3000, 31, 1.0, 0.0);
        let (ga, ca) = pair(&dev, &a, dtype)?;
        let (gb, cb) = pair(&dev, &b, dtype)?;
        assert_close(
            &format!("lincomb {dtype:?}"),
            &ga.lincomb(0.7, &gb, -1.3)?,
            &ca.lincomb(0.7, &cb, -1.3)?,
            tol(dtype),
        )?;
    }
    // The sampler's f32 lincomb is bit-identical to the CPU's.
    let a = random(3000, 32, 1.0, 0.0);
    let b = random(3000, 33, 1.0, 0.0);
    let (ga, ca) = pair(&dev, &a, DType::F32)?;
    let (gb, cb) = pair(&dev, &b, DType::F32)?;
    let want = ca.lincomb(0.9, &cb, 0.43)?;
    assert_exact("f32 lincomb", &ga.lincomb(0.9, &gb, 0.43)?, want.as_slice())?;
    Ok(())
}

#[test]
fn layout_ops_move_bits_like_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let shape = [2usize, 3, 4, 5];
    let n: usize = shape.iter().product();
    for dtype in DTYPES {
        let data = random(n, 40, 1.0, 0.0);
        let (g, c) = pair(&dev, &data, dtype)?;
        for perm in [[0usize, 2, 3, 1], [3, 2, 1, 0], [0, 1, 3, 2], [1, 0, 2, 3]] {
            let want = c.permute(&shape, &perm)?;
            assert_exact(
                &format!("permute {perm:?}"),
                &g.permute(&shape, &perm)?,
                want.as_slice(),
            )?;
        }
        for axes in [&[1usize, 3][..], &[0], &[2, 2], &[0, 1, 2, 3]] {
            let want = c.flip(&shape, axes)?;
            assert_exact(
                &format!("flip {axes:?}"),
                &g.flip(&shape, axes)?,
                want.as_slice(),
            )?;
        }
        let axis = AxisDesc {
            outer: 6,
            size: 4,
            inner: 5,
        };
        for (start, len) in [(0, 4), (1, 2), (3, 1)] {
            let want = c.narrow(axis, start, len)?;
            assert_exact("narrow", &g.narrow(axis, start, len)?, want.as_slice())?;
        }
        // Concatenation of three parts along a middle axis.
        let sizes = [2usize, 5, 1];
        let (outer, inner) = (3, 7);
        let parts: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| random(outer * s * inner, 50 + i as u64, 1.0, 0.0))
            .collect();
        let mut gp = Vec::new();
        let mut cp = Vec::new();
        for p in &parts {
            let (g, c) = pair(&dev, p, dtype)?;
            gp.push(g);
            cp.push(c);
        }
        let want = CpuStorage::cat(&cp.iter().collect::<Vec<_>>(), outer, &sizes, inner)?;
        let got = CudaStorage::cat(&gp.iter().collect::<Vec<_>>(), outer, &sizes, inner)?;
        assert_exact("cat", &got, want.as_slice())?;
        // Rows of an embedding table.
        let table = random(10 * 6, 60, 1.0, 0.0);
        let (gt, ct) = pair(&dev, &table, dtype)?;
        let ids = [3usize, 0, 9, 3, 7];
        let want = ct.index_rows(6, &ids)?;
        assert_exact("index_rows", &gt.index_rows(6, &ids)?, want.as_slice())?;
        assert!(matches!(
            gt.index_rows(6, &[10]),
            Err(Error::InvalidArgument(_))
        ));
    }
    Ok(())
}

#[test]
fn softmax_matches_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for dtype in DTYPES {
        for axis in SOFTMAX_AXES {
            let n = axis.outer * axis.size * axis.inner;
            let (g, c) = pair(&dev, &random(n, 70, 3.0, 0.0), dtype)?;
            assert_close(
                &format!("softmax {axis:?} {dtype:?}"),
                &g.softmax(axis)?,
                &c.softmax(axis)?,
                tol(dtype),
            )?;
        }
    }
    Ok(())
}

/// Runs one fused normalisation on both devices and compares.
fn check_norm(
    dev: &CudaDevice,
    d: NormDesc,
    weight: bool,
    film: bool,
    residual: bool,
) -> Result<()> {
    let n = d.batch * d.channels * d.spatial;
    let dtype = DType::F16;
    let (x, cx) = pair(dev, &random(n, 80, 2.0, 0.5), dtype)?;
    let (w, cw) = pair(dev, &random(d.channels, 81, 0.3, 1.0), dtype)?;
    let (b, cb) = pair(dev, &random(d.channels, 82, 0.3, 0.0), dtype)?;
    let (sc, csc) = pair(dev, &random(d.batch * d.channels, 83, 0.2, 0.0), dtype)?;
    let (sh, csh) = pair(dev, &random(d.batch * d.channels, 84, 0.2, 0.0), dtype)?;
    let (r, cr) = pair(dev, &random(n, 85, 1.0, 0.0), dtype)?;
    let got = x.group_norm(
        &d,
        NormOperands {
            weight: weight.then_some(&w),
            bias: weight.then_some(&b),
            scale_shift: film.then_some((&sc, &sh)),
            residual: residual.then_some(&r),
        },
    )?;
    let want = cx.group_norm(
        &d,
        NormOperands {
            weight: weight.then_some(&cw),
            bias: weight.then_some(&cb),
            scale_shift: film.then_some((&csc, &csh)),
            residual: residual.then_some(&cr),
        },
    )?;
    assert_close(&format!("group_norm {d:?}"), &got, &want, 1e-2)
}

#[test]
fn fused_norms_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let base = NormDesc {
        batch: 2,
        channels: 16,
        spatial: 300,
        groups: 8,
        eps: 1e-5,
        activation: NormActivation::Identity,
    };
    check_norm(&dev, base, true, false, false)?;
    check_norm(&dev, base, false, false, false)?;
    let silu = NormDesc {
        activation: NormActivation::Silu,
        ..base
    };
    check_norm(&dev, silu, true, true, true)?;
    check_norm(&dev, silu, true, false, false)?;
    // InstanceNorm + LeakyReLU (nnU-Net).
    let instance = NormDesc {
        groups: 16,
        activation: NormActivation::LeakyRelu(0.01),
        ..base
    };
    check_norm(&dev, instance, true, false, false)?;
    // Few, large groups: the two-pass (chunked) design.
    let large = NormDesc {
        batch: 1,
        channels: 4,
        spatial: 40_000,
        groups: 2,
        eps: 1e-5,
        activation: NormActivation::Silu,
    };
    assert!(super::kernels::norm_chunks(2, 80_000) > 1);
    check_norm(&dev, large, true, true, true)?;
    // Channel LayerNorm.
    let (b, c, s) = (2, 24, 333);
    let (x, cx) = pair(&dev, &random(b * c * s, 90, 1.5, 0.3), DType::F16)?;
    let (g, cg) = pair(&dev, &random(c, 91, 0.2, 1.0), DType::F16)?;
    assert_close(
        "layer_norm_channels",
        &x.layer_norm_channels(&g, b, c, s, 1e-5)?,
        &cx.layer_norm_channels(&cg, b, c, s, 1e-5)?,
        1e-2,
    )?;
    // F32 storage is refused, not silently narrowed.
    let x32 = dev.storage_from_f32(&random(b * c * s, 92, 1.0, 0.0), DType::F32)?;
    let nd = NormDesc {
        batch: b,
        channels: c,
        spatial: s,
        groups: 4,
        eps: 1e-5,
        activation: NormActivation::Identity,
    };
    let none = NormOperands {
        weight: None,
        bias: None,
        scale_shift: None,
        residual: None,
    };
    assert!(matches!(
        x32.group_norm(&nd, none),
        Err(Error::Unsupported(_))
    ));
    Ok(())
}

#[test]
fn products_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let dtype = DType::F16;
    // Linear layers: odd sizes (64×64 tiles, guarded edges) and large ones
    // (128×128 tiles).
    for (rows, n_in, n_out, bias) in [(37, 70, 45, true), (3, 8, 5, false), (1024, 256, 512, true)]
    {
        let d = LinearDesc { rows, n_in, n_out };
        let (x, cx) = pair(&dev, &random(rows * n_in, 100, 1.0, 0.0), dtype)?;
        let (w, cw) = pair(&dev, &random(n_out * n_in, 101, 0.1, 0.0), dtype)?;
        let (b, cb) = pair(&dev, &random(n_out, 102, 0.5, 0.0), dtype)?;
        assert_close(
            &format!("linear {d:?}"),
            &x.linear(&w, bias.then_some(&b), &d)?,
            &cx.linear(&cw, bias.then_some(&cb), &d)?,
            1e-2,
        )?;
    }
    // 1×1 convolutions with bias and residual.
    let g = ConvGeometry {
        batch: 2,
        c_in: 24,
        c_out: 40,
        frames: 3,
        h: 9,
        w: 11,
        kh: 1,
        kw: 1,
        stride: (1, 1),
        pad: (0, 0),
    };
    let s = g.frames * g.h * g.w;
    let (x, cx) = pair(&dev, &random(g.batch * g.c_in * s, 110, 1.0, 0.0), dtype)?;
    let (w, cw) = pair(&dev, &random(g.c_out * g.c_in, 111, 0.2, 0.0), dtype)?;
    let (b, cb) = pair(&dev, &random(g.c_out, 112, 0.5, 0.0), dtype)?;
    let (r, cr) = pair(&dev, &random(g.batch * g.c_out * s, 113, 1.0, 0.0), dtype)?;
    assert_close(
        "conv2d 1×1",
        &x.conv2d(&w, Some(&b), Some(&r), &g)?,
        &cx.conv2d(&cw, Some(&cb), Some(&cr), &g)?,
        1e-2,
    )?;
    assert_close(
        "conv2d 1×1, no bias",
        &x.conv2d(&w, None, None, &g)?,
        &cx.conv2d(&cw, None, None, &g)?,
        1e-2,
    )?;
    let g3 = Conv3dGeometry {
        batch: 2,
        c_in: 24,
        c_out: 40,
        input: [3, 9, 11],
        kernel: [1, 1, 1],
        stride: [1, 1, 1],
        pad: [0, 0, 0],
    };
    assert_close(
        "conv3d 1×1×1",
        &x.conv3d(&w, Some(&b), &g3)?,
        &cx.conv3d(&cw, Some(&cb), &g3)?,
        1e-2,
    )?;
    Ok(())
}

/// The implicit-GEMM convolutions: the denoiser's kernels (7×7 init, 3×3
/// blocks, 4×4 stride-2 down-sampling, 4×4 stride-2 transposed
/// up-sampling) plus odd sizes, channel counts that are not multiples of 8
/// (scalar weight loads) and ragged tile edges, with bias and residual.
#[test]
fn convolutions_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let dtype = DType::F16;
    let base = ConvGeometry {
        batch: 2,
        c_in: 8,
        c_out: 16,
        frames: 3,
        h: 12,
        w: 10,
        kh: 3,
        kw: 3,
        stride: (1, 1),
        pad: (1, 1),
    };
    let cases = [
        ("3×3 pad 1", base),
        (
            "7×7 pad 3, one input channel",
            ConvGeometry {
                c_in: 1,
                c_out: 24,
                kh: 7,
                kw: 7,
                pad: (3, 3),
                ..base
            },
        ),
        (
            "4×4 stride 2 pad 1",
            ConvGeometry {
                kh: 4,
                kw: 4,
                stride: (2, 2),
                ..base
            },
        ),
        (
            "3×5 stride (2, 1) pad (0, 2), odd channels",
            ConvGeometry {
                c_in: 5,
                c_out: 7,
                h: 13,
                w: 9,
                kh: 3,
                kw: 5,
                stride: (2, 1),
                pad: (0, 2),
                ..base
            },
        ),
        (
            "3×3, 72 → 144 channels at 36×36 (128×128 tiles)",
            ConvGeometry {
                batch: 4,
                c_in: 72,
                c_out: 144,
                frames: 1,
                h: 36,
                w: 36,
                ..base
            },
        ),
    ];
    for (i, (name, g)) in cases.into_iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let (ho, wo) = g.conv_out().expect("valid case");
        let n_in = g.batch * g.c_in * g.frames * g.h * g.w;
        let n_out = g.batch * g.c_out * g.frames * ho * wo;
        let (x, cx) = pair(&dev, &random(n_in, seed, 1.0, 0.0), dtype)?;
        let fan_in = (g.c_in * g.kh * g.kw) as f32;
        let (w, cw) = pair(
            &dev,
            &random(
                g.c_out * g.c_in * g.kh * g.kw,
                seed + 1,
                fan_in.powf(-0.5),
                0.0,
            ),
            dtype,
        )?;
        let (b, cb) = pair(&dev, &random(g.c_out, seed + 2, 0.5, 0.0), dtype)?;
        let (r, cr) = pair(&dev, &random(n_out, seed + 3, 1.0, 0.0), dtype)?;
        assert_close(
            &format!("conv2d {name}"),
            &x.conv2d(&w, Some(&b), None, &g)?,
            &cx.conv2d(&cw, Some(&cb), None, &g)?,
            1e-2,
        )?;
        assert_close(
            &format!("conv2d {name} + residual, no bias"),
            &x.conv2d(&w, None, Some(&r), &g)?,
            &cx.conv2d(&cw, None, Some(&cr), &g)?,
            1e-2,
        )?;
    }
    // Transposed: the up-sampling (4×4, stride 2, pad 1) and an odd one.
    let up = ConvGeometry {
        kh: 4,
        kw: 4,
        stride: (2, 2),
        ..base
    };
    let odd = ConvGeometry {
        c_in: 5,
        c_out: 3,
        h: 7,
        w: 6,
        kh: 3,
        kw: 2,
        stride: (2, 3),
        pad: (1, 0),
        ..base
    };
    let wide = ConvGeometry {
        batch: 2,
        c_in: 144,
        c_out: 144,
        frames: 1,
        h: 18,
        w: 18,
        ..up
    };
    for (i, (name, g)) in [
        ("4×4 stride 2 pad 1", up),
        ("3×2 stride (2, 3) pad (1, 0)", odd),
        ("4×4, 144 channels at 18×18", wide),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 400 + 10 * i as u64;
        let n_in = g.batch * g.c_in * g.frames * g.h * g.w;
        let (x, cx) = pair(&dev, &random(n_in, seed, 1.0, 0.0), dtype)?;
        let fan_in = (g.c_in * g.kh * g.kw) as f32;
        let (w, cw) = pair(
            &dev,
            &random(
                g.c_in * g.c_out * g.kh * g.kw,
                seed + 1,
                fan_in.powf(-0.5),
                0.0,
            ),
            dtype,
        )?;
        let (b, cb) = pair(&dev, &random(g.c_out, seed + 2, 0.5, 0.0), dtype)?;
        assert_close(
            &format!("conv_transpose2d {name}"),
            &x.conv_transpose2d(&w, Some(&b), &g)?,
            &cx.conv_transpose2d(&cw, Some(&cb), &g)?,
            1e-2,
        )?;
        assert_close(
            &format!("conv_transpose2d {name}, no bias"),
            &x.conv_transpose2d(&w, None, &g)?,
            &cx.conv_transpose2d(&cw, None, &g)?,
            1e-2,
        )?;
    }
    Ok(())
}

/// Input, weight (C_in·C_out·taps values, either layout) and bias of a
/// 3-D convolution of `g`, on the GPU (F16) and the CPU, from `seed`.
fn conv3d_operands(
    dev: &CudaDevice,
    g: &Conv3dGeometry,
    seed: u64,
) -> Result<[(CudaStorage, CpuStorage); 3]> {
    let taps: usize = g.kernel.iter().product();
    let n_in = g.batch * g.c_in * g.input.iter().product::<usize>();
    let scale = ((g.c_in * taps) as f32).powf(-0.5);
    Ok([
        pair(dev, &random(n_in, seed, 1.0, 0.0), DType::F16)?,
        pair(
            dev,
            &random(g.c_in * g.c_out * taps, seed + 1, scale, 0.0),
            DType::F16,
        )?,
        pair(dev, &random(g.c_out, seed + 2, 0.5, 0.0), DType::F16)?,
    ])
}

/// Full 3-D convolutions (nnU-Net's 3d_fullres stages: 3×3×3 with stride 1
/// and 2, anisotropic 1×3×3 first stages, 2×2×2 and 1×2×2 transposed
/// up-sampling) plus odd kernels, strides and paddings, against the CPU.
#[test]
fn convolutions_3d_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let base = Conv3dGeometry {
        batch: 2,
        c_in: 8,
        c_out: 16,
        input: [5, 9, 10],
        kernel: [3, 3, 3],
        stride: [1, 1, 1],
        pad: [1, 1, 1],
    };
    let forward = [
        ("3×3×3 pad 1", base),
        (
            "3×3×3 stride 2 pad 1",
            Conv3dGeometry {
                stride: [2, 2, 2],
                ..base
            },
        ),
        (
            "1×3×3 stride (1, 2, 2) pad (0, 1, 1), one input channel",
            Conv3dGeometry {
                c_in: 1,
                kernel: [1, 3, 3],
                stride: [1, 2, 2],
                pad: [0, 1, 1],
                ..base
            },
        ),
        (
            "3×2×4 stride (2, 3, 1) pad (1, 0, 2), odd channels",
            Conv3dGeometry {
                c_in: 5,
                c_out: 7,
                input: [6, 10, 7],
                kernel: [3, 2, 4],
                stride: [2, 3, 1],
                pad: [1, 0, 2],
                ..base
            },
        ),
        (
            "3×3×3, 32 → 32 channels at 16×32×32 (128×128 tiles)",
            Conv3dGeometry {
                c_in: 32,
                c_out: 32,
                input: [16, 32, 32],
                ..base
            },
        ),
    ];
    for (i, (name, g)) in forward.into_iter().enumerate() {
        let [(x, cx), (w, cw), (b, cb)] = conv3d_operands(&dev, &g, 500 + 10 * i as u64)?;
        assert_close(
            &format!("conv3d {name}"),
            &x.conv3d(&w, Some(&b), &g)?,
            &cx.conv3d(&cw, Some(&cb), &g)?,
            1e-2,
        )?;
        assert_close(
            &format!("conv3d {name}, no bias"),
            &x.conv3d(&w, None, &g)?,
            &cx.conv3d(&cw, None, &g)?,
            1e-2,
        )?;
    }
    let up = Conv3dGeometry {
        c_in: 16,
        c_out: 8,
        input: [3, 5, 4],
        kernel: [2, 2, 2],
        stride: [2, 2, 2],
        pad: [0, 0, 0],
        ..base
    };
    let transposed = [
        ("2×2×2 stride 2", up),
        (
            "1×2×2 stride (1, 2, 2)",
            Conv3dGeometry {
                kernel: [1, 2, 2],
                stride: [1, 2, 2],
                ..up
            },
        ),
        (
            "3×3×3 stride 2 pad 1, odd channels",
            Conv3dGeometry {
                c_in: 3,
                c_out: 5,
                kernel: [3, 3, 3],
                pad: [1, 1, 1],
                ..up
            },
        ),
        (
            "2×2×2, 64 → 32 channels at 8×16×16",
            Conv3dGeometry {
                c_in: 64,
                c_out: 32,
                input: [8, 16, 16],
                ..up
            },
        ),
    ];
    for (i, (name, g)) in transposed.into_iter().enumerate() {
        let [(x, cx), (w, cw), (b, cb)] = conv3d_operands(&dev, &g, 600 + 10 * i as u64)?;
        assert_close(
            &format!("conv_transpose3d {name}"),
            &x.conv_transpose3d(&w, Some(&b), &g)?,
            &cx.conv_transpose3d(&cw, Some(&cb), &g)?,
            1e-2,
        )?;
    }
    Ok(())
}

/// Convolution weight gradients (the split-K implicit GEMM, then the
/// ordered sum of its fp32 planes) against the CPU's column kernel:
/// nnU-Net's 2-D first layer (one input channel, batch 12 of 256², a
/// single tile whose reduction the splits share), 2-D and 3-D stages of
/// several tiles, stride 2 on odd sizes, positions that are not a multiple
/// of 8 (A tiles loaded without 16-byte copies), and transposed
/// convolutions through their adjoint geometry.
#[test]
fn convolution_weight_gradients_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let frame = |batch, c_in, c_out, h: usize, w: usize, k: usize, stride: usize| Conv3dGeometry {
        batch,
        c_in,
        c_out,
        input: [1, h, w],
        kernel: [1, k, k],
        stride: [1, stride, stride],
        pad: [0, k / 2, k / 2],
    };
    let cube = |batch, c_in, c_out, n: usize, stride: usize| Conv3dGeometry {
        batch,
        c_in,
        c_out,
        input: [n, n, n],
        kernel: [3, 3, 3],
        stride: [stride; 3],
        pad: [1, 1, 1],
    };
    let forward = [
        (
            "2-D first layer, 1 → 32 at 256², batch 12",
            frame(12, 1, 32, 256, 256, 3, 1),
        ),
        (
            "2-D 32 → 32 at 128², batch 4",
            frame(4, 32, 32, 128, 128, 3, 1),
        ),
        (
            "2-D 32 → 64 stride 2 at 127×129",
            frame(2, 32, 64, 127, 129, 3, 2),
        ),
        (
            "2-D 3×3 at 13×11 (positions not a multiple of 8)",
            frame(3, 5, 7, 13, 11, 3, 1),
        ),
        ("2-D 1×1, 64 → 32 at 48²", frame(2, 64, 32, 48, 48, 1, 1)),
        (
            "per-frame 3×3, 3 frames of 40², 24 → 24",
            Conv3dGeometry {
                input: [3, 40, 40],
                ..frame(2, 24, 24, 40, 40, 3, 1)
            },
        ),
        ("3-D 3×3×3, 32 → 32 at 32³, batch 2", cube(2, 32, 32, 32, 1)),
        ("3-D 3×3×3 stride 2 at 9³, 4 → 6", cube(2, 4, 6, 9, 2)),
        (
            "3-D 3×3×3, 128 → 128 at 8³ (many tiles, few splits)",
            cube(2, 128, 128, 8, 1),
        ),
    ];
    for (i, (name, g)) in forward.into_iter().enumerate() {
        let out = g.conv_out().expect("a valid test geometry");
        let n_in = g.batch * g.c_in * g.input.iter().product::<usize>();
        let n_out = g.batch * g.c_out * out.iter().product::<usize>();
        let (x, cx) = pair(&dev, &random(n_in, 700 + i as u64, 1.0, 0.0), DType::F16)?;
        let (gy, cgy) = pair(&dev, &random(n_out, 750 + i as u64, 1.0, 0.0), DType::F16)?;
        let got = x.conv3d_weight_grad(&gy, &g)?;
        assert_close(
            &format!("weight gradient {name}"),
            &got,
            &cx.conv3d_weight_grad(&cgy, &g)?,
            1e-2,
        )?;
        // The splits are added in a fixed order: a second run is identical.
        let again = x.conv3d_weight_grad(&gy, &g)?;
        assert_exact(
            &format!("weight gradient {name}, run twice"),
            &again,
            &got.to_host_f32()?,
        )?;
    }
    let transposed = [
        (
            "transposed 2×2×2 stride 2, 64 → 32 at 8×16×16",
            Conv3dGeometry {
                batch: 2,
                c_in: 64,
                c_out: 32,
                input: [8, 16, 16],
                kernel: [2, 2, 2],
                stride: [2, 2, 2],
                pad: [0, 0, 0],
            },
        ),
        (
            "transposed per-frame 4×4 stride 2 pad 1, 16 → 8 at 3×20×20",
            Conv3dGeometry {
                batch: 2,
                c_in: 16,
                c_out: 8,
                input: [3, 20, 20],
                kernel: [1, 4, 4],
                stride: [1, 2, 2],
                pad: [0, 1, 1],
            },
        ),
    ];
    for (i, (name, g)) in transposed.into_iter().enumerate() {
        let out = g.transposed_out().expect("a valid test geometry");
        let adjoint = g.adjoint_of_transposed(out);
        let n_in = g.batch * g.c_in * g.input.iter().product::<usize>();
        let n_out = g.batch * g.c_out * out.iter().product::<usize>();
        let (x, cx) = pair(&dev, &random(n_in, 800 + i as u64, 1.0, 0.0), DType::F16)?;
        let (gy, cgy) = pair(&dev, &random(n_out, 850 + i as u64, 1.0, 0.0), DType::F16)?;
        assert_close(
            &format!("weight gradient {name}"),
            &gy.conv3d_weight_grad(&x, &adjoint)?,
            &cgy.conv3d_weight_grad(&cx, &adjoint)?,
            1e-2,
        )?;
    }
    // Refusals: a wrong output-gradient length and f32 storage.
    let g = frame(1, 2, 3, 5, 5, 3, 1);
    let (x, _) = pair(&dev, &random(50, 1, 1.0, 0.0), DType::F16)?;
    let (short, _) = pair(&dev, &random(74, 2, 1.0, 0.0), DType::F16)?;
    assert!(x.conv3d_weight_grad(&short, &g).is_err());
    let (x32, _) = pair(&dev, &random(50, 3, 1.0, 0.0), DType::F32)?;
    let (gy32, _) = pair(&dev, &random(75, 4, 1.0, 0.0), DType::F32)?;
    assert!(matches!(
        x32.conv3d_weight_grad(&gy32, &g),
        Err(Error::Unsupported(_))
    ));
    Ok(())
}

/// Linear attention, softmax attention with and without a bias, and the
/// rotary embedding, at the denoiser's sizes and odd ones.
#[test]
fn attention_matches_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let dtype = DType::F16;
    for (i, &(batch, frames, positions, heads, head_dim)) in [
        (2, 3, 37, 2, 8),
        (1, 1, 5184, 4, 32),
        (2, 2, 81, 4, 32),
        (1, 2, 50, 1, 64),
        (1, 1, 9, 3, 16),
    ]
    .iter()
    .enumerate()
    {
        let d = LinearAttentionDesc {
            batch,
            frames,
            positions,
            heads,
            head_dim,
        };
        let n = batch * 3 * heads * head_dim * frames * positions;
        let (x, cx) = pair(&dev, &random(n, 500 + i as u64, 1.0, 0.0), dtype)?;
        assert_close(
            &format!("linear_attention {d:?}"),
            &x.linear_attention(&d)?,
            &cx.linear_attention(&d)?,
            1e-2,
        )?;
    }
    for (i, &(groups, tokens, head_dim, heads, biased)) in [
        (8 * 50, 10, 32, 8, true),
        (4 * 3, 81, 32, 4, false),
        (6, 7, 40, 2, true),
        (5, 1, 16, 1, true),
        (3, 33, 128, 3, false),
    ]
    .iter()
    .enumerate()
    {
        let d = AttentionDesc {
            groups,
            tokens,
            head_dim,
            heads,
        };
        let n = groups * tokens * head_dim;
        let seed = 600 + 10 * i as u64;
        let (q, cq) = pair(&dev, &random(n, seed, 0.3, 0.0), dtype)?;
        let (k, ck) = pair(&dev, &random(n, seed + 1, 1.0, 0.0), dtype)?;
        let (v, cv) = pair(&dev, &random(n, seed + 2, 1.0, 0.0), dtype)?;
        let (b, cb) = pair(
            &dev,
            &random(heads * tokens * tokens, seed + 3, 1.0, 0.0),
            dtype,
        )?;
        assert_close(
            &format!("attention {d:?}, bias {biased}"),
            &CudaStorage::attention(&q, &k, &v, biased.then_some(&b), &d)?,
            &CpuStorage::attention(&cq, &ck, &cv, biased.then_some(&cb), &d)?,
            1e-2,
        )?;
        if biased && tokens > 1 {
            // A mask: key j hidden from query i for j < i (each row's
            // leading keys −inf, the last key always visible).
            let mut masked = random(heads * tokens * tokens, seed + 4, 1.0, 0.0);
            for (at, v) in masked.iter_mut().enumerate() {
                let (i, j) = ((at / tokens) % tokens, at % tokens);
                if j < i {
                    *v = f32::NEG_INFINITY;
                }
            }
            let (mb, cmb) = pair(&dev, &masked, dtype)?;
            assert_close(
                &format!("attention {d:?}, leading keys masked"),
                &CudaStorage::attention(&q, &k, &v, Some(&mb), &d)?,
                &CpuStorage::attention(&cq, &ck, &cv, Some(&cmb), &d)?,
                1e-2,
            )?;
        }
    }
    for (i, &(rows, tokens, head_dim)) in [(80, 10, 32), (3, 7, 6)].iter().enumerate() {
        let seed = 700 + 10 * i as u64;
        let (x, cx) = pair(
            &dev,
            &random(rows * tokens * head_dim, seed, 1.0, 0.0),
            dtype,
        )?;
        let freqs: Vec<f32> = (0..head_dim / 2)
            .map(|j| 10000f32.powf(-2.0 * j as f32 / head_dim as f32))
            .collect();
        // f32 frequencies (the models'), and f16 ones widened on the device.
        for freq_dtype in DTYPES {
            let (f, cf) = pair(&dev, &freqs, freq_dtype)?;
            assert_close(
                &format!("rotary {rows}×{tokens}×{head_dim}, {freq_dtype:?} frequencies"),
                &x.rotary(&f, tokens, head_dim)?,
                &cx.rotary(&cf, tokens, head_dim)?,
                1e-3,
            )?;
        }
    }
    Ok(())
}

#[test]
fn embedding_and_sampler_steps_match_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let t = [0.0f32, 1.0, 17.0, 999.0, 250.5];
    for dtype in DTYPES {
        let got = dev.sinusoidal_embedding(&t, 72, dtype)?;
        let want = CpuDevice.sinusoidal_embedding(&t, 72, DType::F32)?;
        assert_close(
            &format!("sinusoidal {dtype:?}"),
            &got,
            &want,
            if dtype == DType::F16 { 1e-3 } else { 1e-5 },
        )?;
    }
    // The RePaint updates are bit-identical to the CPU's in f32.
    let n = 5000;
    let f32s = |seed| pair(&dev, &random(n, seed, 1.0, 0.0), DType::F32);
    let (x, cx) = f32s(120)?;
    let (gt, cgt) = f32s(121)?;
    let (z, cz) = f32s(122)?;
    let (e, ce) = f32s(123)?;
    let mask: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let (k, ck) = pair(&dev, &mask, DType::F32)?;
    let blend = KnownBlend {
        sqrt_alpha_bar: 0.8,
        sqrt_one_minus_alpha_bar: 0.6,
    };
    let want = cx.known_blend(&cgt, &ck, &cz, blend)?;
    assert_exact(
        "known_blend",
        &x.known_blend(&gt, &k, &z, blend)?,
        want.as_slice(),
    )?;
    let step = AncestralStep {
        sqrt_recip_alpha_bar: 1.3,
        sqrt_recip_m1_alpha_bar: 0.83,
        coef_x0: 0.21,
        coef_xt: 0.77,
        sigma: 0.05,
    };
    let want = cx.ancestral_step(&ce, &cz, step)?;
    assert_exact(
        "ancestral_step",
        &x.ancestral_step(&e, &z, step)?,
        want.as_slice(),
    )?;
    // The sampler state must be F32.
    let h = x.to_dtype(DType::F16)?;
    assert!(matches!(
        h.ancestral_step(&e, &z, step),
        Err(Error::Unsupported(_))
    ));
    Ok(())
}

/// The fused optimiser updates are bit-identical to the CPU's for every
/// rule over three steps (first momentum, bias corrections, both gradient
/// factors, both weight decays), on a length that is not a multiple of the
/// block; the gradient norms' f64 sums agree to rounding, and a length
/// spanning the most partial blocks and an empty part are handled.
#[test]
fn optimizer_updates_match_the_cpu_bit_for_bit() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let n = 70_001;
    let rules = [
        OptimizerRule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled: false,
        },
        OptimizerRule::Adam {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            decoupled: true,
        },
        OptimizerRule::Sgd {
            momentum: 0.99,
            nesterov: true,
        },
        OptimizerRule::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        OptimizerRule::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
    ];
    for (r, rule) in rules.into_iter().enumerate() {
        let (mut gp, mut cp) = pair(&dev, &random(n, 900 + r as u64, 0.5, 0.0), DType::F32)?;
        let mut gs = Vec::new();
        let mut cs = Vec::new();
        for b in 0..rule.state_buffers() {
            let init = if b == 1 {
                vec![0.0; n]
            } else {
                random(n, 950 + b as u64, 0.01, 0.0)
            };
            let (g, c) = pair(&dev, &init, DType::F32)?;
            gs.push(g);
            cs.push(c);
        }
        for t in 1..=3u64 {
            let (gg, cg) = pair(&dev, &random(n, 1000 + t, 300.0, 0.0), DType::F32)?;
            let step = OptimizerStep {
                rule,
                lr: 1e-3 * t as f32,
                weight_decay: if t == 2 { 0.0 } else { 3e-5 },
                step: t,
                grad_factors: [1.0 / 1024.0, if t == 3 { 0.37 } else { 1.0 }],
            };
            let (np, ns) = gp.optimizer_update(&gg, &gs.iter().collect::<Vec<_>>(), &step)?;
            let (cp2, cs2) = cp.optimizer_update(&cg, &cs.iter().collect::<Vec<_>>(), &step)?;
            assert_exact(&format!("{rule:?} step {t}"), &np, cp2.as_slice())?;
            for (i, (g, c)) in ns.iter().zip(&cs2).enumerate() {
                assert_exact(&format!("{rule:?} step {t} state {i}"), g, c.as_slice())?;
            }
            (gp, gs, cp, cs) = (np, ns, cp2, cs2);
        }
        // The rule's state count is checked.
        assert!(gp
            .optimizer_update(
                &gp,
                &[],
                &OptimizerStep {
                    rule,
                    lr: 0.1,
                    weight_decay: 0.0,
                    step: 1,
                    grad_factors: [1.0, 1.0],
                }
            )
            .is_err());
    }
    let lengths = [1usize, 255, 4096, 4097, 3_000_000, 0, 70_001];
    let data: Vec<Vec<f32>> = lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| random(len, 1100 + i as u64, 40.0, 1.0))
        .collect();
    let pairs = data
        .iter()
        .map(|d| pair(&dev, d, DType::F32))
        .collect::<Result<Vec<_>>>()?;
    let got = CudaStorage::squared_norms(&pairs.iter().map(|p| &p.0).collect::<Vec<_>>())?;
    let want = CpuStorage::squared_norms(&pairs.iter().map(|p| &p.1).collect::<Vec<_>>())?;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs(),
            "squared norm of part {i} ({} values): {g} vs {w}",
            lengths[i]
        );
    }
    let again = CudaStorage::squared_norms(&pairs.iter().map(|p| &p.0).collect::<Vec<_>>())?;
    assert_eq!(got, again, "the device sums are deterministic");
    let (inf, _) = pair(&dev, &[1.0, f32::INFINITY, 2.0], DType::F32)?;
    assert!(CudaStorage::squared_norms(&[&inf])?[0].is_infinite());
    let half = pairs[0].0.to_dtype(DType::F16)?;
    assert!(CudaStorage::squared_norms(&[&half]).is_err(), "f32 only");
    Ok(())
}

#[test]
fn mismatched_operands_are_refused_and_streams_interoperate() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let data = random(64, 130, 1.0, 0.0);
    let a16 = dev.storage_from_f32(&data, DType::F16)?;
    let a32 = dev.storage_from_f32(&data, DType::F32)?;
    assert!(matches!(
        a16.lincomb(1.0, &a32, 1.0),
        Err(Error::InvalidArgument(_))
    ));
    let short = dev.storage_from_f32(&data[..10], DType::F16)?;
    assert!(matches!(
        a16.lincomb(1.0, &short, 1.0),
        Err(Error::InvalidArgument(_))
    ));
    // Operands of two handles (two streams) combine correctly.
    let other = dev.with_new_stream()?;
    other.poison_outputs(true);
    let b = other.storage_from_f32(&data, DType::F32)?;
    let sum = a32.lincomb(1.0, &b, 1.0)?;
    let want: Vec<f32> = data.iter().map(|v| v + v).collect();
    assert_exact("cross-stream lincomb", &sum, &want)?;
    Ok(())
}

/// nnU-Net's f16 window sums and the argmax are bit-identical to the CPU
/// engine's (which rounds its f32 sums to f16 the same way): 2-D slices and
/// overlapping 3-D windows, batch after batch, and argmax with ties in both
/// types.
#[test]
fn sliding_window_sums_and_argmax_are_bit_identical_to_the_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    // (classes, grid, extent, window starts)
    type Case = (usize, [usize; 3], [usize; 3], Vec<[usize; 3]>);
    let cases: [Case; 2] = [
        (
            3,
            [2, 20, 18],
            [1, 12, 12],
            vec![
                [0, 0, 0],
                [0, 0, 6],
                [0, 8, 0],
                [0, 8, 6],
                [1, 0, 0],
                [1, 8, 6],
            ],
        ),
        (
            2,
            [7, 9, 8],
            [4, 6, 5],
            vec![[0, 0, 0], [3, 0, 3], [0, 3, 0], [3, 3, 3], [1, 1, 1]],
        ),
    ];
    for (classes, grid, extent, starts) in cases {
        let patch: usize = extent.iter().product();
        let n: usize = classes * grid.iter().product::<usize>();
        let (g_gauss, c_gauss) = pair(&dev, &random(patch, 21, 3.0, 5.0), DType::F16)?;
        let (mut g_sum, mut c_sum) = pair(&dev, &random(n, 22, 8.0, 0.0), DType::F16)?;
        // Two batches: the windows split 3 + rest, the second from the
        // first's sum.
        for (batch, part) in [&starts[..3], &starts[3..]].into_iter().enumerate() {
            let desc = WindowSumDesc {
                classes,
                grid,
                extent,
                starts: part.to_vec(),
            };
            let values = random(part.len() * classes * patch, 23 + batch as u64, 4.0, 0.0);
            let (g_pred, c_pred) = pair(&dev, &values, DType::F16)?;
            g_sum = g_pred.accumulate_windows(&g_sum, &g_gauss, &desc)?;
            c_sum = c_pred.accumulate_windows(&c_sum, &c_gauss, &desc)?;
            assert_exact(
                &format!("window sum {grid:?}, batch {batch}"),
                &g_sum,
                c_sum.as_slice(),
            )?;
        }
        let axis = AxisDesc {
            outer: 1,
            size: classes,
            inner: n / classes,
        };
        assert_exact(
            "argmax of the sums",
            &g_sum.argmax(axis)?,
            c_sum.argmax(axis)?.as_slice(),
        )?;
    }
    // Ties and NaN in both types: few distinct values over 5 classes.
    for dtype in DTYPES {
        let mut values: Vec<f32> = (0..5 * 777).map(|i| ((i * 7) % 4) as f32).collect();
        values[3] = f32::NAN;
        let (g, c) = pair(&dev, &values, dtype)?;
        let axis = AxisDesc {
            outer: 3,
            size: 5,
            inner: 259,
        };
        assert_exact(
            &format!("argmax {dtype:?}"),
            &g.argmax(axis)?,
            c.argmax(axis)?.as_slice(),
        )?;
    }
    Ok(())
}
