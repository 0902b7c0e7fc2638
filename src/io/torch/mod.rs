//! PyTorch `torch.save` checkpoints (`.pt`, `.pth`), read safely without Python.
//!
//! A checkpoint saved by PyTorch ≥ 1.6 is a zip archive: `<name>/data.pkl`
//! (a pickle, protocol 2), one raw little-endian storage per
//! `<name>/data/<key>`, and small records (`version`, `byteorder`, …).
//! Tensors are pickled as calls of `torch._utils._rebuild_tensor_v2` (or
//! `_v3` for dtypes without a legacy storage class) on a persistent id
//! `('storage', torch.FloatStorage, key, device, numel)`; state dicts are
//! `collections.OrderedDict`s.
//!
//! The reader ([`read_torch_file`], [`read_torch_bytes`]) turns the pickle
//! into a [`PickleValue`] tree. It never imports or executes anything: a
//! global is only a name, and calling one the reader does not interpret
//! (`torch.device`, `os.system`, …) yields [`PickleValue::Opaque`] with
//! that name. Every size the file claims is checked before anything is
//! allocated for it (zip entry counts and sizes against the file length,
//! pickle stack, memo, nesting depth, string and integer lengths, tensor
//! views against their storages), and every failure is an
//! [`Error::Format`] naming the file, the archive entry and what was wrong.
//!
//! Tensor values stay in the file until asked for: a [`TorchTensor`] holds
//! its view and a shared storage that reads (and CRC-checks) its bytes the
//! first time any tensor viewing it is materialised, and keeps them for
//! the others. Converting a state dict therefore costs the storages it
//! uses plus the f32 copies, not the whole file several times over.
//!
//! Not supported (a clear error): the legacy pre-1.6 format (a bare
//! pickle), TorchScript archives, big-endian checkpoints, tensor types
//! outside [`TorchDType`] (complex, quantised, float8).
//!
//! ```no_run
//! use claim::io::torch::{read_torch_file, state_dict_tensors};
//! let ckpt = read_torch_file(std::path::Path::new("checkpoint_final.pth"))?;
//! let trainer = ckpt.get("trainer_name").and_then(|v| v.as_str());
//! let weights = state_dict_tensors(ckpt.get("network_weights").unwrap())?;
//! # Ok::<(), claim::Error>(())
//! ```

mod pickle;
mod save;
mod tensor;
mod value;
mod zip;

pub use save::{torch_save_bytes, write_torch_file, SaveValue};
pub use tensor::{TorchDType, TorchTensor};
pub use value::PickleValue;

use crate::nn::Tensor;
use crate::{Error, Result, ResultExt};
use pickle::{StorageRef, StorageResolver};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tensor::TorchStorage;
use zip::{Archive, ArchiveSource};

/// Largest `data.pkl` read (a state dict's pickle is kilobytes; nnU-Net's
/// with plans and training logs well under a megabyte).
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Largest small record (`byteorder`) read.
const MAX_RECORD_BYTES: u64 = 64;
/// Longest storage key (torch writes decimal numbers).
const MAX_KEY_LEN: usize = 128;
/// Tensor views may cover this many times the storage bytes (aliases such
/// as nnU-Net's `decoder.encoder.*` count twice) …
const VIEW_FACTOR: u64 = 8;
/// … plus this much (broadcast views of tiny storages).
const VIEW_SLACK: u64 = 64 << 20;

/// Reads a `torch.save` file. Tensor data is read from the file later,
/// when a tensor is first materialised, so the file stays open as long as
/// any tensor of the result lives.
pub fn read_torch_file(path: &Path) -> Result<PickleValue> {
    let file = std::fs::File::open(path).map_err(|e| Error::io_at(path, &e))?;
    let len = file.metadata().map_err(|e| Error::io_at(path, &e))?.len();
    let source = ArchiveSource::File {
        file: Mutex::new(file),
        path: path.to_path_buf(),
        len,
    };
    read_archive(source).context(crate::error::path_text(path))
}

