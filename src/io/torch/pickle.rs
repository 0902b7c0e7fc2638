//! A pickle virtual machine for the data subset checkpoints use.
//!
//! It interprets opcodes of protocols 2–5 that build data (numbers,
//! strings, bytes, lists, tuples, dicts, sets read as lists), the memo,
//! globals and calls — but a global is only a name, and a call is
//! interpreted only for a fixed list of pure rebuild functions (tensors,
//! parameters, `OrderedDict`, `torch.Size`, `_codecs.encode`, numpy
//! scalars); any other call becomes a named placeholder. Nothing is ever
//! imported or executed.
//!
//! Objects live in an arena and the stack and memo hold indices, so a
//! container filled after it was memoised is seen filled through every
//! reference (as in Python), and nothing recursive runs while unpickling.
//! The final conversion to [`PickleValue`] is bounded in depth (which also
//! stops self-referencing containers) and in total size (which stops memo
//! references from multiplying a value exponentially).

use super::tensor::{TorchDType, TorchStorage, TorchTensor};
use super::value::PickleValue;
use crate::{Error, Result};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// Most objects one pickle may create (a state dict with optimiser state
/// and training logs creates tens of thousands).
const MAX_NODES: usize = 1 << 21;
/// Most items all lists, tuples and dicts may hold together.
const MAX_SLOTS: usize = 1 << 22;
/// Dicts with more entries than this get a hash index of their keys.
const INDEX_AFTER: usize = 8;
/// Keys bigger than this (objects visited, string bytes) are compared by
/// identity, which bounds the cost of every dict insertion.
const KEY_NODES: usize = 32;
const KEY_BYTES: usize = 256;
/// Deepest value stack.
const MAX_STACK: usize = 1 << 20;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Longest integer accepted by LONG1/LONG4, in bytes.
const MAX_LONG_BYTES: usize = 256;
/// Longest `module` or `name` of a global.
const MAX_GLOBAL_LEN: usize = 256;
/// Deepest nesting of the result (Python's own limit is about 1000).
pub(crate) const MAX_DEPTH: usize = 128;
/// Most values in the result (memo references count each time they appear).
const MAX_OUTPUT_VALUES: usize = 1 << 22;
/// Most string and bytes content in the result.
const MAX_OUTPUT_BYTES: usize = 256 << 20;

/// A storage named by a persistent id, with the dtype its class implies
/// (`None` for an untyped storage, whose element count is in bytes).
#[derive(Clone, Debug)]
pub(crate) struct StorageRef {
    pub(crate) storage: Arc<TorchStorage>,
    pub(crate) dtype: Option<TorchDType>,
    pub(crate) class: String,
}

/// Resolves `('storage', class, key, location, numel)` persistent ids.
pub(crate) trait StorageResolver {
    /// The storage `key` of class `class` (`"torch.FloatStorage"`, …) with
    /// `numel` elements; errors are messages.
    fn storage(
        &mut self,
        class: &str,
        key: &str,
        numel: u64,
    ) -> std::result::Result<StorageRef, String>;
}

type Id = u32;
type VmResult<T> = std::result::Result<T, String>;

/// A dict: entries in insertion order plus, once it is big, an index from
/// key fingerprint to entry.
#[derive(Default)]
struct DictNode {
    entries: Vec<(Id, Id)>,
    indexed: bool,
    index: HashMap<u64, u32>,
}

/// What comparing or hashing one key may still visit.
struct KeyBudget {
    nodes: usize,
    bytes: usize,
}

impl KeyBudget {
    /// The budget of `keys` keys (comparing two takes twice one's).
    fn new(keys: usize) -> Self {
        KeyBudget {
            nodes: KEY_NODES * keys,
            bytes: KEY_BYTES * keys,
        }
    }

    /// Takes one object of `bytes` content; false when the key is too big.
    fn take(&mut self, bytes: usize) -> bool {
        if self.nodes == 0 || bytes > self.bytes {
            return false;
        }
        self.nodes -= 1;
        self.bytes -= bytes;
        true
    }
}

/// A key in the form Python compares it (`True == 1 == 1.0`).
enum KeyForm<'n> {
    Int(i64),
    Float(u64),
    Text(u8, &'n [u8]),
    Tuple(&'n [Id]),
    None,
}

/// An object under construction.
enum Node {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Box<DictNode>),
    Global(String),
    Opaque(String),
    Tensor(Box<TorchTensor>),
    Storage(Box<StorageRef>),
    NumpyDType { code: String, big_endian: bool },
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Global(_) => "global",
            Node::Opaque(_) => "opaque object",
            Node::Tensor(_) => "tensor",
            Node::Storage(_) => "storage",
            Node::NumpyDType { .. } => "numpy dtype",
        }
    }
}

/// Name of an opcode, for messages.
fn opcode_name(op: u8) -> &'static str {
    match op {
        0x80 => "PROTO",
        0x95 => "FRAME",
        b'.' => "STOP",
        b'(' => "MARK",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'N' => "NONE",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'M' => "BININT2",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'G' => "BINFLOAT",
        b'X' => "BINUNICODE",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        0x96 => "BYTEARRAY8",
        b'}' => "EMPTY_DICT",
        b']' => "EMPTY_LIST",
        b')' => "EMPTY_TUPLE",
        0x8f => "EMPTY_SET",
        b't' => "TUPLE",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        b'l' => "LIST",
        b'd' => "DICT",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        0x94 => "MEMOIZE",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'R' => "REDUCE",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'b' => "BUILD",
        b'Q' => "BINPERSID",
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'p' => "PUT",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        0x82..=0x84 => "EXT",
        0x97 | 0x98 => "out-of-band buffer",
        _ => "unknown",
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    resolver: &'a mut dyn StorageResolver,
    view_bytes: u64,
    max_view_bytes: u64,
    slots: usize,
    /// Randomly keyed, so a crafted file cannot make its keys collide.
    hash_state: RandomState,
}

