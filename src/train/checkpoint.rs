//! Training checkpoints: everything a run needs to continue bit for bit,
//! in one safetensors file.
//!
//! Tensors (f32): `model.<key>` (the weights, upstream key names),
//! `ema.<key>` (the weight average, when the run keeps one) and
//! `optim.<buffer>.<key>` (the optimiser's per-parameter state, e.g.
//! `optim.exp_avg.<key>`). Metadata: `format` = [`CHECKPOINT_FORMAT`],
//! `step`, `optimizer` (JSON: rule, hyper-parameters, per-parameter update
//! counts), `frozen` (JSON list of the keys the optimiser leaves alone) and
//! whatever the trainer adds (its configuration, under `config`).

use crate::train::optim::{Optimizer, OptimizerKind, Parameter};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The `format` metadata of a training checkpoint.
pub const CHECKPOINT_FORMAT: &str = "claim-train-checkpoint-1";

/// A training run's state.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// The weights.
    pub params: Vec<Parameter>,
    /// The weight average (same keys), if the run keeps one.
    pub ema: Option<Vec<Parameter>>,
    /// The optimiser and its state.
    pub optimizer: Optimizer,
    /// Updates done.
    pub step: u64,
    /// Trainer-specific metadata (e.g. `config`).
    pub metadata: BTreeMap<String, String>,
}

impl TrainState {
    /// Puts the parameters (and their average and optimiser state) in the
    /// order of `names`, the network's own order: a checkpoint lists them
    /// by name, and the order decides how sums over parameters round.
    /// Fails unless `names` are exactly the state's parameters.
    pub fn arrange(&mut self, names: &[&str]) -> Result<()> {
        let position: HashMap<&str, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let order: Vec<usize> = names
            .iter()
            .map(|n| position.get(n).copied())
            .collect::<Option<_>>()
            .filter(|o: &Vec<usize>| o.len() == self.params.len())
            .ok_or_else(|| {
                Error::format("the checkpoint's parameters are not the network's parameters")
            })?;
        let pick = |v: &[Parameter]| order.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        self.params = pick(&self.params);
        if let Some(ema) = &self.ema {
            self.ema = Some(pick(ema));
        }
        let opt = &mut self.optimizer;
        opt.state = order.iter().map(|&i| opt.state[i].clone()).collect();
        opt.param_steps = order.iter().map(|&i| opt.param_steps[i]).collect();
        Ok(())
    }
}

fn optimizer_json(opt: &Optimizer, params: &[Parameter]) -> Value {
    let rule = match opt.kind {
        OptimizerKind::Adam {
            beta1,
            beta2,
            eps,
            decoupled,
        } => {
            json!({"rule": "adam", "beta1": beta1, "beta2": beta2, "eps": eps, "decoupled": decoupled})
        }
        OptimizerKind::Sgd { momentum, nesterov } => {
            json!({"rule": "sgd", "momentum": momentum, "nesterov": nesterov})
        }
    };
    let counts: serde_json::Map<String, Value> = params
        .iter()
        .zip(&opt.param_steps)
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (p.name.clone(), json!(n)))
        .collect();
    json!({"kind": rule, "weight_decay": opt.weight_decay, "steps": opt.steps, "param_steps": counts})
}

/// Writes `state` to `path` (atomically: an interrupted save leaves the
/// previous checkpoint intact).
pub fn save_checkpoint(path: &Path, state: &TrainState) -> Result<()> {
    let mut names = Vec::new();
    let mut data: Vec<(&[usize], &[f32])> = Vec::new();
    for p in &state.params {
        names.push(format!("model.{}", p.name));
        data.push((&p.shape, &p.values));
    }
    for p in state.ema.iter().flatten() {
        names.push(format!("ema.{}", p.name));
        data.push((&p.shape, &p.values));
    }
    let buffers = state.optimizer.kind.state_names();
    for (p, bufs) in state.params.iter().zip(&state.optimizer.state) {
        for (buffer, values) in buffers.iter().zip(bufs) {
            names.push(format!("optim.{buffer}.{}", p.name));
            data.push((&p.shape, values));
        }
    }
    let views: Vec<(&str, &[usize], &[f32])> = names
        .iter()
        .zip(&data)
        .map(|(n, (s, v))| (n.as_str(), *s, *v))
        .collect();
    let mut metadata: HashMap<String, String> = state.metadata.clone().into_iter().collect();
    metadata.insert("format".into(), CHECKPOINT_FORMAT.into());
    metadata.insert("step".into(), state.step.to_string());
    metadata.insert(
        "optimizer".into(),
        optimizer_json(&state.optimizer, &state.params).to_string(),
    );
    let frozen: Vec<&str> = state
        .params
        .iter()
        .filter(|p| !p.trainable)
        .map(|p| p.name.as_str())
        .collect();
    metadata.insert("frozen".into(), json!(frozen).to_string());
    crate::nn::weights::write_f32_safetensors(path, &views, metadata)
}

