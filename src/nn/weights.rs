//! Named parameters from safetensors files, looked up by PyTorch path.
//!
//! [`Weights`] holds every tensor of a file (f32, f16 and bf16 are accepted)
//! on one device in one element type: the host in f32 by default, or the
//! target of [`LoadOptions`] with [`Weights::load_with`] /
//! [`Weights::to_device`]. Keys are normalised once: the wrapper prefixes
//! `module.` (DataParallel), `_orig_mod.` (torch.compile) and `denoise_fn.`
//! (the diffusion wrapper owning the U-Net) are stripped, and the diffusion
//! schedule buffers (`betas`, `alphas_cumprod`, …) are dropped because the
//! sampler recomputes them. Models walk the key tree with
//! [`VarBuilder::pp`] and take tensors with [`VarBuilder::get`], which
//! checks the shape and returns the tensor on the builder's device and
//! element type; [`Weights::check_all_used`] then reports leftovers.

use crate::nn::{DType, Device, LoadOptions, Tensor};
use crate::{Error, Result, ResultExt};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

/// Prefixes added by training wrappers, stripped from every key.
const WRAPPER_PREFIXES: [&str; 3] = ["module.", "_orig_mod.", "denoise_fn."];

/// Buffers of the Gaussian diffusion wrapper that are not network weights.
const SCHEDULE_BUFFERS: [&str; 12] = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
];

/// A set of named tensors plus a record of which ones a model took, and
/// the device and element type that builders hand tensors out on.
#[derive(Debug)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    used: Mutex<BTreeSet<String>>,
    device: Device,
    dtype: DType,
    /// Set by [`Weights::fresh`]: tensors a builder asks for are created
    /// with PyTorch's default initialisation instead of looked up.
    fresh: Option<Mutex<FreshTensors>>,
}

/// The tensors a [`Weights::fresh`] set created, and its random stream.
#[derive(Debug)]
struct FreshTensors {
    rng: crate::rng::Rng,
    created: BTreeMap<String, Tensor>,
}

impl FreshTensors {
    /// PyTorch's default initialisation of the parameter `key` of `shape`:
    /// conv/linear weights and their biases `U(±1/√fan_in)` (kaiming-uniform
    /// with a = √5), norm gains 1 and offsets 0, embeddings and the null
    /// condition `N(0, 1)`, rotary frequencies `10000^(−2j/d)`.
    fn init(&mut self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let owner = key.strip_suffix(leaf).unwrap_or("");
        let uniform = |rng: &mut crate::rng::Rng, fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let data: Vec<f32> = if key.ends_with("rotary_emb.freqs") {
            let d = 2 * n;
            (0..n)
                .map(|j| (10000f64.powf(-((2 * j) as f64) / d as f64)) as f32)
                .collect()
        } else if key == "null_cond_emb" || key.contains("relative_attention_bias") {
            (0..n).map(|_| self.rng.normal() as f32).collect()
        } else if leaf == "gamma" {
            vec![1.0; n]
        } else if leaf == "weight" && shape.len() >= 2 {
            uniform(&mut self.rng, shape[1..].iter().product())
        } else if leaf == "weight" {
            vec![1.0; n]
        } else if leaf == "bias" {
            match self.created.get(&format!("{owner}weight")) {
                Some(w) if w.rank() >= 2 => uniform(&mut self.rng, w.dims()[1..].iter().product()),
                _ => vec![0.0; n],
            }
        } else {
            return Err(Error::Model(format!(
                "no default initialisation for `{key}` {shape:?}"
            )));
        };
        Tensor::from_vec(data, shape)
    }
}

/// The key with wrapper prefixes removed (in any order and repetition).
fn normalise_key(key: &str) -> &str {
    let mut k = key;
    while let Some(rest) = WRAPPER_PREFIXES.iter().find_map(|p| k.strip_prefix(p)) {
        k = rest;
    }
    k
}

impl Weights {
    /// Builds the set from named tensors, normalising keys. Two keys that
    /// normalise to the same name are an error. The tensors stay where they
    /// are; builders hand them out on the host as f32 (see
    /// [`Weights::to_device`] for another target).
    pub fn from_tensors(named: impl IntoIterator<Item = (String, Tensor)>) -> Result<Weights> {
        let mut tensors = BTreeMap::new();
        for (key, t) in named {
            let k = normalise_key(&key);
            if SCHEDULE_BUFFERS.contains(&k) {
                continue;
            }
            if tensors.insert(k.to_string(), t).is_some() {
                return Err(Error::Model(format!(
                    "tensor `{k}` appears twice (after removing wrapper prefixes from `{key}`)"
                )));
            }
        }
        Ok(Weights {
            tensors,
            used: Mutex::new(BTreeSet::new()),
            device: Device::Cpu,
            dtype: DType::F32,
            fresh: None,
        })
    }