/// Reads a `torch.save` archive held in memory (copied once; tensors share
/// the copy).
pub fn read_torch_bytes(bytes: &[u8]) -> Result<PickleValue> {
    read_archive(ArchiveSource::Memory(Arc::from(bytes))).context("torch checkpoint")
}

/// The float tensors of a state dict (a dict of string keys to tensors),
/// in order, as f32 [`Tensor`]s (f64 rounded, f16/bf16 widened). Integer
/// and bool tensors (e.g. BatchNorm's `num_batches_tracked`) are skipped.
/// Keys that view the same data (aliases) share one [`Tensor`]. Any other
/// value is an error naming its key.
pub fn state_dict_tensors(value: &PickleValue) -> Result<Vec<(String, Tensor)>> {
    let PickleValue::Dict(entries) = value else {
        return Err(Error::format(format!(
            "expected a state dict (a dict of tensors), found a {}",
            value.kind()
        )));
    };
    // Entries in order, checked first so errors name the first bad key.
    let mut floats: Vec<(&str, &TorchTensor)> = Vec::with_capacity(entries.len());
    for (key, item) in entries {
        let PickleValue::Str(name) = key else {
            return Err(Error::format(format!(
                "state dict key {} is a {}, not a string",
                key.to_json(),
                key.kind()
            )));
        };
        let PickleValue::Tensor(t) = item else {
            return Err(Error::format(format!(
                "state dict entry `{name}` is a {}, not a tensor",
                item.kind()
            )));
        };
        if t.dtype.is_float() {
            floats.push((name, t));
        }
    }
    // One pass per storage: its raw bytes are read once and dropped before
    // the next storage is read, so the peak is the f32 copies plus one
    // storage. Identical views (aliases) share one Tensor.
    let mut by_storage: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut storage_order = Vec::new();
    for (i, (_, t)) in floats.iter().enumerate() {
        by_storage
            .entry(t.storage_id())
            .or_insert_with(|| {
                storage_order.push(t.storage_id());
                Vec::new()
            })
            .push(i);
    }
    let mut converted: Vec<Option<Tensor>> = vec![None; floats.len()];
    for id in storage_order {
        let members = by_storage.remove(&id).unwrap_or_default();
        let mut distinct: Vec<usize> = Vec::new();
        let mut slots = HashMap::new();
        let mut alias_of: Vec<(usize, usize)> = Vec::new();
        for &i in &members {
            match slots.get(&floats[i].1.view_key()) {
                Some(&slot) => alias_of.push((i, slot)),
                None => {
                    slots.insert(floats[i].1.view_key(), distinct.len());
                    distinct.push(i);
                }
            }
        }
        let views: Vec<&TorchTensor> = distinct.iter().map(|&i| floats[i].1).collect();
        let tensors = TorchTensor::f32_tensors_sharing_storage(&views)
            .with_context(|| format!("state dict entry `{}`", floats[members[0]].0))?;
        for (&i, tensor) in distinct.iter().zip(&tensors) {
            converted[i] = Some(tensor.clone());
        }
        for (i, slot) in alias_of {
            converted[i] = tensors.get(slot).cloned();
        }
    }
    floats
        .iter()
        .zip(converted)
        .map(|((name, _), tensor)| {
            tensor.map(|t| (name.to_string(), t)).ok_or_else(|| {
                Error::Internal(format!("state dict entry `{name}` was not converted"))
            })
        })
        .collect()
}

/// Parses the archive and its pickle.
fn read_archive(source: ArchiveSource) -> Result<PickleValue> {
    let archive = Arc::new(Archive::open(Arc::new(source))?);
    let prefix = find_prefix(&archive)?;
    if let Some(entry) = archive.entry(&format!("{prefix}byteorder")) {
        let order = archive.read(entry, MAX_RECORD_BYTES)?;
        match order.as_slice() {
            b"little" => {}
            b"big" => return Err(Error::format("big-endian checkpoints are not supported")),
            other => {
                return Err(Error::format(format!(
                    "byteorder record {:?} is neither little nor big",
                    String::from_utf8_lossy(other)
                )))
            }
        }
    }
    let pickle_name = format!("{prefix}data.pkl");
    let pickle_entry = archive
        .entry(&pickle_name)
        .ok_or_else(|| Error::Internal("data.pkl vanished".into()))?;
    let pickle = archive.read(pickle_entry, MAX_PICKLE_BYTES)?;
    let data_prefix = format!("{prefix}data/");
    let storage_bytes: u64 = archive
        .entries()
        .iter()
        .filter(|e| e.name.starts_with(&data_prefix))
        .map(|e| e.size)
        .fold(0u64, u64::saturating_add);
    let mut storages = Storages {
        archive: archive.clone(),
        data_prefix,
        cache: HashMap::new(),
    };
    let max_view_bytes = storage_bytes
        .saturating_mul(VIEW_FACTOR)
        .saturating_add(VIEW_SLACK);
    pickle::unpickle(pickle.as_slice(), &mut storages, max_view_bytes)
        .with_context(|| format!("zip entry {pickle_name:?}"))
}

