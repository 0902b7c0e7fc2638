//! NIfTI reading and writing: the real AHA atlas, round trips of every voxel
//! type with oblique geometry, hand-built headers (built byte by byte here,
//! independently of the library's encoder) and hostile files.

use claim::io::nifti::{
    read_header, read_image_from_bytes, read_image_with_report, write_image_to_bytes,
    GeometrySource, NiftiRead,
};
use claim::io::{read_image, write_image};
use claim::rng::Rng;
use claim::{DType, Error, Geometry, Image, Volume};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

// ---------------------------------------------------------------- helpers

/// A NIfTI-1 header written field by field at the offsets of `nifti1.h`.
#[derive(Clone)]
struct Hdr {
    big_endian: bool,
    sizeof_hdr: i32,
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 3],
    qoffset: [f32; 3],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
}

impl Hdr {
    fn new(dims: [i16; 3], datatype: i16, bitpix: i16) -> Self {
        Hdr {
            big_endian: false,
            sizeof_hdr: 348,
            dim: [3, dims[0], dims[1], dims[2], 1, 1, 1, 1],
            datatype,
            bitpix,
            pixdim: [1.0; 8],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            magic: *b"n+1\0",
        }
    }

    /// Header plus the 4 extension-flag bytes.
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 352];
        let be = self.big_endian;
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        let i16b = |v: i16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let f32b = |v: f32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        put(
            0,
            &if be {
                self.sizeof_hdr.to_be_bytes()
            } else {
                self.sizeof_hdr.to_le_bytes()
            },
        );
        for i in 0..8 {
            put(40 + 2 * i, &i16b(self.dim[i]));
            put(76 + 4 * i, &f32b(self.pixdim[i]));
        }
        put(70, &i16b(self.datatype));
        put(72, &i16b(self.bitpix));
        put(108, &f32b(self.vox_offset));
        put(112, &f32b(self.scl_slope));
        put(116, &f32b(self.scl_inter));
        put(123, &[2]);
        put(252, &i16b(self.qform_code));
        put(254, &i16b(self.sform_code));
        for i in 0..3 {
            put(256 + 4 * i, &f32b(self.quatern[i]));
            put(268 + 4 * i, &f32b(self.qoffset[i]));
            for c in 0..4 {
                put(280 + 16 * i + 4 * c, &f32b(self.srow[i][c]));
            }
        }
        put(344, &self.magic);
        b
    }

    fn file(&self, data: &[u8]) -> Vec<u8> {
        let mut b = self.bytes();
        b.extend_from_slice(data);
        b
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn i16_le(values: &[i16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn read(bytes: &[u8]) -> NiftiRead {
    read_image_from_bytes(bytes, "test.nii").unwrap()
}

fn read_err(bytes: &[u8], name: &str) -> Error {
    match read_image_from_bytes(bytes, name) {
        Ok(r) => panic!("{name}: expected an error, read dims {:?}", r.image.dims()),
        Err(e) => e,
    }
}

fn assert_format(err: &Error, needles: &[&str]) {
    assert!(
        matches!(err, Error::Format(_)),
        "expected Format, got {err:?}"
    );
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

fn close3(a: [f64; 3], b: [f64; 3], tol: f64) -> bool {
    a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
}

fn assert_direction(got: &[[f64; 3]; 3], want: &[[f64; 3]; 3], tol: f64) {
    for r in 0..3 {
        for c in 0..3 {
            assert!(
                (got[r][c] - want[r][c]).abs() <= tol,
                "direction {got:?} != {want:?} (tol {tol})"
            );
        }
    }
}

const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Rotation by `angle` about `axis` (Rodrigues), as a row-major matrix.
fn rotation(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
    let n = axis.iter().map(|v| v * v).sum::<f64>().sqrt();
    let [x, y, z] = axis.map(|v| v / n);
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

fn oblique_geometry(left_handed: bool) -> Geometry {
    let mut direction = rotation([0.3, -0.5, 0.8], 0.6);
    if left_handed {
        for row in direction.iter_mut() {
            row[1] = -row[1];
        }
    }
    Geometry {
        spacing: [1.4, 1.4, 10.0],
        origin: [-123.456, 78.9, -5.4321],
        direction,
    }
}

fn f32_round(v: [f64; 3]) -> [f64; 3] {
    v.map(|x| f64::from(x as f32))
}

// ---------------------------------------------------------------- the atlas

#[test]
fn atlas_reads_like_itk_and_round_trips() {
    let Some(dir) = claim::testing::atlas_dir() else {
        return;
    };
    let path = dir.join("AHA17_model_ED.nii.gz");
    let report = read_image_with_report(&path).unwrap();
    assert_eq!(report.geometry_source, GeometrySource::Qform);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let image = report.image;
    assert_eq!(image.dtype(), DType::I16);
    assert_eq!(image.dims(), [140, 140, 56]);
    let g = *image.geometry();
    assert!(
        close3(g.spacing, [1.25, 1.25, 2.0], 1e-5),
        "spacing {:?}",
        g.spacing
    );
    assert!(
        close3(g.origin, [-66.875, 86.875, -55.0], 1e-4),
        "origin {:?}",
        g.origin
    );
    assert_direction(
        &g.direction,
        &[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        1e-6,
    );
    let labels: BTreeSet<i32> = image.to_labels().unwrap().data.iter().copied().collect();
    let want: BTreeSet<i32> = [0].into_iter().chain(1..=17).chain([21, 24]).collect();
    assert_eq!(labels, want);

    let tmp = tempfile::tempdir().unwrap();
    for name in ["atlas.nii.gz", "atlas.nii"] {
        let out = tmp.path().join(name);
        write_image(&image, &out).unwrap();
        let gz = std::fs::read(&out).unwrap().starts_with(&[0x1f, 0x8b]);
        assert_eq!(gz, name.ends_with(".gz"), "{name}: gzip by extension");
        let back = read_image_with_report(&out).unwrap();
        assert_eq!(back.geometry_source, GeometrySource::Sform);
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        assert_eq!(
            back.image, image,
            "{name}: voxels and geometry survive exactly"
        );
        let h = read_header(&out).unwrap();
        assert_eq!((h.qform_code, h.sform_code, h.pixdim[0]), (1, 1, -1.0));
        let q = h.qform_geometry(name).unwrap().unwrap();
        assert!(q.approx_eq(&g, 1e-6), "qform {q:?} vs {g:?}");
    }
}

// ---------------------------------------------------------------- round trips

fn random_image(dtype: DType, geometry: Geometry, rng: &mut Rng) -> Image {
    let dims = [7, 5, 3];
    let n = 7 * 5 * 3;
    // The first two voxels hold the type's extremes.
    let mut draw = |lo: f64, hi: f64| -> Vec<f64> {
        let mut v = vec![lo, hi];
        v.extend((2..n).map(|_| rng.uniform_range(lo, hi).floor()));
        v
    };
    match dtype {
        DType::U8 => Image::U8(
            Volume::from_vec(
                dims,
                draw(0.0, 255.0).iter().map(|x| *x as u8).collect(),
                geometry,
            )
            .unwrap(),
        ),
        DType::I16 => Image::I16(
            Volume::from_vec(
                dims,
                draw(-32768.0, 32767.0).iter().map(|x| *x as i16).collect(),
                geometry,
            )
            .unwrap(),
        ),
        DType::U16 => Image::U16(
            Volume::from_vec(
                dims,
                draw(0.0, 65535.0).iter().map(|x| *x as u16).collect(),
                geometry,
            )
            .unwrap(),
        ),
        DType::I32 => Image::I32(
            Volume::from_vec(
                dims,
                draw(f64::from(i32::MIN), f64::from(i32::MAX))
                    .iter()
                    .map(|x| *x as i32)
                    .collect(),
                geometry,
            )
            .unwrap(),
        ),
        DType::F32 => {
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 1000.0).collect();
            v[0] = f32::MIN_POSITIVE;
            v[1] = -f32::MAX;
            Image::F32(Volume::from_vec(dims, v, geometry).unwrap())
        }
    }
}

#[test]
fn every_dtype_round_trips_with_oblique_geometry() {
    let mut rng = Rng::new(2024);
    for left_handed in [false, true] {
        let geometry = oblique_geometry(left_handed);
        for dtype in [DType::U8, DType::I16, DType::U16, DType::I32, DType::F32] {
            let image = random_image(dtype, geometry, &mut rng);
            for gz in [false, true] {
                let what = format!("{dtype:?} left_handed={left_handed} gzip={gz}");
                let bytes = write_image_to_bytes(&image, gz).unwrap();
                assert_eq!(bytes.starts_with(&[0x1f, 0x8b]), gz, "{what}");
                let back = read(&bytes);
                assert_eq!(back.geometry_source, GeometrySource::Sform, "{what}");
                assert!(back.warnings.is_empty(), "{what}: {:?}", back.warnings);
                assert_eq!(back.image.dtype(), dtype, "{what}");
                let g = back.image.geometry();
                // NIfTI stores f32: spacing and origin come back as their
                // f32 roundings exactly, direction within 1e-6.
                assert_eq!(g.spacing, f32_round(geometry.spacing), "{what}");
                assert_eq!(g.origin, f32_round(geometry.origin), "{what}");
                assert_direction(&g.direction, &geometry.direction, 1e-6);
                let mut restored = back.image.clone();
                *restored.geometry_mut() = geometry;
                assert_eq!(restored, image, "{what}: voxels");

                // What ITK (or a qform-preferring reader) sees agrees.
                let h = &back.header;
                assert_eq!((h.qform_code, h.sform_code), (1, 1), "{what}");
                assert_eq!(h.pixdim[0], if left_handed { -1.0 } else { 1.0 }, "{what}");
                let q = h.qform_geometry("q").unwrap().unwrap();
                assert!(q.approx_eq(g, 1e-4), "{what}: qform {q:?} vs sform {g:?}");
            }
        }
    }
}

#[test]
fn files_round_trip_and_overwrite_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(5);
    let first = random_image(DType::I16, oblique_geometry(true), &mut rng);
    let second = random_image(DType::F32, oblique_geometry(false), &mut rng);
    for name in ["x.nii", "x.nii.gz"] {
        let path = tmp.path().join(name);
        write_image(&first, &path).unwrap();
        write_image(&second, &path).unwrap();
        let back = read_image(&path).unwrap();
        assert_eq!(back.dtype(), DType::F32);
        assert_eq!(back.to_f32().data, second.to_f32().data);
        // A refused write leaves the existing file as it was.
        let mut bad = second.clone();
        bad.geometry_mut().spacing[0] = f64::NAN;
        assert!(matches!(
            write_image(&bad, &path),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            read_image(&path).unwrap().to_f32().data,
            second.to_f32().data
        );
    }
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["x.nii", "x.nii.gz"],
        "no temporary files left behind"
    );
}

#[test]
fn writing_into_a_missing_folder_is_an_io_error_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no/such/dir");
    let image = random_image(DType::U8, Geometry::default(), &mut Rng::new(1));
    let err = write_image(&image, &missing.join("out.nii.gz")).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert!(err.to_string().contains("out.nii.gz"), "{err}");
    assert!(!tmp.path().join("no").exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

// ---------------------------------------------------------------- hand-built headers

#[test]
fn qform_only_file() {
    let mut h = Hdr::new([4, 3, 2], 4, 16);
    h.pixdim[1..4].copy_from_slice(&[2.0, 3.0, 4.0]);
    h.qform_code = 1;
    // 90° about +z: (b, c, d) = (0, 0, sin 45°).
    h.quatern = [0.0, 0.0, std::f32::consts::FRAC_1_SQRT_2];
    h.qoffset = [10.0, 20.0, 30.0];
    let values: Vec<i16> = (0..24).map(|v| v * 100 - 1000).collect();
    let r = read(&h.file(&i16_le(&values)));
    assert_eq!(r.geometry_source, GeometrySource::Qform);
    let Image::I16(v) = &r.image else {
        panic!("expected I16")
    };
    assert_eq!(v.dims(), [4, 3, 2]);
    assert_eq!(*v.at(3, 0, 0), values[3]);
    assert_eq!(*v.at(0, 2, 1), values[12 + 8]);
    let g = v.geometry;
    assert_eq!(g.spacing, [2.0, 3.0, 4.0]);
    assert_eq!(g.origin, [-10.0, -20.0, 30.0]);
    // RAS [[0,-1,0],[1,0,0],[0,0,1]] → LPS: negate the first two rows.
    assert_direction(
        &g.direction,
        &[[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        1e-6,
    );

    // qfac −1 (pixdim[0] < 0) flips the third axis.
    h.pixdim[0] = -1.0;
    let g = *read(&h.file(&i16_le(&values))).image.geometry();
    assert_direction(
        &g.direction,
        &[[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
        1e-6,
    );
}

#[test]
fn sform_only_file() {
    let mut h = Hdr::new([2, 2, 2], 2, 8);
    h.pixdim[1..4].copy_from_slice(&[2.0, 4.0, 3.0]);
    h.sform_code = 1;
    // Columns: i → (0,−2,0), j → (0,0,−4), k → (3,0,0) in RAS.
    h.srow = [
        [0.0, 0.0, 3.0, 5.0],
        [-2.0, 0.0, 0.0, 6.0],
        [0.0, -4.0, 0.0, 7.0],
    ];
    let r = read(&h.file(&[1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(r.geometry_source, GeometrySource::Sform);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let g = *r.image.geometry();
    assert_eq!(g.spacing, [2.0, 4.0, 3.0]);
    assert_eq!(g.origin, [-5.0, -6.0, 7.0]);
    assert_direction(
        &g.direction,
        &[[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
        0.0,
    );
    // World position of voxel (1, 0, 0): origin + 2 mm along +P (LPS y).
    assert_eq!(g.index_to_world([1.0, 0.0, 0.0]), [-5.0, -4.0, 7.0]);
}

/// sform of `rotation` (RAS) scaled by `spacing` with offset `origin`.
fn srow_of(rot: &[[f64; 3]; 3], spacing: [f64; 3], origin: [f64; 3]) -> [[f32; 4]; 3] {
    let mut s = [[0f32; 4]; 3];
    for r in 0..3 {
        for c in 0..3 {
            s[r][c] = (rot[r][c] * spacing[c]) as f32;
        }
        s[r][3] = origin[r] as f32;
    }
    s
}

#[test]
fn oblique_sform_and_the_qform_tie_break() {
    let rot = rotation([1.0, 2.0, 0.5], 0.4);
    let spacing = [1.5, 1.5, 8.0];
    let origin_ras = [12.5, -40.0, 3.25];
    let lps_direction = [rot[0].map(|v| -v), rot[1].map(|v| -v), rot[2]];
    let mut h = Hdr::new([3, 3, 3], 2, 8);
    h.pixdim[1..4].copy_from_slice(&spacing.map(|v| v as f32));
    h.sform_code = 2;
    h.srow = srow_of(&rot, spacing, origin_ras);
    let data = [0u8; 27];

    // qform unknown: the sform decides, whatever its code.
    let r = read(&h.file(&data));
    assert_eq!(r.geometry_source, GeometrySource::Sform);
    assert_direction(&r.image.geometry().direction, &lps_direction, 1e-6);
    assert!(close3(r.image.geometry().origin, [-12.5, 40.0, 3.25], 1e-6));

    // A qform that disagrees beats an sform whose code is not SCANNER_ANAT.
    h.qform_code = 1;
    h.quatern = [0.0, 0.0, 0.0];
    h.qoffset = [1.0, 2.0, 3.0];
    let r = read(&h.file(&data));
    assert_eq!(r.geometry_source, GeometrySource::Qform);
    assert_direction(
        &r.image.geometry().direction,
        &[[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        0.0,
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("disagree")),
        "{:?}",
        r.warnings
    );

    // ... but with sform code 1 (SCANNER_ANAT) the sform wins.
    h.sform_code = 1;
    assert_eq!(read(&h.file(&data)).geometry_source, GeometrySource::Sform);

    // A sheared sform without a qform leaves no usable orientation.
    h.sform_code = 2;
    h.qform_code = 0;
    h.srow[0][1] = 1.0;
    let err = read_err(&h.file(&data), "shear.nii");
    assert_format(&err, &["shear.nii", "no usable orientation"]);
}

#[test]
fn emidec_style_float64_with_unscaled_sform() {
    let mut h = Hdr::new([3, 2, 2], 64, 64);
    h.pixdim[1..4].copy_from_slice(&[1.45, 1.45, 10.0]);
    h.qform_code = 0;
    h.sform_code = 2;
    h.srow = [
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ];
    let labels = [
        0.0f64, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0, 2.0, 2.0, 3.0, 0.0,
    ];
    let data: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    for bytes in [h.file(&data), gzip(&h.file(&data))] {
        let r = read(&bytes);
        assert_eq!(r.geometry_source, GeometrySource::Sform);
        assert_eq!(r.image.dtype(), DType::F32);
        let g = *r.image.geometry();
        // Spacing from pixdim (ITK), not the sform's 1 × 1 × 1 (nibabel).
        assert!(
            close3(g.spacing, [1.45, 1.45, 10.0], 1e-6),
            "{:?}",
            g.spacing
        );
        // RAS diag(−1, −1, 1) is LPS identity.
        assert_direction(&g.direction, &IDENTITY, 0.0);
        assert_eq!(g.origin, [0.0, 0.0, 0.0]);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("sform") && w.contains("pixdim")),
            "{:?}",
            r.warnings
        );
        let got: Vec<i32> = r.image.to_labels().unwrap().data.iter().copied().collect();
        assert_eq!(got, labels.iter().map(|v| *v as i32).collect::<Vec<_>>());
    }
}

#[test]
fn big_endian_file_reads_like_little_endian() {
    let mut h = Hdr::new([3, 2, 2], 4, 16);
    h.pixdim[1..4].copy_from_slice(&[0.8, 0.9, 5.0]);
    h.qform_code = 1;
    h.quatern = [0.1, -0.2, 0.3];
    h.qoffset = [-7.5, 8.25, 100.0];
    let values: Vec<i16> = vec![-32768, -1, 0, 1, 255, 256, 32767, 7, -7, 1000, -1000, 42];
    let le = read(&h.file(&i16_le(&values)));
    let mut hb = h.clone();
    hb.big_endian = true;
    let be_data: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let be = read(&hb.file(&be_data));
    assert!(be.header.big_endian && !le.header.big_endian);
    assert_eq!(be.image, le.image);
    let Image::I16(v) = &be.image else {
        panic!("expected I16")
    };
    assert_eq!(v.data.iter().copied().collect::<Vec<_>>(), values);

    // Big-endian float64 as well.
    let mut hf = hb.clone();
    hf.datatype = 64;
    hf.bitpix = 64;
    let floats: Vec<f64> = (0..12).map(|i| f64::from(i) * 0.5 - 2.0).collect();
    let data: Vec<u8> = floats.iter().flat_map(|v| v.to_be_bytes()).collect();
    let r = read(&hf.file(&data));
    assert_eq!(
        r.image.to_f32().data.iter().copied().collect::<Vec<_>>(),
        floats.iter().map(|v| *v as f32).collect::<Vec<_>>()
    );
}

#[test]
fn intensity_scaling_is_applied() {
    let mut h = Hdr::new([4, 1, 1], 2, 8);
    h.scl_slope = 2.0;
    h.scl_inter = -1.0;
    let r = read(&h.file(&[0, 1, 2, 255]));
    let Image::F32(v) = &r.image else {
        panic!("scaled data must be F32")
    };
    assert_eq!(
        v.data.iter().copied().collect::<Vec<_>>(),
        [-1.0, 1.0, 3.0, 509.0]
    );
    // Slope 0 means "no scaling": the stored type is kept.
    h.scl_slope = 0.0;
    assert_eq!(read(&h.file(&[0, 1, 2, 255])).image.dtype(), DType::U8);
}

#[test]
fn narrow_and_wide_types_map_to_supported_ones() {
    // int8 → I16
    let h = Hdr::new([3, 1, 1], 256, 8);
    let Image::I16(v) = read(&h.file(&[0x80, 0xff, 0x7f])).image else {
        panic!("int8 → I16")
    };
    assert_eq!(v.data.iter().copied().collect::<Vec<_>>(), [-128, -1, 127]);
    // uint32 → F32
    let h = Hdr::new([2, 1, 1], 768, 32);
    let data: Vec<u8> = [7u32, 1 << 20]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let Image::F32(v) = read(&h.file(&data)).image else {
        panic!("uint32 → F32")
    };
    assert_eq!(v.data.iter().copied().collect::<Vec<_>>(), [7.0, 1048576.0]);
    // int64 → F32
    let h = Hdr::new([2, 1, 1], 1024, 64);
    let data: Vec<u8> = [-5i64, 21].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        read(&h.file(&data))
            .image
            .to_f32()
            .data
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [-5.0, 21.0]
    );
    // complex and RGB are refused by name.
    for (code, bits, name) in [(32i16, 64i16, "complex64"), (128, 24, "rgb24")] {
        let h = Hdr::new([1, 1, 1], code, bits);
        let err = read_err(&h.file(&[0; 8]), "c.nii");
        assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains(name) && err.to_string().contains(&code.to_string()));
    }
}

#[test]
fn four_d_with_trailing_one_is_a_volume_but_a_series_is_refused() {
    let mut h = Hdr::new([2, 2, 2], 2, 8);
    h.dim = [4, 2, 2, 2, 1, 0, 0, 0];
    assert_eq!(read(&h.file(&[9; 8])).image.dims(), [2, 2, 2]);
    h.dim = [4, 2, 2, 2, 3, 0, 0, 0];
    let err = read_err(&h.file(&[9; 24]), "series.nii");
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("[2, 2, 2, 3]"), "{err}");
}

#[test]
fn two_d_image_is_a_single_slice() {
    let mut h = Hdr::new([3, 2, 0], 2, 8);
    h.dim = [2, 3, 2, 0, 0, 0, 0, 0];
    h.pixdim = [1.0, 0.5, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0];
    let r = read(&h.file(&[1, 2, 3, 4, 5, 6]));
    assert_eq!(r.image.dims(), [3, 2, 1]);
    assert!(close3(r.image.geometry().spacing, [0.5, 0.7, 1.0], 1e-7));
}

#[test]
fn no_transform_falls_back_to_identity_with_a_warning() {
    let mut h = Hdr::new([2, 1, 1], 2, 8);
    h.pixdim[1] = -3.0; // spacing is |pixdim|
    let r = read(&h.file(&[1, 2]));
    assert_eq!(r.geometry_source, GeometrySource::Default);
    assert_eq!(*r.image.geometry(), Geometry::with_spacing([3.0, 1.0, 1.0]));
    assert!(
        r.warnings.iter().any(|w| w.contains("both 0")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn nifti2_is_read() {
    // 540-byte header, little-endian, int16 2×2×1, qform identity.
    let mut b = vec![0u8; 544];
    b[0..4].copy_from_slice(&540i32.to_le_bytes());
    b[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
    b[12..14].copy_from_slice(&4i16.to_le_bytes());
    b[14..16].copy_from_slice(&16i16.to_le_bytes());
    for (i, d) in [3i64, 2, 2, 1, 1, 1, 1, 1].iter().enumerate() {
        b[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    for (i, p) in [1.0f64, 0.5, 0.25, 3.0, 1.0, 1.0, 1.0, 1.0]
        .iter()
        .enumerate()
    {
        b[104 + 8 * i..112 + 8 * i].copy_from_slice(&p.to_le_bytes());
    }
    b[168..176].copy_from_slice(&544i64.to_le_bytes());
    b[344..348].copy_from_slice(&1i32.to_le_bytes()); // qform_code
    b[376..384].copy_from_slice(&4.0f64.to_le_bytes()); // qoffset_x
    let mut file = b.clone();
    file.extend(i16_le(&[1, -2, 3, -4]));
    let r = read(&file);
    assert_eq!(r.image.dims(), [2, 2, 1]);
    assert_eq!(r.image.geometry().spacing, [0.5, 0.25, 3.0]);
    assert_eq!(r.image.geometry().origin, [-4.0, 0.0, 0.0]);
    assert_eq!(
        r.image
            .to_labels()
            .unwrap()
            .data
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        [1, -2, 3, -4]
    );

    // Dims of 2^31 per axis: refused from the header, nothing allocated.
    for i in 1..4 {
        b[16 + 8 * i..24 + 8 * i].copy_from_slice(&(1i64 << 31).to_le_bytes());
    }
    assert_format(&read_err(&b, "huge2.nii"), &["huge2.nii", "dims"]);
    assert_format(
        &read_err(&gzip(&b), "huge2.nii.gz"),
        &["huge2.nii.gz", "dims"],
    );
}

// ---------------------------------------------------------------- hostile input

fn small_valid() -> Vec<u8> {
    let mut h = Hdr::new([4, 4, 4], 4, 16);
    h.qform_code = 1;
    h.sform_code = 1;
    h.srow = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ];
    h.file(&i16_le(&(0..64).collect::<Vec<_>>()))
}

#[test]
fn truncated_gzip_is_a_format_error() {
    let image = random_image(DType::F32, oblique_geometry(false), &mut Rng::new(3));
    let gz = write_image_to_bytes(&image, true).unwrap();
    assert!(read_image_from_bytes(&gz, "whole.nii.gz").is_ok());
    for cut in [3, 20, gz.len() / 2, gz.len() - 9, gz.len() - 1] {
        let err = read_err(&gz[..cut], "cut.nii.gz");
        assert_format(&err, &["cut.nii.gz"]);
    }
    // A flipped bit in the compressed voxels fails the CRC or the inflater.
    let mut bad = gz.clone();
    let at = gz.len() - 20;
    bad[at] ^= 0x10;
    assert_format(&read_err(&bad, "flip.nii.gz"), &["flip.nii.gz"]);
}

#[test]
fn truncated_raw_data_is_a_format_error() {
    let bytes = small_valid();
    for cut in [0, 3, 100, 348, 351, 352, bytes.len() - 1] {
        let err = read_err(&bytes[..cut], "short.nii");
        assert_format(&err, &["short.nii"]);
    }
    assert_format(
        &read_err(&bytes[..bytes.len() - 1], "short.nii"),
        &["truncated"],
    );
}

#[test]
fn random_bytes_are_rejected_without_panicking() {
    let mut rng = Rng::new(99);
    for _ in 0..300 {
        let len = rng.below(1200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert!(matches!(
            read_image_from_bytes(&bytes, "noise.nii"),
            Err(Error::Format(_))
        ));
        let mut gz_looking = vec![0x1f, 0x8b];
        gz_looking.extend_from_slice(&bytes);
        assert!(matches!(
            read_image_from_bytes(&gz_looking, "noise.nii.gz"),
            Err(Error::Format(_))
        ));
    }
}

#[test]
fn mutated_valid_files_never_panic() {
    // Random byte changes in a valid header: the result may be an image or
    // an error, but never a panic, and every error is Format or Unsupported.
    let valid = small_valid();
    let mut rng = Rng::new(11);
    for round in 0..2000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(352) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        let input = if round % 4 == 0 { gzip(&bytes) } else { bytes };
        match read_image_from_bytes(&input, "mutant.nii") {
            Ok(r) => r.image.geometry().validate("mutant").unwrap(),
            Err(Error::Format(_) | Error::Unsupported(_)) => {}
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
    }
}

#[test]
fn wrong_magic_and_pair_files() {
    let mut bytes = small_valid();
    bytes[344..348].copy_from_slice(b"abcd");
    assert_format(&read_err(&bytes, "magic.nii"), &["magic.nii", "magic"]);
    bytes[344..348].copy_from_slice(b"ni1\0");
    assert!(matches!(
        read_err(&bytes, "pair.hdr"),
        Error::Unsupported(_)
    ));
    bytes[344..348].copy_from_slice(&[0; 4]);
    assert_format(&read_err(&bytes, "analyze.hdr"), &["ANALYZE"]);
    let mut bytes = small_valid();
    bytes[0..4].copy_from_slice(&349i32.to_le_bytes());
    assert_format(&read_err(&bytes, "size.nii"), &["sizeof_hdr"]);
}

#[test]
fn absurd_headers_are_refused_by_field() {
    let mut h = Hdr::new([4, 4, 4], 4, 16);
    h.qform_code = 1;
    let data = i16_le(&[0; 64]);

    let mut big = h.clone();
    big.dim = [3, 32767, 32767, 32767, 1, 1, 1, 1];
    assert_format(&read_err(&big.file(&data), "big.nii"), &["big.nii", "dims"]);
    assert_format(&read_err(&gzip(&big.file(&data)), "big.nii.gz"), &["dims"]);

    let mut neg = h.clone();
    neg.dim[2] = -4;
    assert_format(
        &read_err(&neg.file(&data), "neg.nii"),
        &["neg.nii", "dim[2]"],
    );

    let mut zero = h.clone();
    zero.dim[0] = 0;
    assert_format(&read_err(&zero.file(&data), "zero.nii"), &["dim[0]"]);

    let mut nan = h.clone();
    nan.pixdim[1] = f32::NAN;
    assert_format(
        &read_err(&nan.file(&data), "nan.nii"),
        &["nan.nii", "pixdim[1]"],
    );

    let mut zero_spacing = h.clone();
    zero_spacing.pixdim[2] = 0.0;
    assert_format(
        &read_err(&zero_spacing.file(&data), "z.nii"),
        &["pixdim[2]"],
    );

    let mut quat = h.clone();
    quat.quatern[1] = f32::INFINITY;
    assert_format(&read_err(&quat.file(&data), "q.nii"), &["quatern"]);

    let mut srow = h.clone();
    srow.sform_code = 1;
    srow.srow[2][3] = f32::NAN;
    assert_format(&read_err(&srow.file(&data), "s.nii"), &["sform"]);

    for offset in [1e12f32, 348.0, 352.5, f32::NAN] {
        let mut off = h.clone();
        off.vox_offset = offset;
        assert_format(
            &read_err(&off.file(&data), "off.nii"),
            &["off.nii", "vox_offset"],
        );
    }
    // Plausible offset beyond the end: truncated, found before allocating.
    let mut far = h.clone();
    far.vox_offset = 1e8;
    assert_format(&read_err(&far.file(&data), "far.nii"), &["truncated"]);
    assert_format(
        &read_err(&gzip(&far.file(&data)), "far.nii.gz"),
        &["vox_offset"],
    );

    let mut bitpix = h.clone();
    bitpix.bitpix = 8;
    assert_format(&read_err(&bitpix.file(&data), "b.nii"), &["bitpix"]);
}

#[test]
fn missing_or_unreadable_paths_are_io_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("absent.nii.gz");
    let err = read_image(&missing).unwrap_err();
    assert!(
        matches!(err, Error::Io(_)) && err.to_string().contains("absent.nii.gz"),
        "{err:?}"
    );
    assert!(matches!(read_header(&missing), Err(Error::Io(_))));
    // A folder is not a file.
    assert!(matches!(read_image(tmp.path()), Err(Error::Io(_))));
    let empty = tmp.path().join("empty.nii");
    std::fs::write(&empty, b"").unwrap();
    assert_format(&read_image(&empty).unwrap_err(), &["empty.nii"]);
}

#[test]
fn header_summary_for_claim_info() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.nii.gz");
    std::fs::write(&path, gzip(&small_valid())).unwrap();
    let h = read_header(&path).unwrap();
    let summary = h.to_string();
    assert!(
        summary.contains("dims 4×4×4") && summary.contains("int16"),
        "{summary}"
    );
    assert!(summary.contains("qform_code 1, sform_code 1"), "{summary}");
    assert!(Path::new(&path).exists());
}
