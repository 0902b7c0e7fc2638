#!/usr/bin/env python3
"""The tables of tools/gpu_check.sh from the files its stages write: op
parity and timings beside PyTorch fp16, whole-model parity and timings,
nnUNetPredictor, training steps beside PyTorch AMP, and weight gradients.

Runs on the GPU machine at the end of a full check, or here on the files a
run brought back (several partial runs may fill one folder in turn):

    python3 tools/gpu_table.py DIR
"""
import json, os, sys

if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
    sys.exit("usage: python3 tools/gpu_table.py DIR (the $OUT of tools/gpu_check.sh)")
out = sys.argv[1]

def load(name):
    path = os.path.join(out, name)
    rows = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows

parity = load("parity.jsonl")
bench = load("claim_bench.jsonl")
torch = {r["name"]: r["torch_ms"] for r in load("torch_bench.jsonl")}
if parity:
    counts = {}
    for r in parity:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    print("parity cases:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    bad = [r for r in parity if r.get("status") == "fail"]
    for r in bad:
        print("  FAIL", r)
    worst = {}
    for r in parity:
        if r.get("status") == "pass":
            op = r["op"] + " " + r.get("dtype", "")
            if r["rel_l2"] >= worst.get(op, (-1, ""))[0]:
                worst[op] = (r["rel_l2"], r.get("shape", ""))
    print()
    print("| op | worst case shape | rel. L2 vs CPU f32 |")
    print("|---|---|---|")
    for op, (err, shape) in sorted(worst.items()):
        print(f"| {op} | {shape} | {err:.2e} |")
    missing = sorted({r["op"] + " " + r.get("dtype", "") for r in parity if r.get("status") == "unsupported"})
    if missing:
        print("\nnot on the GPU yet:", ", ".join(missing))
print()
print("| op | shape | rel. L2 | claim GPU ms | PyTorch fp16 ms | claim ÷ PyTorch |")
print("|---|---|---|---|---|---|")
for r in bench:
    t = torch.get(r["name"])
    ratio = f"{r['gpu_ms'] / t:.2f}" if t else "-"
    ts = f"{t:.4f}" if t else "-"
    err = r.get("rel_l2")
    es = f"{err:.1e}" if isinstance(err, (int, float)) else "-"
    print(f"| {r['name']} | {r.get('shape', '')} | {es} | {r['gpu_ms']:.4f} | {ts} | {ratio} |")

models = load("models.jsonl")
tm = load("torch_models.jsonl")
print()
for r in models:
    if r.get("kind") == "parity":
        replay = r.get("graph_replay_max_abs_diff")
        replay = "" if replay is None else f", graph replay vs eager max |diff| {replay:.1e}"
        print(f"parity {r['model']} batch {r['batch']}: rel L2 {r['rel_l2']:.2e}, guided {r['rel_l2_guided']:.2e}{replay}")
    elif r.get("kind") == "small_repaint_parity":
        print(f"RePaint parity ({r['model']}, batch {r['batch']}, {r['evaluations']} evaluations, graph replay): "
              f"sample rel L2 {r['rel_l2']:.2e}, painted MAD {r['mean_abs_diff_painted']:.2e}")
    elif r.get("kind") == "synthesis_parity":
        print(f"synthesis parity (built-in model, small case): {r['slices']} slices, {r['evaluations']} evaluations, lesion MAD "
              f"{r['mean_abs_diff']:.4f} of range {r['lesion_range']:.3f}, "
              f"{r['changed_outside_lesion']} voxels outside the lesion differ")
    elif r.get("kind") == "repaint_parity":
        print(f"RePaint parity: {r['slices']} slices, {r['evaluations']} evaluations, lesion MAD "
              f"{r['mean_abs_diff']:.4f} of range {r['lesion_range']:.3f}; CPU {r['cpu_s']:.1f} s, GPU {r['gpu_s']:.1f} s")
    elif r.get("kind") == "segmenter_parity":
        print(f"segmenter parity {r['configuration']} ({r.get('case', 'whole')} case): logits rel L2 "
              f"{r['rel_l2']:.2e}, labels {100 * r['label_agreement']:.3f} % equal over {r['voxels']} voxels "
              f"(flipped where the CPU's margin ≤ {r.get('widest_flipped_margin', float('nan')):.1e}, "
              f"largest logit error {r.get('max_logit_error', float('nan')):.1e}); CPU {r['cpu_s']:.2f} s, "
              f"GPU {r['gpu_s']:.2f} s (labels only, argmax on the GPU: {r.get('gpu_labels_only_s', float('nan')):.2f} s)")
nnunet = {r["configuration"]: r for r in load("nnunet_bench.jsonl")}
for r in models:
    if r.get("kind") == "segmenter_parity" and r.get("case", "whole") == "whole" and r["configuration"] in nnunet:
        n = nnunet[r["configuration"]]
        agree = n.get("label_agreement_with_claim")
        agree_s = f"{100 * agree:.3f} % of labels equal" if agree is not None else "labels not compared"
        print(f"whole case {r['configuration']}: claim GPU {r['gpu_s']:.3f} s (labels only "
              f"{r.get('gpu_labels_only_s', float('nan')):.3f} s), nnUNetPredictor {n['nnunet_s']:.3f} s, "
              f"claim ÷ nnU-Net {r['gpu_s'] / n['nnunet_s']:.2f}; {agree_s}")
peak = next((r["tflops"] for r in tm if r.get("kind") == "peak"), None)
flops = {r["name"]: r["flops_per_item"] for r in tm if r.get("kind") == "flops"}
torch_ms = {r["name"]: r for r in tm if r.get("kind") == "bench"}
if peak:
    print(f"dense fp16 tensor-core rate measured by PyTorch: {peak:.0f} TFLOP/s")
print()
print("| case | claim GPU ms | PyTorch fp16 ms | claim / PyTorch | claim TFLOP/s | PyTorch TFLOP/s |")
print("|---|---|---|---|---|---|")
for r in models:
    if r.get("kind") != "bench":
        continue
    name = r["name"]
    t = torch_ms.get(name, {})
    tms = t.get("torch_ms")
    fl = t.get("flops")
    ratio = f"{r['claim_ms'] / tms:.2f}" if tms else "-"
    ctf = f"{fl / r['claim_ms'] / 1e9:.1f}" if fl else "-"
    ttf = f"{fl / tms / 1e9:.1f}" if fl and tms else "-"
    extra = f" ({r['per_slice_s']:.2f} s per slice)" if "per_slice_s" in r else ""
    tstr = f"{tms:.2f}" if tms else "-"
    print(f"| {name}{extra} | {r['claim_ms']:.2f} | {tstr} | {ratio} | {ctf} | {ttf} |")

print()
for r in models:
    if r.get("kind") == "train_parity":
        print(f"training step parity {r['model']}: loss {r['loss_gpu']:.6f} (GPU) vs {r['loss_cpu']:.6f} (CPU), "
              f"rel err {r['loss_rel_err']:.1e}; worst gradient rel L2 {r['worst_grad_rel_l2']:.2e} "
              f"({r['worst_tensor']}, bound {r.get('worst_bound', 5e-2):.2e}) over {r['tensors']} tensors; "
              f"the CPU's own f16 sensitivity up to {r.get('cpu_f16_sensitivity', 0.0):.2e}; "
              f"vanishing gradients up to {r.get('worst_vanishing_norm', 0.0):.1e} of the largest; "
              f"loss scale {r['loss_scale']:g}")
torch_train = {r["name"]: r["torch_ms"] for r in load("torch_train.jsonl") if r.get("kind") == "train_bench"}
print()
for r in models:
    if r.get("kind") == "resident_parity":
        print(f"weights on the device vs host optimizer, {r['model']} ({r['optimizer']}, 3 steps): "
              f"weights rel L2 {r['weights_rel_l2']:.1e}, bit-identical: {r['bit_identical']}")
print()
print("| training step | claim GPU ms (f16, weights on the device) | claim ms, host optimizer | host / device | PyTorch AMP ms | claim / PyTorch |")
print("|---|---|---|---|---|---|")
for r in models:
    if r.get("kind") == "train_bench":
        t = torch_train.get(r["name"])
        ts = f"{t:.1f}" if t else "-"
        ratio = f"{r['gpu_ms'] / t:.2f}" if t else "-"
        h = r.get("host_optimizer_ms")
        hs = f"{h:.1f}" if h else "-"
        hr = f"{h / r['gpu_ms']:.2f}" if h else "-"
        print(f"| {r['name']} | {r['gpu_ms']:.1f} | {hs} | {hr} | {ts} | {ratio} |")
print()
print("| weight gradient (nnU-Net 2-D stage) | split-K ms | swapped conv ms | swapped / split-K | split-K TFLOP/s | rel L2 between |")
print("|---|---|---|---|---|---|")
for r in models:
    if r.get("kind") == "wgrad_bench":
        print(f"| {r['name']} | {r['split_k_ms']:.3f} | {r['swapped_conv_ms']:.3f} | "
              f"{r['swapped_conv_ms'] / max(r['split_k_ms'], 1e-9):.1f} | {r['split_k_tflops']:.1f} | "
              f"{r['rel_l2_between']:.1e} |")
print()
print("| loss (forward + backward) | loss rel err | gradient rel L2 | on the device ms | download + host ms | host / device |")
print("|---|---|---|---|---|---|")
for r in models:
    if r.get("kind") == "loss_parity":
        d, h = r.get("device_ms"), r.get("through_host_ms")
        times = f"{d:.2f} | {h:.2f} | {h / max(d, 1e-9):.1f}" if d and h else "- | - | -"
        print(f"| {r['name']} {r['shape']} | {r['loss_rel_err']:.1e} | {r['grad_rel_l2']:.1e} | {times} |")