/// The archive's folder: the `X/` of its one `X/data.pkl` (or `""`).
fn find_prefix(archive: &Archive) -> Result<String> {
    let mut pickles = archive.entries().iter().filter(|e| {
        e.name == "data.pkl" || (e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
    });
    match (pickles.next(), pickles.next()) {
        (Some(entry), None) => Ok(entry.name.trim_end_matches("data.pkl").to_string()),
        (Some(a), Some(b)) => Err(Error::format(format!(
            "two pickles ({:?}, {:?}): not a single torch.save checkpoint",
            a.name, b.name
        ))),
        (None, _) => {
            let torchscript = archive
                .entries()
                .iter()
                .any(|e| e.name.ends_with("/constants.pkl"));
            Err(Error::format(if torchscript {
                "a TorchScript archive (torch.jit.save), not a torch.save checkpoint".to_string()
            } else {
                "no <archive>/data.pkl entry: not a torch.save checkpoint".to_string()
            }))
        }
    }
}

/// Resolves storage persistent ids to archive entries, once per key.
struct Storages {
    archive: Arc<Archive>,
    data_prefix: String,
    cache: HashMap<String, Arc<TorchStorage>>,
}

impl StorageResolver for Storages {
    fn storage(
        &mut self,
        class: &str,
        key: &str,
        numel: u64,
    ) -> std::result::Result<StorageRef, String> {
        let dtype = match class {
            "torch.storage.UntypedStorage" | "torch.UntypedStorage" => None,
            _ => Some(TorchDType::from_storage_class(class).ok_or_else(|| {
                format!("storage {key:?} has type {class}, which this reader does not support")
            })?),
        };
        let item = dtype.map_or(1, |d| d.size_in_bytes() as u64);
        let bytes = numel
            .checked_mul(item)
            .ok_or_else(|| format!("storage {key:?}: {numel} elements overflow"))?;
        let storage = match self.cache.get(key) {
            Some(storage) => {
                if storage.byte_len() as u64 != bytes {
                    return Err(format!(
                        "storage {key:?} is referenced as {bytes} bytes and as {} bytes",
                        storage.byte_len()
                    ));
                }
                storage.clone()
            }
            None => {
                if key.is_empty() || key.len() > MAX_KEY_LEN || key.contains('/') {
                    return Err(format!("storage key {key:?} is not a plain name"));
                }
                let name = format!("{}{key}", self.data_prefix);
                let index = self
                    .archive
                    .entry_index(&name)
                    .ok_or_else(|| format!("storage {key:?}: no archive entry {name:?}"))?;
                let size = self.archive.entries().get(index).map_or(0, |e| e.size);
                if size != bytes {
                    return Err(format!(
                        "storage {key:?} ({class}) claims {numel} elements = {bytes} bytes, its entry {name:?} has {size}"
                    ));
                }
                let byte_len = usize::try_from(bytes)
                    .map_err(|_| format!("storage {key:?} too large for memory"))?;
                let storage = Arc::new(TorchStorage::new(
                    key.to_string(),
                    self.archive.clone(),
                    index,
                    byte_len,
                ));
                self.cache.insert(key.to_string(), storage.clone());
                storage
            }
        };
        Ok(StorageRef {
            storage,
            dtype,
            class: class.to_string(),
        })
    }
}