/// Reads a checkpoint written by [`save_checkpoint`].
pub fn load_checkpoint(path: &Path) -> Result<TrainState> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let bad = |what: String| Error::format(format!("{}: {what}", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if metadata.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        return Err(bad(format!(
            "not a claim training checkpoint (format {:?}, expected {CHECKPOINT_FORMAT})",
            metadata.get("format")
        )));
    }
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("unreadable tensors ({e})")))?;
    let mut by_name: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is {:?}, not F32", view.dtype())));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        by_name.insert(name, (view.shape().to_vec(), values));
    }
    let step: u64 = metadata
        .remove("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no step in the metadata".into()))?;
    let optimizer: Value = metadata
        .remove("optimizer")
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or_else(|| bad("no readable optimizer in the metadata".into()))?;
    let frozen: Vec<String> = metadata
        .remove("frozen")
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    metadata.remove("format");
    let take = |prefix: &str, by_name: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>| {
        let keys: Vec<String> = by_name
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                by_name.remove(&k).map(|(shape, values)| {
                    let name = k[prefix.len()..].to_string();
                    Parameter {
                        trainable: !frozen.contains(&name),
                        name,
                        shape,
                        values,
                    }
                })
            })
            .collect::<Vec<Parameter>>()
    };
    let params = take("model.", &mut by_name);
    if params.is_empty() {
        return Err(bad("no model.* tensors".into()));
    }
    let ema = take("ema.", &mut by_name);
    let ema = if ema.is_empty() {
        None
    } else {
        if ema
            .iter()
            .map(|p| &p.name)
            .ne(params.iter().map(|p| &p.name))
        {
            return Err(bad("the ema.* keys differ from the model.* keys".into()));
        }
        Some(ema)
    };
    let f = |v: &Value, key: &str| -> Result<f32> {
        v.get(key)
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| bad(format!("optimizer setting {key} is missing")))
    };
    let b = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
    let rule = &optimizer["kind"];
    let kind = match rule.get("rule").and_then(Value::as_str) {
        Some("adam") => OptimizerKind::Adam {
            beta1: f(rule, "beta1")?,
            beta2: f(rule, "beta2")?,
            eps: f(rule, "eps")?,
            decoupled: b(rule, "decoupled"),
        },
        Some("sgd") => OptimizerKind::Sgd {
            momentum: f(rule, "momentum")?,
            nesterov: b(rule, "nesterov"),
        },
        other => return Err(bad(format!("unknown optimizer rule {other:?}"))),
    };
    let mut opt = Optimizer::new(kind, f(&optimizer, "weight_decay")?, params.len())?;
    opt.steps = optimizer["steps"].as_u64().unwrap_or(step);
    for (i, p) in params.iter().enumerate() {
        opt.param_steps[i] = optimizer["param_steps"][&p.name].as_u64().unwrap_or(0);
        let bufs: Vec<Vec<f32>> = kind
            .state_names()
            .iter()
            .filter_map(|buffer| by_name.remove(&format!("optim.{buffer}.{}", p.name)))
            .map(|(_, v)| v)
            .collect();
        if !bufs.is_empty() {
            if bufs.len() != kind.state_names().len()
                || bufs.iter().any(|v| v.len() != p.values.len())
            {
                return Err(bad(format!("incomplete optimizer state for {}", p.name)));
            }
            opt.state[i] = bufs;
        }
    }
    if let Some(extra) = by_name.keys().next() {
        return Err(bad(format!("unexpected tensor {extra}")));
    }
    Ok(TrainState {
        params,
        ema,
        optimizer: opt,
        step,
        metadata,
    })
}

/// Writes weights alone under their upstream keys (what `claim synth` and
/// PyTorch's `load_state_dict` read), with `metadata`.
pub fn save_parameters(
    path: &Path,
    params: &[Parameter],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(&str, &[usize], &[f32])> = params
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice(), p.values.as_slice()))
        .collect();
    crate::nn::weights::write_f32_safetensors(path, &views, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(kind: OptimizerKind) -> TrainState {
        let params = vec![
            Parameter {
                name: "a.weight".into(),
                shape: vec![2, 2],
                values: vec![1.0, -2.0, 3.5, 0.1],
                trainable: true,
            },
            Parameter {
                name: "b.freqs".into(),
                shape: vec![1],
                values: vec![7.0],
                trainable: false,
            },
        ];
        let mut optimizer = Optimizer::new(kind, 1e-4, 2).unwrap();
        let mut p = params.clone();
        optimizer
            .step(&mut p, &[Some(vec![0.3, -0.1, 0.2, 1e-9]), None], 1e-3)
            .unwrap();
        TrainState {
            ema: Some(params.clone()),
            params: p,
            optimizer,
            step: 1,
            metadata: BTreeMap::from([("config".to_string(), "{\"x\":1}".to_string())]),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [OptimizerKind::adamw(), OptimizerKind::sgd_nesterov(0.99)] {
            let path = dir.path().join("run.ckpt.safetensors");
            let s = state(kind);
            save_checkpoint(&path, &s).unwrap();
            assert_eq!(load_checkpoint(&path).unwrap(), s);
        }
    }

    #[test]
    fn other_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_parameters(&path, &state(OptimizerKind::adam()).params, HashMap::new()).unwrap();
        let err = load_checkpoint(&path).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("not a claim training checkpoint"),
            "{err}"
        );
        std::fs::write(&path, b"junk").unwrap();
        assert!(load_checkpoint(&path).is_err());
        assert!(load_checkpoint(&dir.path().join("missing")).is_err());
    }
}
