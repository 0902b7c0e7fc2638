//! Writing `torch.save` archives: what `torch.load` (and so nnU-Net's
//! predictor) reads, from plain Rust values.
//!
//! The archive is the one PyTorch ≥ 1.6 writes (see the module docs of
//! [`crate::io::torch`]): stored (uncompressed) zip entries
//! `<name>/data.pkl`, `<name>/byteorder` (`little`), one
//! `<name>/data/<key>` per tensor (raw little-endian f32, 64-byte aligned
//! as PyTorch aligns them, so `torch.load(mmap=True)` works) and
//! `<name>/version` (`3`). The pickle is protocol 2 and uses only what
//! `torch.load(weights_only=True)` accepts: built-in containers and
//! scalars, `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`
//! and `torch.FloatStorage`. The output is deterministic (entry times are
//! the zip epoch), so the same values give the same bytes.

use crate::{Error, Result};
use std::io::{Cursor, Write};
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A Python value for [`write_torch_file`].
#[derive(Clone, Debug, PartialEq)]
pub enum SaveValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `list`.
    List(Vec<SaveValue>),
    /// A `tuple`.
    Tuple(Vec<SaveValue>),
    /// A `dict` (insertion order kept).
    Dict(Vec<(SaveValue, SaveValue)>),
    /// A `collections.OrderedDict` (what `state_dict()` returns).
    OrderedDict(Vec<(SaveValue, SaveValue)>),
    /// A contiguous CPU float32 tensor.
    Tensor {
        /// Its shape.
        shape: Vec<usize>,
        /// Its values, row-major.
        values: Vec<f32>,
    },
}

impl SaveValue {
    /// A `str`.
    pub fn str(text: impl Into<String>) -> SaveValue {
        SaveValue::Str(text.into())
    }

    /// A dict with string keys.
    pub fn dict<K: Into<String>>(entries: impl IntoIterator<Item = (K, SaveValue)>) -> SaveValue {
        SaveValue::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (SaveValue::Str(k.into()), v))
                .collect(),
        )
    }

    /// The Python value `json.loads` would give for `json` (objects become
    /// dicts, arrays lists; integers that fit i64 stay ints).
    pub fn from_json(json: &serde_json::Value) -> SaveValue {
        use serde_json::Value;
        match json {
            Value::Null => SaveValue::None,
            Value::Bool(b) => SaveValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SaveValue::Int(i),
                None => SaveValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => SaveValue::Str(s.clone()),
            Value::Array(items) => {
                SaveValue::List(items.iter().map(SaveValue::from_json).collect())
            }
            Value::Object(map) => SaveValue::Dict(
                map.iter()
                    .map(|(k, v)| (SaveValue::Str(k.clone()), SaveValue::from_json(v)))
                    .collect(),
            ),
        }
    }
}

// Pickle protocol 2 opcodes.
const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const BINFLOAT: u8 = b'G';
const BINUNICODE: u8 = b'X';
const EMPTY_LIST: u8 = b']';
const APPENDS: u8 = b'e';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const EMPTY_DICT: u8 = b'}';
const SETITEMS: u8 = b'u';
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const BINPERSID: u8 = b'Q';

/// Pickles values, collecting each tensor's bytes as a storage.
struct Pickler {
    out: Vec<u8>,
    storages: Vec<Vec<u8>>,
}