/// Unpickles `data`; `max_view_bytes` caps the bytes all tensor views
/// together may cover (views of one storage count each time).
pub(crate) fn unpickle(
    data: &[u8],
    resolver: &mut dyn StorageResolver,
    max_view_bytes: u64,
) -> Result<PickleValue> {
    let mut vm = Vm {
        data,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        resolver,
        view_bytes: 0,
        max_view_bytes,
        slots: 0,
        hash_state: RandomState::new(),
    };
    let root = vm.run()?;
    let mut budget = Budget::default();
    vm.convert(root, 0, &mut budget)
        .map_err(|m| Error::format(format!("data.pkl: {m}")))
}

#[derive(Default)]
struct Budget {
    values: usize,
    bytes: usize,
}

impl<'a> Vm<'a> {
    fn run(&mut self) -> Result<Id> {
        loop {
            let at = self.pos;
            let Some(&op) = self.data.get(at) else {
                return Err(Error::format(format!(
                    "data.pkl: ends at byte {at} without a STOP opcode"
                )));
            };
            self.pos += 1;
            match self.step(op) {
                Ok(Some(root)) => return Ok(root),
                Ok(None) => {}
                Err(msg) => {
                    return Err(Error::format(format!(
                        "data.pkl: byte {at}, opcode {} (0x{op:02x}): {msg}",
                        opcode_name(op)
                    )))
                }
            }
        }
    }

    // ---- input ----