    /// An empty set that creates every tensor a builder asks for, with
    /// PyTorch's default initialisation drawn from `seed` (in the order the
    /// model asks). Build a model from [`Weights::root`], then take the
    /// created parameters with [`Weights::into_created`]: a newly
    /// initialised network under its upstream keys.
    pub fn fresh(seed: u64) -> Weights {
        Weights {
            tensors: BTreeMap::new(),
            used: Mutex::new(BTreeSet::new()),
            device: Device::Cpu,
            dtype: DType::F32,
            fresh: Some(Mutex::new(FreshTensors {
                rng: crate::rng::Rng::new(seed),
                created: BTreeMap::new(),
            })),
        }
    }

    /// The tensors a [`Weights::fresh`] set created, by key (empty for
    /// other sets).
    pub fn into_created(self) -> Vec<(String, Tensor)> {
        match self.fresh {
            Some(f) => f
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .created
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Parses a safetensors buffer; f16 and bf16 values are widened to f32.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Weights> {
        crate::io::check_safetensors_magic(bytes)?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format(format!("safetensors: {e}")))?;
        let mut named = Vec::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(Error::Model(format!(
                        "tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
                    )));
                }
            };
            named.push((name.clone(), Tensor::from_vec(values, view.shape())?));
        }
        Weights::from_tensors(named)
    }

    /// Reads a `.safetensors` file onto the device and precision of
    /// `options` ([`LoadOptions::resolve`]): f32, f16 and bf16 files are
    /// accepted whatever the target type.
    pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Weights> {
        let (device, dtype) = options.resolve()?;
        Weights::load(path)?.to_device(&device, dtype)
    }

    /// Every tensor converted to `dtype` on `device` (one upload each), as a
    /// new set whose builders hand out tensors there; nothing is marked
    /// used. Tensors already there are shared, not copied.
    pub fn to_device(&self, device: &Device, dtype: DType) -> Result<Weights> {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| {
                t.to_device(device, dtype)
                    .map(|t| (k.clone(), t))
                    .map_err(|e| match e {
                        Error::OutOfMemory(m) => Error::OutOfMemory(format!("tensor `{k}`: {m}")),
                        other => other,
                    })
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Weights {
            tensors,
            used: Mutex::new(BTreeSet::new()),
            device: device.clone(),
            dtype,
            fresh: None,
        })
    }

    /// The device that builders of this set hand tensors out on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The element type that builders of this set hand tensors out in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Reads a `.safetensors` file into host f32 tensors.
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, &e))?;
        Weights::from_safetensors(&bytes).context(crate::error::path_text(path))
    }

    /// The (normalised) keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the set holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor under `key`, without marking it used.
    pub fn peek(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }

    /// A builder at the root of the key tree, handing out tensors on this
    /// set's device and element type.
    pub fn root(&self) -> VarBuilder<'_> {
        self.root_on(&self.device, self.dtype)
    }

    /// A builder at the root of the key tree that converts every tensor it
    /// hands out to `dtype` on `device` (once per [`VarBuilder::get`]; a
    /// tensor already there is shared). Used tensors are recorded on this set.
    pub fn root_on(&self, device: &Device, dtype: DType) -> VarBuilder<'_> {
        VarBuilder {
            weights: self,
            prefix: String::new(),
            device: device.clone(),
            dtype,
        }
    }

    fn mark_used(&self, key: &str) {
        // A poisoned lock only means another thread panicked mid-insert; the
        // set is still a valid set of strings.
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(key.to_string());
    }

    /// Fails with [`Error::Model`] listing every tensor that no model took.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let extra: Vec<String> = self
            .tensors
            .iter()
            .filter(|(k, _)| !used.contains(*k))
            .map(|(k, t)| format!("`{k}` {:?}", t.dims()))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown = extra
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = if extra.len() > 10 {
            format!(" and {} more", extra.len() - 10)
        } else {
            String::new()
        };
        Err(Error::Model(format!(
            "{} unexpected tensor(s): {shown}{more}",
            extra.len()
        )))
    }
}

