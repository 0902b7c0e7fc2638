//! The PyTorch checkpoint reader (`claim::io::torch`) and `claim import`.
//!
//! Fixtures under tests/fixtures/torch/ were written by the real
//! `torch.save` (tools/make_torch_fixtures.py), each with an
//! `.expected.json` of what PyTorch itself reports. The second half feeds
//! the reader hostile and corrupted archives: every one must end in a clean
//! `Error::Format`, never a panic or a huge allocation.

use claim::io::torch::{
    read_torch_bytes, read_torch_file, state_dict_tensors, PickleValue, TorchTensor,
};
use claim::rng::Rng;
use claim::Error;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    claim::testing::fixture_path("torch").join(name)
}

fn expected(stem: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{stem}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Checks one tensor against PyTorch's description of it.
fn check_tensor(key: &str, t: &TorchTensor, want: &Value) {
    assert_eq!(
        t.dtype.name(),
        want["dtype"].as_str().unwrap(),
        "{key}: dtype"
    );
    assert_eq!(t.shape, usizes(&want["shape"]), "{key}: shape");
    assert_eq!(t.strides(), usizes(&want["stride"]), "{key}: stride");
    assert_eq!(
        t.storage_offset() as u64,
        want["storage_offset"].as_u64().unwrap(),
        "{key}: offset"
    );
    let values = want["values"].as_array().unwrap();
    assert_eq!(t.numel(), values.len(), "{key}: numel");
    if t.dtype.is_float() {
        // JSON decimals parse to within an ulp of the f64 Python printed, so
        // compare f64 to 1e-15 relative and everything narrower exactly.
        let got = t.to_f64_vec().unwrap();
        let want: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-15 * w.abs(), "{key}: {g} != {w}");
        }
        let as_f32 = t.to_f32_tensor().unwrap();
        assert_eq!(as_f32.dims(), t.shape.as_slice(), "{key}: f32 shape");
        let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_eq!(
            as_f32.as_slice().unwrap(),
            want32.as_slice(),
            "{key}: f32 values"
        );
    } else {
        let got = t.to_i64_vec().unwrap();
        let want: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got, want, "{key}: values");
        assert!(
            t.to_f32_tensor().is_err(),
            "{key}: an integer tensor is not f32 material"
        );
    }
}

/// The tensors of a dict value, by string key, in order.
fn tensors(v: &PickleValue) -> Vec<(String, TorchTensor)> {
    v.as_dict()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_tensor().unwrap().clone(),
            )
        })
        .collect()
}

fn check_state_dict(value: &PickleValue, want: &Value) {
    let got = tensors(value);
    let order: Vec<&str> = want["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        order
    );
    for (key, t) in &got {
        check_tensor(key, t, &want["tensors"][key.as_str()]);
    }
    // Storage sharing is exactly PyTorch's.
    let groups: Vec<Vec<&str>> = want["sharing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            g.as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect()
        })
        .collect();
    assert!(!groups.is_empty());
    let group_of = |key: &str| groups.iter().position(|g| g.contains(&key));
    for (ka, ta) in &got {
        for (kb, tb) in &got {
            let same = ka == kb || (group_of(ka).is_some() && group_of(ka) == group_of(kb));
            assert_eq!(ta.shares_storage_with(tb), same, "{ka} / {kb}");
        }
    }
}

#[test]
fn state_dict_reads_exactly_as_pytorch_saved_it() {
    let want = expected("state_dict");
    let from_file = read_torch_file(&fixture("state_dict.pt")).unwrap();
    check_state_dict(&from_file, &want);
    let bytes = std::fs::read(fixture("state_dict.pt")).unwrap();
    check_state_dict(&read_torch_bytes(&bytes).unwrap(), &want);
    // The same archive with deflated entries.
    check_state_dict(
        &read_torch_file(&fixture("state_dict_deflate.pt")).unwrap(),
        &want,
    );

    let t = tensors(&from_file);
    let get = |k: &str| &t.iter().find(|(key, _)| key == k).unwrap().1;
    assert!(!get("transposed").is_contiguous());
    assert!(get("offset_view").is_contiguous());
    assert_eq!(get("scalar").shape, Vec::<usize>::new());
    assert_eq!(get("empty").numel(), 0);
}