impl Pickler {
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.out.push(BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, i: i64) {
        if let Ok(small) = i32::try_from(i) {
            self.out.push(BININT);
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            self.out.push(LONG1);
            self.out.push(8);
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    fn tuple_of_ints(&mut self, values: &[usize]) -> Result<()> {
        self.out.push(MARK);
        for &v in values {
            let v = i64::try_from(v).map_err(|_| Error::invalid("tensor size exceeds i64"))?;
            self.int(v);
        }
        self.out.push(TUPLE);
        Ok(())
    }

    fn ordered_dict_call(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(EMPTY_TUPLE);
        self.out.push(REDUCE);
    }

    fn value(&mut self, v: &SaveValue, depth: usize) -> Result<()> {
        if depth > 100 {
            return Err(Error::invalid("torch.save: values nested deeper than 100"));
        }
        match v {
            SaveValue::None => self.out.push(NONE),
            SaveValue::Bool(b) => self.out.push(if *b { NEWTRUE } else { NEWFALSE }),
            SaveValue::Int(i) => self.int(*i),
            SaveValue::Float(f) => {
                self.out.push(BINFLOAT);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            SaveValue::Str(s) => self.str(s),
            SaveValue::List(items) => {
                self.out.push(EMPTY_LIST);
                if !items.is_empty() {
                    self.out.push(MARK);
                    for item in items {
                        self.value(item, depth + 1)?;
                    }
                    self.out.push(APPENDS);
                }
            }
            SaveValue::Tuple(items) => {
                self.out.push(MARK);
                for item in items {
                    self.value(item, depth + 1)?;
                }
                self.out.push(TUPLE);
            }
            SaveValue::Dict(entries) | SaveValue::OrderedDict(entries) => {
                if matches!(v, SaveValue::OrderedDict(_)) {
                    self.ordered_dict_call();
                } else {
                    self.out.push(EMPTY_DICT);
                }
                if !entries.is_empty() {
                    self.out.push(MARK);
                    for (k, val) in entries {
                        self.value(k, depth + 1)?;
                        self.value(val, depth + 1)?;
                    }
                    self.out.push(SETITEMS);
                }
            }
            SaveValue::Tensor { shape, values } => {
                let count: usize = shape.iter().product();
                if count != values.len() {
                    return Err(Error::invalid(format!(
                        "torch.save: tensor of shape {shape:?} with {} values",
                        values.len()
                    )));
                }
                let key = self.storages.len().to_string();
                self.storages
                    .push(values.iter().flat_map(|x| x.to_le_bytes()).collect());
                self.global("torch._utils", "_rebuild_tensor_v2");
                self.out.push(MARK);
                // Persistent id: ('storage', torch.FloatStorage, key, 'cpu', numel).
                self.out.push(MARK);
                self.str("storage");
                self.global("torch", "FloatStorage");
                self.str(&key);
                self.str("cpu");
                self.int(count as i64);
                self.out.push(TUPLE);
                self.out.push(BINPERSID);
                self.int(0);
                self.tuple_of_ints(shape)?;
                let mut stride = vec![1usize; shape.len()];
                for d in (0..shape.len().saturating_sub(1)).rev() {
                    stride[d] = stride[d + 1] * shape[d + 1];
                }
                self.tuple_of_ints(&stride)?;
                self.out.push(NEWFALSE);
                self.ordered_dict_call();
                self.out.push(TUPLE);
                self.out.push(REDUCE);
            }
        }
        Ok(())
    }
}

/// The bytes of `torch.save(root)` with archive folder `name` (PyTorch
/// uses the file's stem; any name loads).
pub fn torch_save_bytes(root: &SaveValue, name: &str) -> Result<Vec<u8>> {
    if name.is_empty() || name.contains(['/', '\\']) {
        return Err(Error::invalid(format!(
            "torch.save: archive name {name:?} must be one path component"
        )));
    }
    let mut pickler = Pickler {
        out: vec![PROTO, 2],
        storages: Vec::new(),
    };
    pickler.value(root, 0)?;
    pickler.out.push(STOP);
    let zip_err = |e: zip::result::ZipError| Error::Internal(format!("torch.save zip: {e}"));
    let io_err = |e: std::io::Error| Error::Internal(format!("torch.save zip: {e}"));
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(pickler.storages.iter().map(Vec::len).sum::<usize>() >= u32::MAX as usize)
        .with_alignment(64);
    let mut entry = |path: String, bytes: &[u8]| -> Result<()> {
        zip.start_file(path, options).map_err(zip_err)?;
        zip.write_all(bytes).map_err(io_err)
    };
    entry(format!("{name}/data.pkl"), &pickler.out)?;
    entry(format!("{name}/byteorder"), b"little")?;
    for (key, bytes) in pickler.storages.iter().enumerate() {
        entry(format!("{name}/data/{key}"), bytes)?;
    }
    entry(format!("{name}/version"), b"3\n")?;
    Ok(zip.finish().map_err(zip_err)?.into_inner())
}

/// Writes `torch.save(root)` to `path` (atomically: a failed write leaves
/// any old file as it was). The archive folder is the file's stem, as
/// PyTorch names it.
pub fn write_torch_file(path: &Path, root: &SaveValue) -> Result<()> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("archive");
    let bytes = torch_save_bytes(root, stem)?;
    crate::io::atomic::write_atomically(path, |file| file.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::torch::{read_torch_bytes, state_dict_tensors, PickleValue};

    fn sample() -> SaveValue {
        SaveValue::dict([
            (
                "network_weights",
                SaveValue::OrderedDict(vec![
                    (
                        SaveValue::str("conv.weight"),
                        SaveValue::Tensor {
                            shape: vec![2, 1, 3],
                            values: vec![1.0, -2.5, 3.0, 0.125, 5.0, -6.0],
                        },
                    ),
                    (
                        SaveValue::str("conv.bias"),
                        SaveValue::Tensor {
                            shape: vec![2],
                            values: vec![0.5, 7.0],
                        },
                    ),
                ]),
            ),
            ("current_epoch", SaveValue::Int(1000)),
            ("big", SaveValue::Int(1 << 40)),
            ("ratio", SaveValue::Float(0.25)),
            ("trainer_name", SaveValue::str("nnUNetTrainer")),
            (
                "inference_allowed_mirroring_axes",
                SaveValue::Tuple(vec![SaveValue::Int(0), SaveValue::Int(1)]),
            ),
            (
                "init_args",
                SaveValue::from_json(&serde_json::json!({"configuration": "2d", "fold": 0,
                    "plans": {"patch_size": [64, 64], "spacing": [1.5, 1.5], "x": null, "ok": true}})),
            ),
            ("empty", SaveValue::List(vec![])),
        ])
    }

    #[test]
    fn claims_own_reader_reads_what_the_writer_wrote() {
        let bytes = torch_save_bytes(&sample(), "checkpoint_final").unwrap();
        assert_eq!(
            bytes,
            torch_save_bytes(&sample(), "checkpoint_final").unwrap(),
            "deterministic"
        );
        let root = read_torch_bytes(&bytes).unwrap();
        let weights = state_dict_tensors(root.get("network_weights").unwrap()).unwrap();
        assert_eq!(weights.len(), 2);
        assert_eq!(weights[0].0, "conv.weight");
        assert_eq!(weights[0].1.dims(), [2, 1, 3]);
        assert_eq!(
            weights[0].1.to_vec().unwrap(),
            [1.0, -2.5, 3.0, 0.125, 5.0, -6.0]
        );
        assert_eq!(
            root.get("current_epoch").and_then(PickleValue::as_i64),
            Some(1000)
        );
        assert_eq!(root.get("big").and_then(PickleValue::as_i64), Some(1 << 40));
        assert_eq!(root.get("ratio").and_then(PickleValue::as_f64), Some(0.25));
        let args = root.get("init_args").unwrap();
        assert_eq!(
            args.get("configuration").and_then(PickleValue::as_str),
            Some("2d")
        );
        assert!(
            matches!(root.get("inference_allowed_mirroring_axes"), Some(PickleValue::Tuple(t)) if t.len() == 2)
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = SaveValue::Tensor {
            shape: vec![3],
            values: vec![1.0],
        };
        assert!(torch_save_bytes(&bad, "x").is_err());
        assert!(torch_save_bytes(&SaveValue::None, "a/b").is_err());
    }
}