    fn bytes(&mut self, n: usize) -> VmResult<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(format!(
                "needs {n} bytes, only {} left",
                data.len().saturating_sub(self.pos)
            ));
        };
        let out = &data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> VmResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> VmResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> VmResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64_len(&mut self) -> VmResult<usize> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("length {n} is too large"))
    }

    fn i32_len(&mut self) -> VmResult<usize> {
        let n = i32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    /// A newline-terminated identifier (GLOBAL's module and name).
    fn line(&mut self) -> VmResult<&'a str> {
        let data: &'a [u8] = self.data;
        let rest = data.get(self.pos..).unwrap_or(&[]);
        let len = rest
            .iter()
            .take(MAX_GLOBAL_LEN + 1)
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("no newline within {MAX_GLOBAL_LEN} bytes"))?;
        let line = &rest[..len];
        self.pos += len + 1;
        let text = std::str::from_utf8(line).map_err(|_| "global name is not UTF-8".to_string())?;
        check_identifier(text)?;
        Ok(text)
    }

    // ---- stack, arena, memo ----

    fn alloc(&mut self, node: Node) -> VmResult<Id> {
        if self.nodes.len() >= MAX_NODES {
            return Err(format!("more than {MAX_NODES} objects"));
        }
        self.nodes.push(node);
        Ok((self.nodes.len() - 1) as Id)
    }

    fn push(&mut self, id: Id) -> VmResult<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("stack deeper than {MAX_STACK}"));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, node: Node) -> VmResult<()> {
        let id = self.alloc(node)?;
        self.push(id)
    }

    /// The stack may not be popped below the innermost MARK.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> VmResult<Id> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> VmResult<Id> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".into());
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> VmResult<Vec<Id>> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn node(&self, id: Id) -> VmResult<&Node> {
        self.nodes
            .get(id as usize)
            .ok_or_else(|| format!("object {id} does not exist"))
    }

    fn node_mut(&mut self, id: Id) -> VmResult<&mut Node> {
        self.nodes
            .get_mut(id as usize)
            .ok_or_else(|| format!("object {id} does not exist"))
    }

    fn memo_put(&mut self, index: u32) -> VmResult<()> {
        let top = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(format!("more than {MAX_MEMO} memo entries"));
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> VmResult<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| format!("memo entry {index} was never stored"))?;
        self.push(id)
    }

    // ---- one opcode ----

    /// Runs one opcode; `Some(root)` at STOP.
    fn step(&mut self, op: u8) -> VmResult<Option<Id>> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} (at most 5 is known)"));
                }
            }
            0x95 => {
                // Framing only groups opcodes for buffered reading.
                let n = self.u64_len()?;
                if n > self.data.len() - self.pos {
                    return Err(format!("frame of {n} bytes runs past the end"));
                }
            }
            b'.' => return Ok(Some(self.pop()?)),
            b'(' => {
                if self.marks.len() >= MAX_STACK {
                    return Err("too many MARKs".into());
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.push(top)?;
            }
            b'N' => self.push_new(Node::None)?,
            0x88 => self.push_new(Node::Bool(true))?,
            0x89 => self.push_new(Node::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push_new(Node::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = self.u8()?;
                self.push_new(Node::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push_new(Node::Int(i64::from(v)))?;
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    usize::from(self.u8()?)
                } else {
                    self.i32_len()?
                };
                if n > MAX_LONG_BYTES {
                    return Err(format!("integer of {n} bytes (at most {MAX_LONG_BYTES})"));
                }
                let bytes = self.bytes(n)?;
                let node = match decode_long(bytes) {
                    Some(v) => Node::Int(v),
                    None => Node::Opaque("builtins.int".into()),
                };
                self.push_new(node)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push_new(Node::Float(v))?;
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.u32()? as usize,
                    0x8c => usize::from(self.u8()?),
                    _ => self.u64_len()?,
                };
                let bytes = self.bytes(n)?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| "string is not valid UTF-8".to_string())?;
                self.push_new(Node::Str(s.to_string()))?;
            }
            b'T' | b'U' => {
                // Python 2 `str`: text when it is UTF-8, bytes otherwise.
                let n = if op == b'T' {
                    self.i32_len()?
                } else {
                    usize::from(self.u8()?)
                };
                let bytes = self.bytes(n)?;
                let node = match std::str::from_utf8(bytes) {
                    Ok(s) => Node::Str(s.to_string()),
                    Err(_) => Node::Bytes(bytes.to_vec()),
                };
                self.push_new(node)?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.u32()? as usize,
                    b'C' => usize::from(self.u8()?),
                    _ => self.u64_len()?,
                };
                let bytes = self.bytes(n)?.to_vec();
                self.push_new(Node::Bytes(bytes))?;
            }
            b'}' => self.push_new(Node::Dict(Box::default()))?,
            b']' | 0x8f => self.push_new(Node::List(Vec::new()))?,
            b')' => self.push_new(Node::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.take_slots(items.len())?;
                self.push_new(Node::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.take_slots(n)?;
                self.push_new(Node::Tuple(items))?;
            }
            b'l' | 0x91 => {
                let items = self.pop_mark()?;
                self.take_slots(items.len())?;
                self.push_new(Node::List(items))?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                let dict = self.alloc(Node::Dict(Box::default()))?;
                self.set_items(dict, &items)?;
                self.push(dict)?;
            }
            b'a' => {
                let value = self.pop()?;
                let list = self.top()?;
                self.append(list, &[value])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.append(list, &items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.set_items(dict, &[key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let dict = self.top()?;
                self.set_items(dict, &items)?;
            }
            b'q' => {
                let index = u32::from(self.u8()?);
                self.memo_put(index)?;
            }
            b'r' => {
                let index = self.u32()?;
                self.memo_put(index)?;
            }
            0x94 => {
                let index =
                    u32::try_from(self.memo.len()).map_err(|_| "memo overflow".to_string())?;
                self.memo_put(index)?;
            }
            b'h' => {
                let index = u32::from(self.u8()?);
                self.memo_get(index)?;
            }
            b'j' => {
                let index = self.u32()?;
                self.memo_get(index)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push_new(Node::Global(format!("{module}.{name}")))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Node::Str(module), Node::Str(name)) = (self.node(module)?, self.node(name)?)
                else {
                    return Err("module and name must be strings".into());
                };
                check_identifier(module)?;
                check_identifier(name)?;
                let global = format!("{module}.{name}");
                self.push_new(Node::Global(global))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.call(callable, args, 0)?;
                self.push_new(result)?;
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let result = self.call(class, args, 0)?;
                self.push_new(result)?;
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.push_new(Node::Storage(Box::new(storage)))?;
            }
            _ => return Err("opcode not supported by this reader".into()),
        }
        Ok(None)
    }

    fn append(&mut self, list: Id, items: &[Id]) -> VmResult<()> {
        self.take_slots(items.len())?;
        match self.node_mut(list)? {
            Node::List(existing) => {
                existing.extend_from_slice(items);
                Ok(())
            }
            // Appends to an object the reader does not model are dropped with it.
            Node::Opaque(_) => Ok(()),
            other => Err(format!("cannot append to a {}", other.kind())),
        }
    }

    /// Counts `n` more container items against [`MAX_SLOTS`].
    fn take_slots(&mut self, n: usize) -> VmResult<()> {
        self.slots = self.slots.saturating_add(n);
        if self.slots > MAX_SLOTS {
            return Err(format!(
                "more than {MAX_SLOTS} items in lists, tuples and dicts"
            ));
        }
        Ok(())
    }

    fn set_items(&mut self, dict: Id, items: &[Id]) -> VmResult<()> {
        if items.len() % 2 != 0 {
            return Err(format!(
                "odd number ({}) of dict keys and values",
                items.len()
            ));
        }
        match self.node(dict)? {
            Node::Dict(_) => {}
            // Items of an object the reader does not model are dropped with it.
            Node::Opaque(_) => return Ok(()),
            other => return Err(format!("cannot set items of a {}", other.kind())),
        }
        self.take_slots(items.len() / 2)?;
        for pair in items.chunks_exact(2) {
            let (key, value) = (pair[0], pair[1]);
            let fingerprint = self.fingerprint(key)?;
            let existing = self.find_key(dict, key, fingerprint)?;
            if let Some(i) = existing {
                if let Node::Dict(d) = self.node_mut(dict)? {
                    if let Some(entry) = d.entries.get_mut(i) {
                        entry.1 = value;
                    }
                }
                continue;
            }
            // A big dict gets an index, built once from the keys so far.
            let (indexed, len) = match self.node(dict)? {
                Node::Dict(d) => (d.indexed, d.entries.len()),
                _ => return Err("dict changed kind".into()),
            };
            let mut prints = Vec::new();
            if !indexed && len + 1 > INDEX_AFTER {
                let keys: Vec<Id> = match self.node(dict)? {
                    Node::Dict(d) => d.entries.iter().map(|&(k, _)| k).collect(),
                    _ => Vec::new(),
                };
                for (i, k) in keys.into_iter().enumerate() {
                    prints.push((self.fingerprint(k)?, i));
                }
            }
            let Node::Dict(d) = self.node_mut(dict)? else {
                return Err("dict changed kind".into());
            };
            if !indexed && len + 1 > INDEX_AFTER {
                d.indexed = true;
                for (print, i) in prints {
                    d.index.entry(print).or_insert(i as u32);
                }
            }
            if d.indexed {
                d.index.entry(fingerprint).or_insert(d.entries.len() as u32);
            }
            d.entries.push((key, value));
        }
        Ok(())
    }

    /// The entry of `dict` whose key equals `key` (as Python compares keys).
    fn find_key(&self, dict: Id, key: Id, print: u64) -> VmResult<Option<usize>> {
        let Node::Dict(d) = self.node(dict)? else {
            return Ok(None);
        };
        if !d.indexed {
            for (i, &(k, _)) in d.entries.iter().enumerate() {
                if self.keys_equal(k, key, &mut KeyBudget::new(2))? {
                    return Ok(Some(i));
                }
            }
            return Ok(None);
        }
        match d.index.get(&print) {
            Some(&i) => {
                let i = i as usize;
                let candidate = d.entries.get(i).map(|&(k, _)| k);
                match candidate {
                    Some(k) if self.keys_equal(k, key, &mut KeyBudget::new(2))? => Ok(Some(i)),
                    // A fingerprint collision: distinct keys, both kept.
                    _ => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    /// How key `id` compares, within `budget`; `None` when it is compared
    /// by identity (unhashable, or too big to compare cheaply).
    fn key_form(&self, id: Id, budget: &mut KeyBudget) -> VmResult<Option<KeyForm<'_>>> {
        let node = self.node(id)?;
        let size = match node {
            Node::Str(s) | Node::Global(s) => s.len(),
            Node::Bytes(b) => b.len(),
            _ => 0,
        };
        if !budget.take(size) {
            return Ok(None);
        }
        Ok(match node {
            Node::None => Some(KeyForm::None),
            Node::Bool(b) => Some(KeyForm::Int(i64::from(*b))),
            Node::Int(i) => Some(KeyForm::Int(*i)),
            Node::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(KeyForm::Int(*f as i64)),
            Node::Float(f) if f.is_nan() => None,
            Node::Float(f) => Some(KeyForm::Float(f.to_bits())),
            Node::Str(s) => Some(KeyForm::Text(0, s.as_bytes())),
            Node::Bytes(b) => Some(KeyForm::Text(1, b)),
            Node::Global(g) => Some(KeyForm::Text(2, g.as_bytes())),
            Node::Tuple(items) => Some(KeyForm::Tuple(items)),
            _ => None,
        })
    }

    /// A hash of key `id` consistent with [`Self::keys_equal`]: of its
    /// value, or of its identity when it is compared by identity.
    fn fingerprint(&self, id: Id) -> VmResult<u64> {
        let mut hasher = self.hash_state.build_hasher();
        if self.hash_key(id, &mut hasher, &mut KeyBudget::new(1))? {
            return Ok(hasher.finish());
        }
        let mut hasher = self.hash_state.build_hasher();
        hasher.write_u8(7);
        hasher.write_u32(id);
        Ok(hasher.finish())
    }

    fn hash_key(&self, id: Id, hasher: &mut impl Hasher, budget: &mut KeyBudget) -> VmResult<bool> {
        let Some(form) = self.key_form(id, budget)? else {
            return Ok(false);
        };
        match form {
            KeyForm::None => hasher.write_u8(0),
            KeyForm::Int(i) => {
                hasher.write_u8(1);
                hasher.write_i64(i);
            }
            KeyForm::Float(bits) => {
                hasher.write_u8(2);
                hasher.write_u64(bits);
            }
            KeyForm::Text(kind, bytes) => {
                hasher.write_u8(3 + kind);
                hasher.write(bytes);
                hasher.write_usize(bytes.len());
            }
            KeyForm::Tuple(items) => {
                hasher.write_u8(6);
                hasher.write_usize(items.len());
                for &item in items {
                    if !self.hash_key(item, hasher, budget)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Python key equality of two hashable keys (identity when too big).
    fn keys_equal(&self, a: Id, b: Id, budget: &mut KeyBudget) -> VmResult<bool> {
        if a == b {
            return Ok(true);
        }
        let (Some(fa), Some(fb)) = (self.key_form(a, budget)?, self.key_form(b, budget)?) else {
            return Ok(false);
        };
        Ok(match (fa, fb) {
            (KeyForm::None, KeyForm::None) => true,
            (KeyForm::Int(x), KeyForm::Int(y)) => x == y,
            (KeyForm::Float(x), KeyForm::Float(y)) => x == y,
            (KeyForm::Text(kx, x), KeyForm::Text(ky, y)) => kx == ky && x == y,
            (KeyForm::Tuple(x), KeyForm::Tuple(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (&p, &q) in x.iter().zip(y) {
                    if !self.keys_equal(p, q, budget)? {
                        return Ok(false);
                    }
                }
                true
            }
            _ => false,
        })
    }

    fn build(&mut self, target: Id, state: Id) -> VmResult<()> {
        let big_endian = match self.node(state)? {
            Node::Tuple(items) => match items.get(1).map(|&i| self.node(i)).transpose()? {
                Some(Node::Str(order)) => Some(order == ">"),
                _ => None,
            },
            _ => None,
        };
        match self.node_mut(target)? {
            Node::NumpyDType { big_endian: be, .. } => {
                if let Some(b) = big_endian {
                    *be = b;
                }
                Ok(())
            }
            // Attribute state (an OrderedDict's `_metadata`, a Parameter's
            // hooks, an opaque object's fields) is not data we model.
            Node::Dict(_) | Node::Opaque(_) | Node::Tensor(_) | Node::Global(_) => Ok(()),
            other => Err(format!("cannot BUILD a {}", other.kind())),
        }
    }

    // ---- calls ----

    fn args_of(&self, args: Id) -> VmResult<Vec<Id>> {
        match self.node(args)? {
            Node::Tuple(items) => Ok(items.clone()),
            other => Err(format!(
                "call arguments are a {}, not a tuple",
                other.kind()
            )),
        }
    }

    fn arg(&self, args: &[Id], i: usize, func: &str) -> VmResult<&Node> {
        let id = *args.get(i).ok_or_else(|| {
            format!(
                "{func} needs at least {} arguments, got {}",
                i + 1,
                args.len()
            )
        })?;
        self.node(id)
    }

    /// What calling `callable(*args)` yields, without running anything.
    fn call(&mut self, callable: Id, args: Id, depth: usize) -> VmResult<Node> {
        let name = match self.node(callable)? {
            Node::Global(name) => name.clone(),
            // Calling the result of an opaque call stays opaque.
            Node::Opaque(name) => return Ok(Node::Opaque(name.clone())),
            other => return Err(format!("cannot call a {}", other.kind())),
        };
        let args = self.args_of(args)?;
        match name.as_str() {
            "collections.OrderedDict" | "builtins.dict" => {
                let dict = self.alloc(Node::Dict(Box::default()))?;
                if let Some(&items) = args.first() {
                    let pairs = self.pairs_of(items)?;
                    self.set_items(dict, &pairs)?;
                }
                Ok(self.take_dict(dict))
            }
            "collections.defaultdict" => Ok(Node::Dict(Box::default())),
            "torch._utils._rebuild_tensor" => self.rebuild_tensor(&args, &name, None),
            "torch._utils._rebuild_tensor_v2" => self.rebuild_tensor(&args, &name, None),
            "torch._utils._rebuild_tensor_v3" => {
                let dtype = match self.arg(&args, 6, &name)? {
                    Node::Global(g) => TorchDType::from_global(g)
                        .ok_or_else(|| format!("unsupported tensor dtype {g}"))?,
                    other => return Err(format!("{name}: dtype is a {}", other.kind())),
                };
                self.rebuild_tensor(&args, &name, Some(dtype))
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match self.arg(&args, 0, &name)? {
                    Node::Tensor(t) => Ok(Node::Tensor(t.clone())),
                    other => Err(format!("{name}: data is a {}, not a tensor", other.kind())),
                }
            }
            "torch._tensor._rebuild_from_type_v2" => {
                // (func, type, args, state): the tensor is func(*args).
                let (Some(&func), Some(&inner)) = (args.first(), args.get(2)) else {
                    return Err(format!("{name} needs (func, type, args, state)"));
                };
                if depth > 4 {
                    return Err(format!("{name} nested too deeply"));
                }
                self.call(func, inner, depth + 1)
            }
            "torch.Size" => match args.first() {
                None => Ok(Node::Tuple(Vec::new())),
                Some(&items) => match self.node(items)? {
                    Node::Tuple(v) | Node::List(v) => Ok(Node::Tuple(v.clone())),
                    other => Err(format!("torch.Size of a {}", other.kind())),
                },
            },
            "builtins.set" | "builtins.frozenset" => match args.first() {
                None => Ok(Node::List(Vec::new())),
                Some(&items) => match self.node(items)? {
                    Node::Tuple(v) | Node::List(v) => Ok(Node::List(v.clone())),
                    other => Err(format!("{name} of a {}", other.kind())),
                },
            },
            "_codecs.encode" | "builtins.bytes" | "builtins.bytearray" => self.encode(&args, &name),
            "numpy.dtype" => match self.arg(&args, 0, &name)? {
                Node::Str(code) => Ok(Node::NumpyDType {
                    code: code.clone(),
                    big_endian: false,
                }),
                _ => Ok(Node::Opaque(name)),
            },
            "numpy.core.multiarray.scalar" | "numpy._core.multiarray.scalar" => {
                Ok(self.numpy_scalar(&args))
            }
            "copyreg._reconstructor" => match args.first().map(|&c| self.node(c)).transpose()? {
                Some(Node::Global(class)) => Ok(Node::Opaque(class.clone())),
                _ => Ok(Node::Opaque(name)),
            },
            _ => Ok(Node::Opaque(name)),
        }
    }

    /// Moves a dict built in the arena out (its slot becomes None).
    fn take_dict(&mut self, dict: Id) -> Node {
        match self.nodes.get_mut(dict as usize) {
            Some(slot) => std::mem::replace(slot, Node::None),
            None => Node::Dict(Box::default()),
        }
    }

    /// `[(k, v), …]` (a list or tuple of pairs) as a flat key/value list.
    fn pairs_of(&self, items: Id) -> VmResult<Vec<Id>> {
        let list = match self.node(items)? {
            Node::List(v) | Node::Tuple(v) => v,
            Node::Dict(d) => return Ok(d.entries.iter().flat_map(|&(k, v)| [k, v]).collect()),
            other => return Err(format!("dict built from a {}", other.kind())),
        };
        let mut flat = Vec::with_capacity(list.len() * 2);
        for &pair in list {
            match self.node(pair)? {
                Node::Tuple(kv) | Node::List(kv) if kv.len() == 2 => flat.extend_from_slice(kv),
                _ => return Err("dict built from something other than (key, value) pairs".into()),
            }
        }
        Ok(flat)
    }

    /// `_codecs.encode(text, 'latin1')`, as protocol 2 pickles `bytes`.
    fn encode(&self, args: &[Id], name: &str) -> VmResult<Node> {
        let Some(&first) = args.first() else {
            return Ok(Node::Bytes(Vec::new()));
        };
        let encoding = match args.get(1).map(|&e| self.node(e)).transpose()? {
            Some(Node::Str(e)) => e.to_ascii_lowercase().replace(['-', '_'], ""),
            _ => "latin1".into(),
        };
        match self.node(first)? {
            Node::Bytes(b) => Ok(Node::Bytes(b.clone())),
            Node::Str(s) if encoding == "latin1" || encoding == "iso88591" => s
                .chars()
                .map(|c| {
                    u8::try_from(u32::from(c)).map_err(|_| format!("{name}: {c:?} is not latin-1"))
                })
                .collect::<VmResult<Vec<u8>>>()
                .map(Node::Bytes),
            Node::Str(s) if encoding == "utf8" || encoding == "ascii" => {
                Ok(Node::Bytes(s.as_bytes().to_vec()))
            }
            _ => Ok(Node::Opaque(name.to_string())),
        }
    }

    /// `numpy.core.multiarray.scalar(dtype, bytes)` as a number, when the
    /// dtype is a plain number type.
    fn numpy_scalar(&self, args: &[Id]) -> Node {
        let opaque = || Node::Opaque("numpy.core.multiarray.scalar".into());
        let (Some(Ok(Node::NumpyDType { code, big_endian })), Some(Ok(Node::Bytes(raw)))) = (
            args.first().map(|&i| self.node(i)),
            args.get(1).map(|&i| self.node(i)),
        ) else {
            return opaque();
        };
        let code = code.trim_start_matches(['<', '>', '=', '|']);
        let mut b = raw.clone();
        if *big_endian {
            b.reverse();
        }
        let fixed = |n: usize| -> Option<[u8; 8]> {
            (b.len() == n).then(|| {
                let mut a = [0u8; 8];
                a[..n].copy_from_slice(&b);
                a
            })
        };
        let node = match code {
            "f8" => fixed(8).map(|a| Node::Float(f64::from_le_bytes(a))),
            "f4" => fixed(4)
                .map(|a| Node::Float(f64::from(f32::from_le_bytes([a[0], a[1], a[2], a[3]])))),
            "f2" => fixed(2).map(|a| Node::Float(half::f16::from_le_bytes([a[0], a[1]]).to_f64())),
            "i8" => fixed(8).map(|a| Node::Int(i64::from_le_bytes(a))),
            "i4" => {
                fixed(4).map(|a| Node::Int(i64::from(i32::from_le_bytes([a[0], a[1], a[2], a[3]]))))
            }
            "i2" => fixed(2).map(|a| Node::Int(i64::from(i16::from_le_bytes([a[0], a[1]])))),
            "i1" => fixed(1).map(|a| Node::Int(i64::from(a[0] as i8))),
            "u8" => fixed(8).and_then(|a| i64::try_from(u64::from_le_bytes(a)).ok().map(Node::Int)),
            "u4" => {
                fixed(4).map(|a| Node::Int(i64::from(u32::from_le_bytes([a[0], a[1], a[2], a[3]]))))
            }
            "u2" => fixed(2).map(|a| Node::Int(i64::from(u16::from_le_bytes([a[0], a[1]])))),
            "u1" => fixed(1).map(|a| Node::Int(i64::from(a[0]))),
            "b1" => fixed(1).map(|a| Node::Bool(a[0] != 0)),
            _ => None,
        };
        node.unwrap_or_else(opaque)
    }

    /// A non-negative integer argument.
    fn index_arg(&self, node: &Node, what: &str) -> VmResult<usize> {
        match node {
            Node::Int(v) => usize::try_from(*v).map_err(|_| format!("{what} {v} is negative")),
            other => Err(format!("{what} is a {}, not an int", other.kind())),
        }
    }

    fn dims_arg(&self, node: &Node, what: &str) -> VmResult<Vec<usize>> {
        let items = match node {
            Node::Tuple(v) | Node::List(v) => v,
            other => return Err(format!("{what} is a {}, not a tuple", other.kind())),
        };
        if items.len() > super::tensor::MAX_DIMS {
            return Err(format!("{what} has {} dimensions", items.len()));
        }
        items
            .iter()
            .map(|&i| self.index_arg(self.node(i)?, what))
            .collect()
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
    /// hooks[, metadata])` (and v1, v3 with `dtype` as the 7th argument).
    fn rebuild_tensor(
        &mut self,
        args: &[Id],
        name: &str,
        dtype: Option<TorchDType>,
    ) -> VmResult<Node> {
        let storage = match self.arg(args, 0, name)? {
            Node::Storage(s) => StorageRef::clone(s),
            other => return Err(format!("{name}: storage is a {}", other.kind())),
        };
        let offset = self.index_arg(self.arg(args, 1, name)?, "storage offset")?;
        let shape = self.dims_arg(self.arg(args, 2, name)?, "size")?;
        let strides = self.dims_arg(self.arg(args, 3, name)?, "stride")?;
        let dtype = dtype
            .or(storage.dtype)
            .ok_or_else(|| format!("{name}: untyped storage {} without a dtype", storage.class))?;
        let (tensor, numel) = TorchTensor::new(dtype, shape, strides, offset, storage.storage)
            .map_err(|m| format!("{name}: {m}"))?;
        let bytes = (numel as u64).saturating_mul(dtype.size_in_bytes() as u64);
        self.view_bytes = self.view_bytes.saturating_add(bytes);
        if self.view_bytes > self.max_view_bytes {
            return Err(format!(
                "tensor views cover {} bytes, more than the {} the storages allow",
                self.view_bytes, self.max_view_bytes
            ));
        }
        Ok(Node::Tensor(Box::new(tensor)))
    }

    /// `('storage', class, key, location, numel)`.
    fn persistent_load(&mut self, pid: Id) -> VmResult<StorageRef> {
        let Node::Tuple(items) = self.node(pid)? else {
            return Err("persistent id is not a tuple".into());
        };
        let field = |i: usize| -> VmResult<&Node> {
            let id = *items
                .get(i)
                .ok_or("persistent id has fewer than 5 fields")?;
            self.node(id)
        };
        match field(0)? {
            Node::Str(tag) if tag == "storage" => {}
            _ => return Err("persistent id is not a ('storage', …) tuple".into()),
        }
        let class = match field(1)? {
            Node::Global(c) => c.clone(),
            other => return Err(format!("storage class is a {}", other.kind())),
        };
        let key = match field(2)? {
            Node::Str(k) => k.clone(),
            other => return Err(format!("storage key is a {}", other.kind())),
        };
        let numel = match field(4)? {
            Node::Int(n) => {
                u64::try_from(*n).map_err(|_| format!("storage {key}: negative size {n}"))?
            }
            other => return Err(format!("storage size is a {}", other.kind())),
        };
        self.resolver.storage(&class, &key, numel)
    }

    // ---- result ----

    fn convert(&self, id: Id, depth: usize, budget: &mut Budget) -> VmResult<PickleValue> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "values nested deeper than {MAX_DEPTH} levels (or a container that holds itself)"
            ));
        }
        budget.values += 1;
        if budget.values > MAX_OUTPUT_VALUES {
            return Err(format!("more than {MAX_OUTPUT_VALUES} values"));
        }
        let mut count_bytes = |n: usize| -> VmResult<()> {
            budget.bytes = budget.bytes.saturating_add(n);
            if budget.bytes > MAX_OUTPUT_BYTES {
                return Err(format!("more than {MAX_OUTPUT_BYTES} bytes of strings"));
            }
            Ok(())
        };
        Ok(match self.node(id)? {
            Node::None => PickleValue::None,
            Node::Bool(b) => PickleValue::Bool(*b),
            Node::Int(i) => PickleValue::Int(*i),
            Node::Float(f) => PickleValue::Float(*f),
            Node::Str(s) => {
                count_bytes(s.len())?;
                PickleValue::Str(s.clone())
            }
            Node::Bytes(b) => {
                count_bytes(b.len())?;
                PickleValue::Bytes(b.clone())
            }
            Node::Global(g) => PickleValue::Global { name: g.clone() },
            Node::Opaque(n) => PickleValue::Opaque { name: n.clone() },
            Node::Tensor(t) => PickleValue::Tensor(TorchTensor::clone(t)),
            Node::Storage(s) => PickleValue::Opaque {
                name: s.class.clone(),
            },
            Node::NumpyDType { .. } => PickleValue::Opaque {
                name: "numpy.dtype".into(),
            },
            Node::List(items) => PickleValue::List(self.convert_all(items, depth, budget)?),
            Node::Tuple(items) => PickleValue::Tuple(self.convert_all(items, depth, budget)?),
            Node::Dict(d) => {
                let mut out = Vec::with_capacity(d.entries.len().min(1 << 16));
                for &(k, v) in &d.entries {
                    out.push((
                        self.convert(k, depth + 1, budget)?,
                        self.convert(v, depth + 1, budget)?,
                    ));
                }
                PickleValue::Dict(out)
            }
        })
    }

    fn convert_all(
        &self,
        items: &[Id],
        depth: usize,
        budget: &mut Budget,
    ) -> VmResult<Vec<PickleValue>> {
        let mut out = Vec::with_capacity(items.len().min(1 << 16));
        for &item in items {
            out.push(self.convert(item, depth + 1, budget)?);
        }
        Ok(out)
    }
}

/// A Python dotted identifier (module or qualified name).
fn check_identifier(text: &str) -> VmResult<()> {
    let ok = !text.is_empty()
        && text.len() <= MAX_GLOBAL_LEN
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!("{text:?} is not a Python identifier"))
    }
}

/// A little-endian two's-complement integer, `None` beyond 64 bits.
fn decode_long(bytes: &[u8]) -> Option<i64> {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    // Bytes past the eighth must only repeat the sign.
    if bytes.len() > 8 {
        let (low, high) = bytes.split_at(8);
        if high.iter().any(|&b| b != fill) || (low[7] & 0x80 != 0) != negative {
            return None;
        }
    }
    let mut a = [fill; 8];
    for (slot, &b) in a.iter_mut().zip(bytes) {
        *slot = b;
    }
    Some(i64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoStorages;

    impl StorageResolver for NoStorages {
        fn storage(
            &mut self,
            class: &str,
            key: &str,
            _numel: u64,
        ) -> std::result::Result<StorageRef, String> {
            Err(format!("no storage {key} of {class}"))
        }
    }

    fn run(pickle: &[u8]) -> Result<PickleValue> {
        unpickle(pickle, &mut NoStorages, 0)
    }

    #[test]
    fn longs_decode_and_cap() {
        assert_eq!(decode_long(&[]), Some(0));
        assert_eq!(decode_long(&[0xff]), Some(-1));
        assert_eq!(decode_long(&[0x00, 0x80]), Some(-32768));
        assert_eq!(decode_long(&[0xff, 0x00]), Some(255));
        assert_eq!(decode_long(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None); // 2^63
        assert_eq!(decode_long(&[0xff; 9]), Some(-1));
        assert_eq!(decode_long(&i64::MIN.to_le_bytes()), Some(i64::MIN));
    }

    #[test]
    fn memo_references_see_later_fills() {
        // d = {}; memo[0] = d; l = [d]; d['a'] = 1 (after l was built) -> [d, d]
        let p = b"\x80\x02}q\x00]q\x01h\x00ah\x00X\x01\x00\x00\x00aK\x01sh\x01h\x00a.";
        // stack: dict, list; APPEND dict into list; then get dict, set 'a'=1 on it
        // (it is on top), then the list gets the dict a second time.
        let v = run(p).unwrap();
        let PickleValue::List(items) = v else {
            panic!("{v:?}")
        };
        assert_eq!(items.len(), 2);
        for item in &items {
            assert_eq!(item.get("a").and_then(PickleValue::as_i64), Some(1));
        }
    }

    #[test]
    fn set_items_replace_existing_keys_in_place() {
        // {'a': 1, 'b': 2, 'a': 3} -> a=3 first, b=2 second; True and 1 are one key
        let p = b"}(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02X\x01\x00\x00\x00aK\x03\x88K\x04K\x01K\x05u.";
        let v = run(p).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(v.get("a").and_then(PickleValue::as_i64), Some(3));
        assert_eq!(d[0].0.as_str(), Some("a"));
        assert_eq!(d[2].1.as_i64(), Some(5));
    }

    #[test]
    fn big_dicts_index_their_keys() {
        // 100 int keys, then keys 50 (as 50.0) and 7 set again, then a tuple
        // key twice: 101 entries.
        let mut p = b"}(".to_vec();
        for i in 0..100u8 {
            p.extend_from_slice(&[b'K', i, b'K', 0]);
        }
        p.extend_from_slice(b"G");
        p.extend_from_slice(&50.0f64.to_be_bytes());
        p.extend_from_slice(b"K\x01K\x07K\x02");
        p.extend_from_slice(b"K\x01K\x02\x86K\x03K\x01K\x02\x86K\x04u.");
        let v = run(&p).unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.len(), 101);
        assert_eq!(d[50].1.as_i64(), Some(1));
        assert_eq!(d[7].1.as_i64(), Some(2));
        assert_eq!(d[100].1.as_i64(), Some(4));
        assert_eq!(d[99].1.as_i64(), Some(0));
        // A key too big to compare cheaply is still the same key by identity.
        let mut p = b"}X\x00\x04\x00\x00".to_vec();
        p.extend(std::iter::repeat_n(b'k', 1024));
        p.extend_from_slice(b"q\x00K\x01sh\x00K\x02s.");
        let v = run(&p).unwrap();
        assert_eq!(v.as_dict().unwrap().len(), 1);
        assert_eq!(v.as_dict().unwrap()[0].1.as_i64(), Some(2));
    }

    #[test]
    fn globals_are_never_run() {
        let p = b"cos\nsystem\nX\x02\x00\x00\x00lsq\x00\x85R.";
        match run(p).unwrap() {
            PickleValue::Opaque { name } => assert_eq!(name, "os.system"),
            other => panic!("{other:?}"),
        }
        let v = run(b"\x8c\x05torch\x8c\x07float32\x93.").unwrap();
        assert!(matches!(v, PickleValue::Global { ref name } if name == "torch.float32"));
        assert!(run(b"cos\nsys tem\n.").is_err());
    }

    #[test]
    fn protocol_2_bytes_and_numpy_scalars_decode() {
        let bytes = b"c_codecs\nencode\nX\x02\x00\x00\x00\xc3\xa9X\x06\x00\x00\x00latin1\x86R.";
        assert!(matches!(run(bytes).unwrap(), PickleValue::Bytes(ref b) if b == &[0xe9]));
        let mut p =
            b"cnumpy._core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R"
                .to_vec();
        p.extend_from_slice(
            b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        );
        p.extend_from_slice(b"C\x08");
        p.extend_from_slice(&0.375f64.to_le_bytes());
        p.extend_from_slice(b"\x86R.");
        assert_eq!(run(&p).unwrap().as_f64(), Some(0.375));
    }

    #[test]
    fn malformed_pickles_fail_cleanly() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80\x02",
            b"\x80\x09N.",
            b"h\x05.",
            b"t.",
            b"N\x85\x85\x86.",
            b"Ne.",
            b"X\xff\xff\xff\xff.",
            b"\x8b\xff\xff\xff\x7f.",
            b"\x8a\xff.",
            b"K\x01K\x02R.",
            b"]N\x85b.",
            b"\x00.",
            b"(N\x86.",
            b"]N]sK\x01.",
        ];
        for case in cases {
            let err = run(case).unwrap_err();
            assert!(matches!(err, Error::Format(_)), "{case:?}: {err}");
        }
    }

    #[test]
    fn self_reference_and_deep_nesting_are_bounded() {
        // l = []; l.append(l)
        let err = run(b"]q\x00h\x00a.").unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
        let mut deep = vec![b']'; 1000];
        deep.extend(std::iter::repeat_n(b'a', 999));
        deep.push(b'.');
        assert!(run(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested deeper"));
        // 40 levels of [x, x] through the memo: 2^40 values if expanded.
        let mut doubling = b"Nq\x00".to_vec();
        for _ in 0..40 {
            doubling.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        doubling.push(b'.');
        assert!(run(&doubling)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }
}