#[test]
fn state_dict_tensors_keeps_float_tensors_in_order_and_shares_aliases() {
    let want = expected("state_dict");
    let value = read_torch_file(&fixture("state_dict.pt")).unwrap();
    let sd = state_dict_tensors(&value).unwrap();
    let float_keys: Vec<&str> = want["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .filter(|k| {
            want["tensors"][*k]["dtype"]
                .as_str()
                .unwrap()
                .starts_with("float")
                || *k == "bfloat"
        })
        .collect();
    assert_eq!(
        sd.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        float_keys
    );
    assert!(!float_keys.contains(&"bn.num_batches_tracked") && !float_keys.contains(&"ushort"));
    for (key, tensor) in &sd {
        let w = &want["tensors"][key.as_str()];
        assert_eq!(tensor.dims(), usizes(&w["shape"]).as_slice(), "{key}");
        let values: Vec<f32> = w["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(tensor.as_slice().unwrap(), values.as_slice(), "{key}");
    }
    let find = |k: &str| &sd.iter().find(|(key, _)| key == k).unwrap().1;
    assert!(std::ptr::eq(
        find("encoder.weight").storage(),
        find("decoder.encoder.weight").storage()
    ));
    assert!(!std::ptr::eq(
        find("shared.first").storage(),
        find("shared.second").storage()
    ));

    // Not a state dict, or a non-tensor entry: errors that say where.
    let err = state_dict_tensors(&PickleValue::List(vec![])).unwrap_err();
    assert!(
        matches!(err, Error::Format(ref m) if m.contains("found a list")),
        "{err}"
    );
    let ckpt = read_torch_file(&fixture("lefusion.pt")).unwrap();
    let err = state_dict_tensors(&ckpt).unwrap_err().to_string();
    assert!(
        err.contains("`model`") && err.contains("not a tensor"),
        "{err}"
    );
}

#[test]
fn lefusion_checkpoint_reads_model_ema_and_step() {
    let want = expected("lefusion");
    let ckpt = read_torch_file(&fixture("lefusion.pt")).unwrap();
    assert_eq!(ckpt.get("step").and_then(PickleValue::as_i64), Some(10));
    for part in ["model", "ema"] {
        let sd = ckpt.get(part).unwrap();
        let got = tensors(sd);
        assert_eq!(got.len(), want[part].as_object().unwrap().len());
        for (key, t) in &got {
            check_tensor(key, t, &want[part][key.as_str()]);
        }
    }
}

#[test]
fn nnunet_checkpoint_reads_weights_optimizer_and_plans() {
    let want = expected("nnunet_checkpoint");
    let ckpt = read_torch_file(&fixture("nnunet_checkpoint.pth")).unwrap();
    let weights = tensors(ckpt.get("network_weights").unwrap());
    assert_eq!(
        weights.len(),
        want["network_weights"].as_object().unwrap().len()
    );
    for (key, t) in &weights {
        check_tensor(key, t, &want["network_weights"][key.as_str()]);
    }
    let sd = state_dict_tensors(ckpt.get("network_weights").unwrap()).unwrap();
    assert_eq!(
        sd.len(),
        weights.len() - 1,
        "num_batches_tracked is skipped"
    );

    // SGD state: {'state': {0: {'momentum_buffer': tensor}, …}, 'param_groups': [...]}.
    let opt = ckpt.get("optimizer_state").unwrap();
    let state = opt.get("state").unwrap().as_dict().unwrap();
    assert_eq!(
        state.len(),
        want["momentum_buffers"].as_object().unwrap().len()
    );
    for (index, entry) in state {
        let i = index.as_i64().unwrap().to_string();
        let buffer = entry
            .get("momentum_buffer")
            .and_then(PickleValue::as_tensor)
            .unwrap();
        check_tensor(&i, buffer, &want["momentum_buffers"][i.as_str()]);
    }
    assert_eq!(
        opt.get("param_groups").unwrap().to_json(),
        want["param_groups"]
    );

    let init = ckpt.get("init_args").unwrap();
    for key in ["plans", "configuration", "fold", "dataset_json"] {
        assert_eq!(
            init.get(key).unwrap().to_json(),
            want["init_args"][key],
            "{key}"
        );
    }
    match init.get("device").unwrap() {
        PickleValue::Opaque { name } => assert_eq!(name, "torch.device"),
        other => panic!("device read as {other:?}"),
    }
    assert_eq!(
        ckpt.get("trainer_name").and_then(PickleValue::as_str),
        want["trainer_name"].as_str()
    );
    let axes = ckpt.get("inference_allowed_mirroring_axes").unwrap();
    assert!(matches!(axes, PickleValue::Tuple(_)));
    assert_eq!(axes.to_json(), want["inference_allowed_mirroring_axes"]);
    assert_eq!(
        ckpt.get("current_epoch").and_then(PickleValue::as_i64),
        Some(2)
    );
    assert!(matches!(
        ckpt.get("grad_scaler_state"),
        Some(PickleValue::None)
    ));
    // numpy float64 scalars (nnU-Net's logger) decode to floats.
    assert_eq!(
        ckpt.get("_best_ema").and_then(PickleValue::as_f64),
        want["best_ema"].as_f64()
    );
    let dice = ckpt
        .get("logging")
        .and_then(|l| l.get("mean_fg_dice"))
        .unwrap()
        .to_json();
    assert_eq!(dice, want["mean_fg_dice"]);
    // The whole checkpoint as JSON: tensors and opaque objects are described.
    let json = ckpt.to_json();
    assert_eq!(json["init_args"]["device"], "<torch.device(...)>");
    assert!(json["network_weights"]["conv.weight"]
        .as_str()
        .unwrap()
        .starts_with("tensor(float32"));
}