/// A position in the key tree of a [`Weights`] set, e.g. `downs.0.`, and
/// the device and element type its tensors are handed out on.
#[derive(Clone, Debug)]
pub struct VarBuilder<'a> {
    weights: &'a Weights,
    prefix: String,
    device: Device,
    dtype: DType,
}

impl<'a> VarBuilder<'a> {
    /// The child path `prefix.name` (numbers are ModuleList indices).
    pub fn pp(&self, name: impl std::fmt::Display) -> VarBuilder<'a> {
        VarBuilder {
            weights: self.weights,
            prefix: format!("{}{name}.", self.prefix),
            device: self.device.clone(),
            dtype: self.dtype,
        }
    }

    /// The device tensors are handed out on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The element type tensors are handed out in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The full key of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether `name` exists under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.tensors.contains_key(&self.path(name))
    }

    /// The shape of `name`, or [`Error::Model`] naming the missing key.
    /// Used to infer a configuration; does not mark the tensor used.
    pub fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        let key = self.path(name);
        self.weights
            .tensors
            .get(&key)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| Error::Model(format!("missing tensor `{key}`")))
    }

    /// The tensor `name`, which must have exactly `shape`, on this
    /// builder's device and element type.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(name, shape, self.dtype)
    }

    /// [`get`](Self::get) in element type `dtype` on this builder's
    /// device: for fixed buffers that keep their precision whatever the
    /// model's (PyTorch's autocast leaves buffers such as the rotary
    /// frequencies in f32).
    pub fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let key = self.path(name);
        if let Some(fresh) = &self.weights.fresh {
            let mut fresh = fresh.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = fresh.created.get(&key) {
                return Ok(t.clone());
            }
            let t = fresh.init(&key, shape)?;
            fresh.created.insert(key, t.clone());
            return t.to_device(&self.device, dtype);
        }
        let t = self.weights.tensors.get(&key).ok_or_else(|| {
            Error::Model(format!("missing tensor `{key}` (expected shape {shape:?})"))
        })?;
        if t.dims() != shape {
            return Err(Error::Model(format!(
                "tensor `{key}` has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        let t = t.to_device(&self.device, dtype)?;
        self.weights.mark_used(&key);
        Ok(t)
    }
}

/// Writes named f32 tensors `(name, shape, values)` and string metadata
/// as one safetensors file, through a temporary file in the same folder
/// renamed into place (a reader never sees half a file; a failed write
/// leaves any old file as it was). Each tensor's bytes are produced when
/// the serializer reaches it, so peak memory stays one tensor above the
/// values themselves.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(&str, &[usize], &[f32])],
    metadata: std::collections::HashMap<String, String>,
) -> Result<()> {
    write_safetensors_as(path, tensors, metadata, false)
}

/// [`write_f32_safetensors`], storing the values as IEEE half precision
/// when `half` (rounded to nearest; what the built-in models ship as:
/// half the bytes, and every loader widens them back to f32). A finite
/// value beyond f16's range is refused rather than stored as infinity.
pub fn write_safetensors_as(
    path: &Path,
    tensors: &[(&str, &[usize], &[f32])],
    metadata: std::collections::HashMap<String, String>,
    half: bool,
) -> Result<()> {
    if half {
        for (name, _, values) in tensors {
            if let Some(v) = values
                .iter()
                .find(|v| v.is_finite() && !half::f16::from_f32(**v).is_finite())
            {
                return Err(Error::invalid(format!(
                    "{}: tensor `{name}` holds {v}, beyond half precision",
                    path.display()
                )));
            }
        }
    }
    for (name, shape, values) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::invalid(format!(
                "{}: tensor `{name}` has shape {shape:?} but {} values",
                path.display(),
                values.len()
            )));
        }
    }
    let views = tensors.iter().map(|(name, shape, values)| {
        (
            *name,
            F32View {
                shape,
                values,
                half,
            },
        )
    });
    crate::io::atomic::write_atomically_via(path, |temp| {
        safetensors::serialize_to_file(views, Some(metadata), temp)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    })
}

