//! [`PickleValue`]: the Python objects a checkpoint holds, as plain data.

use super::tensor::TorchTensor;

/// A value read from a checkpoint's pickle. Python objects map onto the
/// variants below; nothing is ever imported or executed — a class or
/// function is only named ([`PickleValue::Global`]) and calling one that
/// the reader does not interpret yields a placeholder
/// ([`PickleValue::Opaque`]) that keeps its name for messages.
#[derive(Clone, Debug)]
pub enum PickleValue {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int` (ints beyond 64 bits become `Opaque { name: "builtins.int" }`).
    Int(i64),
    /// A `float` (numpy float scalars too).
    Float(f64),
    /// A `str`.
    Str(String),
    /// `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    /// A `list` (sets and frozensets are read as lists too).
    List(Vec<PickleValue>),
    /// A `tuple` (or `torch.Size`).
    Tuple(Vec<PickleValue>),
    /// A `dict` or `collections.OrderedDict`: entries in insertion order,
    /// each key once.
    Dict(Vec<(PickleValue, PickleValue)>),
    /// A tensor (or `nn.Parameter`) rebuilt from a storage of the archive.
    Tensor(TorchTensor),
    /// A reference to a Python global that was not called, such as
    /// `torch.float32`; `name` is `"module.qualname"`.
    Global {
        /// `"module.qualname"`.
        name: String,
    },
    /// The result of calling (or instantiating) a global the reader does
    /// not interpret, e.g. `torch.device('cpu')` or `os.system(...)`: never
    /// run, only recorded. `name` is the global's `"module.qualname"`.
    Opaque {
        /// `"module.qualname"` of the callable.
        name: String,
    },
}

impl PickleValue {
    /// The value under string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&PickleValue> {
        match self {
            PickleValue::Dict(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PickleValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer of an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PickleValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number of a `Float` or `Int`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PickleValue::Float(f) => Some(*f),
            PickleValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The truth value of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            PickleValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a `List` or `Tuple`.
    pub fn as_seq(&self) -> Option<&[PickleValue]> {
        match self {
            PickleValue::List(items) | PickleValue::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a `Dict`.
    pub fn as_dict(&self) -> Option<&[(PickleValue, PickleValue)]> {
        match self {
            PickleValue::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The tensor of a `Tensor`.
    pub fn as_tensor(&self) -> Option<&TorchTensor> {
        match self {
            PickleValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// What kind of value this is, for messages (`"dict"`, `"float32
    /// tensor"`, ``"`torch.device` object"``, …).
    pub fn kind(&self) -> String {
        match self {
            PickleValue::None => "None".into(),
            PickleValue::Bool(_) => "bool".into(),
            PickleValue::Int(_) => "int".into(),
            PickleValue::Float(_) => "float".into(),
            PickleValue::Str(_) => "str".into(),
            PickleValue::Bytes(_) => "bytes".into(),
            PickleValue::List(_) => "list".into(),
            PickleValue::Tuple(_) => "tuple".into(),
            PickleValue::Dict(_) => "dict".into(),
            PickleValue::Tensor(t) => format!("{} tensor", t.dtype.name()),
            PickleValue::Global { name } => format!("reference to `{name}`"),
            PickleValue::Opaque { name } => format!("`{name}` object"),
        }
    }

    /// The value as JSON: dicts with string keys become objects (other
    /// scalar keys are written as strings; dicts with non-scalar keys become
    /// arrays of `[key, value]` pairs), tuples arrays, non-finite floats the
    /// strings `"NaN"`, `"Infinity"`, `"-Infinity"`, and tensors, bytes,
    /// globals and opaque objects descriptive strings such as
    /// `"tensor(float32, [2, 3])"`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            PickleValue::None => Value::Null,
            PickleValue::Bool(b) => Value::Bool(*b),
            PickleValue::Int(i) => Value::from(*i),
            PickleValue::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Value::Number(n),
                None if f.is_nan() => Value::from("NaN"),
                None if *f > 0.0 => Value::from("Infinity"),
                None => Value::from("-Infinity"),
            },
            PickleValue::Str(s) => Value::from(s.as_str()),
            PickleValue::Bytes(b) => Value::from(format!("bytes({})", b.len())),
            PickleValue::List(items) | PickleValue::Tuple(items) => {
                Value::Array(items.iter().map(PickleValue::to_json).collect())
            }
            PickleValue::Dict(entries) => {
                let keys: Option<Vec<String>> =
                    entries.iter().map(|(k, _)| k.key_string()).collect();
                match keys {
                    Some(keys) => Value::Object(
                        keys.into_iter()
                            .zip(entries)
                            .map(|(k, (_, v))| (k, v.to_json()))
                            .collect(),
                    ),
                    None => Value::Array(
                        entries
                            .iter()
                            .map(|(k, v)| Value::Array(vec![k.to_json(), v.to_json()]))
                            .collect(),
                    ),
                }
            }
            PickleValue::Tensor(t) => {
                Value::from(format!("tensor({}, {:?})", t.dtype.name(), t.shape))
            }
            PickleValue::Global { name } => Value::from(format!("<{name}>")),
            PickleValue::Opaque { name } => Value::from(format!("<{name}(...)>")),
        }
    }

    /// A scalar key written as a JSON object key (as Python's `json` does).
    fn key_string(&self) -> Option<String> {
        match self {
            PickleValue::Str(s) => Some(s.clone()),
            PickleValue::Int(i) => Some(i.to_string()),
            PickleValue::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
            PickleValue::None => Some("null".into()),
            PickleValue::Float(f) => Some(f.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_and_json() {
        let v = PickleValue::Dict(vec![
            (PickleValue::Str("a".into()), PickleValue::Int(3)),
            (
                PickleValue::Str("b".into()),
                PickleValue::Tuple(vec![PickleValue::Float(0.5), PickleValue::None]),
            ),
            (
                PickleValue::Str("dev".into()),
                PickleValue::Opaque {
                    name: "torch.device".into(),
                },
            ),
            (PickleValue::Str("nan".into()), PickleValue::Float(f64::NAN)),
        ]);
        assert_eq!(v.get("a").and_then(PickleValue::as_i64), Some(3));
        assert_eq!(v.get("a").and_then(PickleValue::as_f64), Some(3.0));
        assert_eq!(
            v.get("b").and_then(PickleValue::as_seq).map(<[_]>::len),
            Some(2)
        );
        assert!(v.get("c").is_none());
        assert_eq!(v.get("dev").unwrap().kind(), "`torch.device` object");
        assert_eq!(
            v.to_json(),
            serde_json::json!({"a": 3, "b": [0.5, null], "dev": "<torch.device(...)>", "nan": "NaN"})
        );
        let int_keys = PickleValue::Dict(vec![(PickleValue::Int(0), PickleValue::Bool(true))]);
        assert_eq!(int_keys.to_json(), serde_json::json!({"0": true}));
        let tuple_keys = PickleValue::Dict(vec![(PickleValue::Tuple(vec![]), PickleValue::Int(1))]);
        assert_eq!(tuple_keys.to_json(), serde_json::json!([[[], 1]]));
    }
}