// ---- claim import ----

fn claim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claim"))
        .args(args)
        .output()
        .expect("the claim binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `(name, shape, values)` of each tensor of a safetensors file, by name.
type NamedValues = Vec<(String, Vec<usize>, Vec<f32>)>;

/// The f32 tensors and the metadata of a safetensors file.
fn read_safetensors(path: &Path) -> (NamedValues, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    (out, meta.metadata().clone().unwrap_or_default())
}

#[test]
fn import_writes_the_diffusion_state_dict_as_f32_safetensors() {
    let want = expected("lefusion");
    let dir = tempfile::tempdir().unwrap();
    for (part, flags) in [("model", vec![]), ("ema", vec!["--ema"])] {
        let out = dir.path().join(format!("{part}.safetensors"));
        let src = fixture("lefusion.pt");
        let mut args = vec!["import", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend(flags);
        let run = claim(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(String::from_utf8_lossy(&run.stdout).contains(&format!("from '{part}'")));
        let (tensors, meta) = read_safetensors(&out);
        let mut keys: Vec<&String> = want[part].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(tensors.iter().map(|t| &t.0).collect::<Vec<_>>(), keys);
        for (name, shape, values) in &tensors {
            let w = &want[part][name.as_str()];
            assert_eq!(*shape, usizes(&w["shape"]), "{name}");
            let expected: Vec<f32> = w["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(*values, expected, "{name}");
        }
        assert_eq!(
            meta.get("format").map(String::as_str),
            Some("claim-diffusion")
        );
        assert_eq!(meta.get("source").map(String::as_str), Some("lefusion.pt"));
        assert_eq!(meta.get("part").map(String::as_str), Some(part));
        // The library's weight loader takes the file (prefixes stripped, schedule dropped).
        let weights = claim::nn::Weights::load(&out).unwrap();
        drop(weights);
    }
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn import_takes_a_bare_state_dict_and_leaves_integer_tensors_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sd.safetensors");
    let run = claim(&[
        "import",
        fixture("state_dict.pt").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        stdout.contains("bare state dict") && stdout.contains("bn.num_batches_tracked"),
        "{stdout}"
    );
    let (tensors, _) = read_safetensors(&out);
    let sd = state_dict_tensors(&read_torch_file(&fixture("state_dict.pt")).unwrap()).unwrap();
    assert_eq!(tensors.len(), sd.len());
    for (name, shape, values) in &tensors {
        let t = &sd.iter().find(|(k, _)| k == name).unwrap().1;
        assert_eq!(shape.as_slice(), t.dims(), "{name}");
        assert_eq!(values.as_slice(), t.as_slice().unwrap(), "{name}");
    }
}

#[test]
fn import_refuses_bad_requests_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ckpt.pt");
    std::fs::copy(fixture("lefusion.pt"), &src).unwrap();
    let before = std::fs::read(&src).unwrap();
    let s = src.to_str().unwrap();
    let run = claim(&["import", s, "-o", s]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("refusing to overwrite"),
        "{}",
        stderr(&run)
    );
    assert_eq!(std::fs::read(&src).unwrap(), before);

    let out = dir.path().join("o.safetensors");
    let o = out.to_str().unwrap();
    let run = claim(&["import", s, "-o", o, "--fold", "0"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"definitely not a checkpoint, just some text").unwrap();
    let run = claim(&["import", junk.to_str().unwrap(), "-o", o]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("error: ") && stderr(&run).contains("junk.pt"),
        "{}",
        stderr(&run)
    );
    // --ema on a checkpoint without EMA weights.
    let run = claim(&[
        "import",
        fixture("state_dict.pt").to_str().unwrap(),
        "-o",
        o,
        "--ema",
    ]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    assert!(stderr(&run).contains("no 'ema'"), "{}", stderr(&run));
    assert!(!out.exists());
}

// ---- hostile and corrupted archives ----

/// The entries of a zip (names and uncompressed bytes), read through its
/// central directory; test-side, for fixtures whose entries are stored.
fn unzip_stored(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |p: usize| u16::from_le_bytes([zip[p], zip[p + 1]]) as usize;
    let u32_at =
        |p: usize| u32::from_le_bytes([zip[p], zip[p + 1], zip[p + 2], zip[p + 3]]) as usize;
    let eocd = zip.len() - 22;
    assert_eq!(u32_at(eocd), 0x0605_4b50);
    let (count, mut p) = (u16_at(eocd + 10), u32_at(eocd + 16));
    let mut out = Vec::new();
    for _ in 0..count {
        let (size, name_len) = (u32_at(p + 20), u16_at(p + 28));
        let (extra, comment, local) = (u16_at(p + 30), u16_at(p + 32), u32_at(p + 42));
        let name = String::from_utf8(zip[p + 46..p + 46 + name_len].to_vec()).unwrap();
        let data = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        out.push((name, zip[data..data + size].to_vec()));
        p += 46 + name_len + extra + comment;
    }
    out
}

/// A stored zip of `entries` with correct CRCs.
fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let mut common = Vec::new();
        common.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, method, time, date
        common.extend_from_slice(&crc.sum().to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&[0, 0]); // extra length
        out.extend_from_slice(&[0x50, 0x4b, 3, 4, 20, 0]);
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&[0x50, 0x4b, 1, 2, 20, 0, 20, 0]);
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&[0x50, 0x4b, 5, 6, 0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A one-storage archive around `pickle`.
fn archive(pickle: Vec<u8>, storage: Vec<u8>) -> Vec<u8> {
    zip_stored(&[
        ("archive/data.pkl".into(), pickle),
        ("archive/byteorder".into(), b"little".to_vec()),
        ("archive/data/0".into(), storage),
        ("archive/version".into(), b"3\n".to_vec()),
    ])
}

fn short_str(s: &str) -> Vec<u8> {
    let mut out = vec![0x8c, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

fn long1(v: i64) -> Vec<u8> {
    let mut out = vec![0x8a, 8];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

fn tuple(items: &[i64]) -> Vec<u8> {
    let mut out = vec![b'('];
    for &i in items {
        out.extend(long1(i));
    }
    out.push(b't');
    out
}

/// `{'t': _rebuild_tensor_v2(('storage', <class>, '0', 'cpu', numel), offset, size, stride, False, OrderedDict())}`.
fn tensor_pickle(class: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}'];
    p.extend(short_str("t"));
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    p.extend(short_str("storage"));
    p.extend_from_slice(format!("ctorch\n{class}\n").as_bytes());
    p.extend(short_str("0"));
    p.extend(short_str("cpu"));
    p.extend(long1(numel));
    p.extend_from_slice(b"tQ");
    p.extend(long1(offset));
    p.extend(tuple(size));
    p.extend(tuple(stride));
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtRs.");
    p
}

fn assert_format_error(bytes: &[u8], mentions: &str) {
    match read_torch_bytes(bytes) {
        Err(Error::Format(m)) => assert!(m.contains(mentions), "expected {mentions:?} in: {m}"),
        other => panic!("expected a format error mentioning {mentions:?}, got {other:?}"),
    }
}

/// Reads `bytes` and, when that works, uses every part of the result: no
/// panic either way, and read failures are format errors.
fn exercise(bytes: &[u8]) {
    match read_torch_bytes(bytes) {
        Ok(value) => {
            let _ = value.to_json();
            let _ = state_dict_tensors(&value);
            visit_tensors(&value, &mut |t| {
                let _ = t.to_f64_vec();
            });
        }
        Err(Error::Format(_)) => {}
        Err(other) => panic!("a corrupted archive gave a non-format error: {other}"),
    }
}

fn visit_tensors(v: &PickleValue, f: &mut dyn FnMut(&TorchTensor)) {
    match v {
        PickleValue::Tensor(t) => f(t),
        PickleValue::List(items) | PickleValue::Tuple(items) => {
            items.iter().for_each(|i| visit_tensors(i, f))
        }
        PickleValue::Dict(entries) => entries.iter().for_each(|(k, v)| {
            visit_tensors(k, f);
            visit_tensors(v, f);
        }),
        _ => {}
    }
}

#[test]
fn the_test_archive_builder_makes_readable_checkpoints() {
    let storage: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let v = read_torch_bytes(&archive(
        tensor_pickle("FloatStorage", 6, 1, &[2, 2], &[1, 2]),
        storage,
    ))
    .unwrap();
    let t = v.get("t").and_then(PickleValue::as_tensor).unwrap();
    assert_eq!(t.to_f32_vec().unwrap(), vec![2.0, 4.0, 3.0, 5.0]);
    // And the fixtures survive a round trip through the test-side zip code.
    let bytes = std::fs::read(fixture("state_dict.pt")).unwrap();
    let rebuilt = zip_stored(&unzip_stored(&bytes));
    check_state_dict(
        &read_torch_bytes(&rebuilt).unwrap(),
        &expected("state_dict"),
    );
}

#[test]
fn truncated_archives_fail_cleanly() {
    for name in [
        "state_dict.pt",
        "lefusion.pt",
        "nnunet_checkpoint.pth",
        "state_dict_deflate.pt",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for k in 0..64 {
            let cut = bytes.len() * k / 64;
            match read_torch_bytes(&bytes[..cut]) {
                Err(Error::Format(_)) => {}
                other => panic!("{name} cut at {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let mut rng = Rng::new(5);
    for name in [
        "state_dict.pt",
        "nnunet_checkpoint.pth",
        "state_dict_deflate.pt",
    ] {
        let original = std::fs::read(fixture(name)).unwrap();
        for _ in 0..700 {
            let mut bytes = original.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 + rng.below(255) as u8;
            }
            exercise(&bytes);
        }
    }
}

#[test]
fn mutated_pickles_with_valid_checksums_never_panic() {
    let mut rng = Rng::new(11);
    for name in ["state_dict.pt", "nnunet_checkpoint.pth", "lefusion.pt"] {
        let entries = unzip_stored(&std::fs::read(fixture(name)).unwrap());
        let pkl = entries
            .iter()
            .position(|(n, _)| n.ends_with("/data.pkl"))
            .unwrap();
        for _ in 0..700 {
            let mut entries = entries.clone();
            let data = &mut entries[pkl].1;
            for _ in 0..=rng.below(3) {
                let at = rng.below(data.len() as u64) as usize;
                match rng.below(4) {
                    0 => data[at] ^= 1 + rng.below(255) as u8,
                    1 => data[at] = rng.below(256) as u8,
                    2 => {
                        data.remove(at);
                    }
                    _ => data.insert(at, rng.below(256) as u8),
                }
            }
            exercise(&zip_stored(&entries));
        }
    }
}

#[test]
fn lying_zip_directories_fail_cleanly() {
    let good = archive(tensor_pickle("FloatStorage", 1, 0, &[1], &[1]), vec![0; 4]);
    read_torch_bytes(&good).unwrap();
    let eocd = good.len() - 22;
    let cd = u32::from_le_bytes(good[eocd + 16..eocd + 20].try_into().unwrap()) as usize;

    // Huge entry counts.
    let mut bytes = good.clone();
    bytes[eocd + 8..eocd + 12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert_format_error(&bytes, "entries");
    // An oversized compressed and uncompressed size for the first entry.
    for field in [20usize, 24] {
        let mut bytes = good.clone();
        bytes[cd + field..cd + field + 4].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
        exercise(&bytes);
        assert!(read_torch_bytes(&bytes).is_err());
    }
    // A local header offset past the directory.
    let mut bytes = good.clone();
    bytes[cd + 42..cd + 46].copy_from_slice(&(cd as u32 + 1000).to_le_bytes());
    assert!(read_torch_bytes(&bytes).is_err());
    // Directory offset and size beyond the file.
    let mut bytes = good.clone();
    bytes[eocd + 12..eocd + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_format_error(&bytes, "directory");
    // Duplicate names.
    let dup = zip_stored(&[
        (
            "archive/data.pkl".into(),
            tensor_pickle("FloatStorage", 1, 0, &[1], &[1]),
        ),
        ("archive/data/0".into(), vec![0; 4]),
        ("archive/data/0".into(), vec![0; 4]),
    ]);
    assert_format_error(&dup, "appears twice");
    // A path escaping the archive folder.
    let escape = zip_stored(&[("../data.pkl".into(), b"N.".to_vec())]);
    assert_format_error(&escape, "clean relative path");
    // No data.pkl, two data.pkl, a big-endian archive, the legacy format.
    assert_format_error(
        &zip_stored(&[("a/version".into(), b"3".to_vec())]),
        "not a torch.save",
    );
    let two = zip_stored(&[
        ("a/data.pkl".into(), b"N.".to_vec()),
        ("b/data.pkl".into(), b"N.".to_vec()),
    ]);
    assert_format_error(&two, "two pickles");
    let big = zip_stored(&[
        ("a/data.pkl".into(), b"N.".to_vec()),
        ("a/byteorder".into(), b"big".to_vec()),
    ]);
    assert_format_error(&big, "big-endian");
    assert_format_error(b"\x80\x02}q\x00.", "legacy");
}

#[test]
fn hostile_pickles_fail_cleanly() {
    let empty = Vec::new;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // 100 000 nested lists (Python would hit its recursion limit).
        (
            [
                vec![0x80, 2],
                vec![b']'; 100_000],
                vec![b'a'; 99_999],
                vec![b'.'],
            ]
            .concat(),
            "nested deeper",
        ),
        // A LONG4 and a BINUNICODE claiming gigabytes.
        (b"\x80\x02\x8b\xff\xff\xff\x7f.".to_vec(), "integer of"),
        (b"\x80\x02X\xf0\xff\xff\xff.".to_vec(), "only"),
        (
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.".to_vec(),
            "bytes",
        ),
        // Memo reads of entries never stored.
        (b"\x80\x02j\xff\xff\xff\xff.".to_vec(), "memo entry"),
        (b"\x80\x02Nq\x01h\x02.".to_vec(), "memo entry"),
        // Opcodes outside the subset.
        (b"\x80\x02\xff.".to_vec(), "not supported"),
        (b"\x80\x02I1\n.".to_vec(), "not supported"),
        (b"\x80\x02(cos\nsystem\nS'ls'\ni.".to_vec(), "not supported"),
        // Stack underflow, no STOP.
        (b"\x80\x02a.".to_vec(), "underflow"),
        (b"\x80\x02N".to_vec(), "without a STOP"),
    ];
    for (pickle, mentions) in cases {
        assert_format_error(&archive(pickle, empty()), mentions);
    }
}

#[test]
fn reduce_of_os_system_is_recorded_never_run() {
    let marker = std::env::temp_dir().join(format!("claim-torch-marker-{}", std::process::id()));
    let command = format!("touch {}", marker.display());
    let mut p = b"\x80\x02}".to_vec();
    p.extend(short_str("x"));
    p.extend_from_slice(b"cos\nsystem\n");
    p.extend(short_str(&command));
    p.extend_from_slice(b"\x85Rs");
    p.extend(short_str("y"));
    p.extend_from_slice(b"cbuiltins\neval\n");
    p.extend(short_str("1+1"));
    p.extend_from_slice(b"\x85Rs.");
    let v = read_torch_bytes(&archive(p, Vec::new())).unwrap();
    assert!(matches!(v.get("x"), Some(PickleValue::Opaque { name }) if name == "os.system"));
    assert!(matches!(v.get("y"), Some(PickleValue::Opaque { name }) if name == "builtins.eval"));
    assert!(!marker.exists());
    // As a state dict value it is an error naming the key and the object.
    let err = state_dict_tensors(&v).unwrap_err().to_string();
    assert!(err.contains("`x`") && err.contains("os.system"), "{err}");
}

#[test]
fn tensor_views_outside_their_storage_fail_cleanly() {
    let f32s = |n: usize| vec![0u8; 4 * n];
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        // numel claims more than the entry holds.
        (
            tensor_pickle("FloatStorage", 1 << 40, 0, &[2], &[1]),
            f32s(4),
            "claims",
        ),
        (
            tensor_pickle("FloatStorage", 5, 0, &[2], &[1]),
            f32s(4),
            "claims",
        ),
        (
            tensor_pickle("FloatStorage", -1, 0, &[2], &[1]),
            f32s(4),
            "negative",
        ),
        // Negative size, stride or offset.
        (
            tensor_pickle("FloatStorage", 4, 0, &[-2], &[1]),
            f32s(4),
            "negative",
        ),
        (
            tensor_pickle("FloatStorage", 4, 0, &[2], &[-1]),
            f32s(4),
            "negative",
        ),
        (
            tensor_pickle("FloatStorage", 4, -1, &[2], &[1]),
            f32s(4),
            "negative",
        ),
        // Views reaching past the storage, or overflowing.
        (
            tensor_pickle("FloatStorage", 4, 3, &[2], &[1]),
            f32s(4),
            "reaches element",
        ),
        (
            tensor_pickle("FloatStorage", 4, 0, &[2, 2], &[3, 1]),
            f32s(4),
            "reaches element",
        ),
        (
            tensor_pickle("FloatStorage", 4, 0, &[i64::MAX, i64::MAX], &[0, 0]),
            f32s(4),
            "overflows",
        ),
        (
            tensor_pickle("FloatStorage", 4, 0, &[4], &[i64::MAX]),
            f32s(4),
            "overflows",
        ),
        (
            tensor_pickle("FloatStorage", 4, 0, &[2, 2], &[1]),
            f32s(4),
            "different lengths",
        ),
        // A broadcast view of a tiny storage may not blow up to gigabytes.
        (
            tensor_pickle("FloatStorage", 1, 0, &[1 << 20, 1 << 20], &[0, 0]),
            f32s(1),
            "more than",
        ),
        // Storage classes outside the supported dtypes.
        (
            tensor_pickle("ComplexFloatStorage", 2, 0, &[2], &[1]),
            f32s(4),
            "does not support",
        ),
        // A storage whose entry is missing.
        (
            tensor_pickle("FloatStorage", 4, 0, &[2], &[1])
                .iter()
                .map(|&b| if b == b'0' { b'7' } else { b })
                .collect(),
            f32s(4),
            "no archive entry",
        ),
    ];
    for (pickle, storage, mentions) in cases {
        assert_format_error(&archive(pickle, storage), mentions);
    }
    // A storage entry whose bytes were changed after saving: the error comes
    // when the values are first read, from the CRC check.
    let storage: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bytes = archive(
        tensor_pickle("FloatStorage", 2, 0, &[2], &[1]),
        storage.clone(),
    );
    let at = bytes
        .windows(8)
        .position(|w| w == storage.as_slice())
        .unwrap();
    bytes[at] ^= 0x40;
    let v = read_torch_bytes(&bytes).unwrap();
    let err = v
        .get("t")
        .and_then(PickleValue::as_tensor)
        .unwrap()
        .to_f32_vec()
        .unwrap_err();
    assert!(
        matches!(err, Error::Format(ref m) if m.contains("CRC-32")),
        "{err}"
    );
}

#[test]
fn import_hands_nnunet_checkpoints_and_results_folders_to_the_bundle() {
    let want = expected("nnunet_checkpoint");
    let float_keys: Vec<&String> = want["network_weights"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, t)| t["dtype"].as_str().unwrap().starts_with("float"))
        .map(|(k, _)| k)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // A results folder with two folds (the same checkpoint twice), plans and
    // dataset JSON from the checkpoint's init_args.
    let results = dir.path().join("nnUNetTrainer__nnUNetPlans__2d");
    for fold in ["fold_0", "fold_1"] {
        std::fs::create_dir_all(results.join(fold)).unwrap();
        std::fs::copy(
            fixture("nnunet_checkpoint.pth"),
            results.join(fold).join("checkpoint_final.pth"),
        )
        .unwrap();
    }
    std::fs::write(
        results.join("plans.json"),
        want["init_args"]["plans"].to_string(),
    )
    .unwrap();
    std::fs::write(
        results.join("dataset.json"),
        want["init_args"]["dataset_json"].to_string(),
    )
    .unwrap();

    // The fixture's plans are the minimal ones its checkpoint carries: the
    // network's arch_kwargs lack `conv_op`, so `claim segment` could not
    // load them, and `claim import` refuses them in the same words instead
    // of writing a bundle that cannot be loaded (the successful import of a
    // complete results folder is covered by tests/engine/segmentation.rs).
    let cases: [(&Path, &[&str]); 3] = [
        (&fixture("nnunet_checkpoint.pth"), &[]),
        (&results, &[]),
        (&results, &["--fold", "1"]),
    ];
    for (n, (src, flags)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("nnunet{n}.safetensors"));
        let mut args = vec!["import", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(flags);
        let run = claim(&args);
        assert!(!run.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&run).contains("arch_kwargs"),
            "{args:?}: {}",
            stderr(&run)
        );
        assert!(!out.exists(), "{args:?} wrote a bundle");
    }
    let _ = &float_keys;
    // A complete results folder (real nnU-Net plans) imports, and the
    // bundle it writes is the one `claim segment` loads.
    let tiny =
        claim::testing::fixture_path("nnunet/Dataset990_ClaimTiny/nnUNetTrainer__nnUNetPlans__2d");
    let bundle = dir.path().join("tiny.safetensors");
    let run = claim(&[
        "import",
        tiny.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let (tensors, meta) = read_safetensors(&bundle);
    assert!(!tensors.is_empty());
    assert_eq!(
        meta.get("format").map(String::as_str),
        Some("claim-nnunet-v2")
    );
    claim::segmentation::NnunetBundle::load(&bundle, None).expect("the written bundle loads");
    let o = dir.path().join("x.safetensors");
    let run = claim(&[
        "import",
        results.to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--ema",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(!o.exists());
}

/// What claim writes with `write_torch_file`, PyTorch's own
/// `torch.load(weights_only=True)` reads: the nnU-Net checkpoint shape
/// (an OrderedDict of tensors, ints, floats, strings, tuples, nested
/// dicts from JSON), compared value by value in Python.
#[test]
fn pytorch_loads_what_claim_saves() {
    use claim::io::torch::{write_torch_file, SaveValue};
    let Some(python) = crate::torch_python() else {
        eprintln!("skipped: no Python with torch (set CLAIM_TORCH_PYTHON)");
        return;
    };
    let weights: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let root = SaveValue::dict([
        (
            "network_weights",
            SaveValue::OrderedDict(vec![
                (
                    SaveValue::str("encoder.stages.0.0.convs.0.conv.weight"),
                    SaveValue::Tensor {
                        shape: vec![2, 1, 3, 4],
                        values: weights,
                    },
                ),
                (
                    SaveValue::str("seg.bias"),
                    SaveValue::Tensor {
                        shape: vec![3],
                        values: vec![0.25, -1.0, 1e-3],
                    },
                ),
            ]),
        ),
        ("current_epoch", SaveValue::Int(1000)),
        ("trainer_name", SaveValue::str("nnUNetTrainer")),
        (
            "inference_allowed_mirroring_axes",
            SaveValue::Tuple(vec![SaveValue::Int(0), SaveValue::Int(1)]),
        ),
        (
            "init_args",
            SaveValue::from_json(&serde_json::json!({"configuration": "2d", "fold": 0,
                "plans": {"patch_size": [64, 64], "spacing": [1.5625, 1.5625]}})),
        ),
        ("_best_ema", SaveValue::Float(0.875)),
        ("grad_scaler_state", SaveValue::None),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint_final.pth");
    write_torch_file(&path, &root).unwrap();
    let script = r#"
import sys, torch, collections
c = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
w = c["network_weights"]
assert isinstance(w, collections.OrderedDict), type(w)
assert list(w) == ["encoder.stages.0.0.convs.0.conv.weight", "seg.bias"]
t = w["encoder.stages.0.0.convs.0.conv.weight"]
assert t.dtype == torch.float32 and tuple(t.shape) == (2, 1, 3, 4) and t.is_contiguous()
assert torch.equal(t.flatten(), torch.arange(24, dtype=torch.float32) * 0.5 - 3.0)
assert torch.equal(w["seg.bias"], torch.tensor([0.25, -1.0, 1e-3]))
assert c["current_epoch"] == 1000 and c["trainer_name"] == "nnUNetTrainer"
assert c["inference_allowed_mirroring_axes"] == (0, 1)
assert c["init_args"] == {"configuration": "2d", "fold": 0,
    "plans": {"patch_size": [64, 64], "spacing": [1.5625, 1.5625]}}
assert c["_best_ema"] == 0.875 and c["grad_scaler_state"] is None
print("torch.load ok")
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "torch.load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("torch.load ok"));
}