/// An f32 tensor as the safetensors serializer sees it.
struct F32View<'a> {
    shape: &'a [usize],
    values: &'a [f32],
    /// Stored as f16.
    half: bool,
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        if self.half {
            Dtype::F16
        } else {
            Dtype::F32
        }
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.half {
            return std::borrow::Cow::Owned(
                self.values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            );
        }
        std::borrow::Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.values.len() * if self.half { 2 } else { 4 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[(&str, &[usize])]) -> Weights {
        Weights::from_tensors(
            keys.iter()
                .map(|(k, s)| (k.to_string(), Tensor::zeros(s).unwrap())),
        )
        .unwrap()
    }

    #[test]
    fn prefixes_are_stripped_and_schedule_buffers_dropped() {
        let w = set(&[
            ("module.denoise_fn.downs.0.weight", &[2, 3]),
            ("denoise_fn.betas", &[300]),
            ("betas", &[300]),
        ]);
        assert_eq!(w.keys().collect::<Vec<_>>(), vec!["downs.0.weight"]);
        let t = w.root().pp("downs").pp(0).get("weight", &[2, 3]).unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        w.check_all_used().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_shapes() {
        let w = set(&[("a.weight", &[2, 3]), ("a.extra", &[1])]);
        let e = w
            .root()
            .pp("a")
            .get("weight", &[3, 2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a.weight`") && e.contains("[2, 3]") && e.contains("[3, 2]"),
            "{e}"
        );
        let e = w.root().pp("a").get("bias", &[3]).unwrap_err().to_string();
        assert!(e.contains("missing tensor `a.bias`"), "{e}");
        let e = w.check_all_used().unwrap_err().to_string();
        assert!(e.contains("`a.extra`") && e.contains("`a.weight`"), "{e}");
        assert!(matches!(w.check_all_used(), Err(Error::Model(_))));
        let dup = Weights::from_tensors([
            ("module.x".to_string(), Tensor::zeros(&[1]).unwrap()),
            ("x".to_string(), Tensor::zeros(&[1]).unwrap()),
        ]);
        assert!(matches!(dup, Err(Error::Model(_))));
    }

    #[test]
    fn safetensors_half_types_widen_to_f32() {
        let f16: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [0.25f32]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let f32s: Vec<u8> = [3.0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            (
                "h".to_string(),
                safetensors::tensor::TensorView::new(Dtype::F16, vec![2], &f16).unwrap(),
            ),
            (
                "b".to_string(),
                safetensors::tensor::TensorView::new(Dtype::BF16, vec![1, 1], &bf16).unwrap(),
            ),
            (
                "f".to_string(),
                safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &f32s).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let w = Weights::from_safetensors(&bytes).unwrap();
        assert_eq!(w.peek("h").unwrap().to_vec().unwrap(), vec![1.5, -2.0]);
        assert_eq!(w.peek("b").unwrap().dims(), &[1, 1]);
        assert_eq!(w.peek("f").unwrap().to_vec().unwrap(), vec![3.0]);
        assert!(matches!(
            Weights::from_safetensors(b"garbage"),
            Err(Error::Format(_))
        ));
    }

    #[test]
    fn builders_hand_out_tensors_on_their_target() -> Result<()> {
        let w = set(&[("a.weight", &[2, 3])]);
        assert!(matches!(w.device(), Device::Cpu));
        assert_eq!(w.dtype(), DType::F32);
        let moved = w.to_device(&Device::Cpu, DType::F32)?;
        let t = moved.root().pp("a").get("weight", &[2, 3])?;
        assert_eq!((t.dtype(), t.dims()), (DType::F32, &[2usize, 3][..]));
        moved.check_all_used()?;
        // Use is recorded per set: the original still has `a.weight` unused.
        assert!(w.check_all_used().is_err());
        let vb = w.root_on(&Device::Cpu, DType::F32);
        assert_eq!(vb.pp("a").dtype(), DType::F32);
        vb.pp("a").get("weight", &[2, 3])?;
        w.check_all_used()?;
        // The CPU computes in f32 only: an f16 load is refused, not faked.
        let dir = tempfile::tempdir().map_err(|e| Error::io_at(Path::new("tmp"), &e))?;
        let path = dir.path().join("w.safetensors");
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        safetensors::serialize_to_file(vec![("x".to_string(), view)], None, &path).unwrap();
        let f16 = LoadOptions {
            precision: crate::nn::Precision::F16,
            ..LoadOptions::default()
        };
        assert!(matches!(
            Weights::load_with(&path, &f16),
            Err(Error::Unsupported(_))
        ));
        let w = Weights::load_with(&path, &LoadOptions::default())?;
        assert_eq!(w.peek("x").unwrap().to_vec()?, vec![1.0, 2.0]);
        Ok(())
    }
}
