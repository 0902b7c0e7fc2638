"""The settings of the three operations, as plain dataclasses.

The widget fills them from its controls (and saves them to QSettings as
JSON via `to_dict` / `from_dict`); tests and scripts build them directly.
`problems()` lists what is wrong before any work starts, so that the
widget can say so instead of failing in a worker thread.
"""

from dataclasses import asdict, dataclass, fields
from typing import List, Optional

__all__ = [
    "PATTERNS",
    "TERRITORIES",
    "DEVICES",
    "SmileOptions",
    "SynthesisOptions",
    "SegmentationOptions",
    "parse_folds",
]

PATTERNS = ("ischemic", "midwall", "epicardial", "insertion", "claim")
TERRITORIES = ("any", "lad", "rca", "lcx")
DEVICES = ("cpu", "cuda")


def parse_folds(text):
    """The folds field: "" or "auto" -> None (every fold present); "all" ->
    ["all"] (fold_all); "0,1, 2" or "0 1 2" -> [0, 1, 2]. Raises ValueError
    with a readable message for anything else."""
    text = str(text or "").strip()
    if not text or text.lower() == "auto":
        return None
    folds = []
    for part in text.replace(",", " ").split():
        if part.lower() == "all":
            folds.append("all")
            continue
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"folds: {part!r} is not a fold number or 'all' (e.g. '0,1,2')") from None
        if value < 0:
            raise ValueError(f"folds: {value} is negative")
        folds.append(value)
    return folds


def _device_problem(device):
    name = str(device).lower()
    if name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()):
        return None
    return f"device: {device!r} is not one of cpu, cuda, cuda:N"


class _Options:
    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        """An instance from a (possibly partial or stale) dict: unknown keys
        are dropped, values of the wrong type keep the default."""
        out = cls()
        known = {f.name: f for f in fields(cls)}
        for key, value in (values or {}).items():
            if key not in known:
                continue
            default = getattr(out, key)
            if default is not None and value is not None and not isinstance(value, type(default)):
                if isinstance(default, float) and isinstance(value, int):
                    value = float(value)
                else:
                    continue
            setattr(out, key, value)
        return out


@dataclass
class SmileOptions(_Options):
    """A SMILE scar mask (claim.smile_draw). burden, transmurality: None to
    draw at random, else 0-1. rotation_deg: extra AHA rotation."""

    seed: int = 0
    pattern: str = "ischemic"
    territory: str = "any"
    burden: Optional[float] = 0.15
    transmurality: Optional[float] = None
    mvo: bool = False
    rotation_deg: float = 0.0

    def problems(self) -> List[str]:
        out = []
        if self.pattern not in PATTERNS:
            out.append(f"pattern: {self.pattern!r} is not one of {', '.join(PATTERNS)}")
        if self.territory not in TERRITORIES:
            out.append(f"territory: {self.territory!r} is not one of {', '.join(TERRITORIES)}")
        for name in ("burden", "transmurality"):
            value = getattr(self, name)
            if value is not None and not 0.0 < float(value) <= 1.0:
                out.append(f"{name}: {value} is not in (0, 1]")
        if not 0 <= int(self.seed) < 2**64:
            out.append(f"seed: {self.seed} is not in [0, 2^64)")
        return out


@dataclass
class SynthesisOptions(_Options):
    """A CLAIM/LeFusion synthesis (claim.synthesize). model_path "builtin"
    is the small model inside the library; t_start/jump_length/
    jump_n_sample: the RePaint schedule (300/5/5 is the paper's)."""

    model_path: str = "builtin"
    device: str = "cpu"
    seed: int = 0
    t_start: int = 300
    jump_length: int = 5
    jump_n_sample: int = 5
    guidance_scale: float = 1.0
    batch_size: int = 4
    crop_size: int = 72

    def problems(self) -> List[str]:
        out = []
        if not str(self.model_path).strip():
            out.append("model: no path (use 'builtin' for the model inside the library)")
        problem = _device_problem(self.device)
        if problem:
            out.append(problem)
        if not 1 <= int(self.t_start) <= 300:
            out.append(f"t_start: {self.t_start} is not in 1-300")
        if int(self.jump_length) < 1 or int(self.jump_n_sample) < 1:
            out.append("jump length and jump samples must be at least 1")
        if int(self.batch_size) < 1:
            out.append(f"batch size: {self.batch_size} is not at least 1")
        if int(self.crop_size) < 8:
            out.append(f"crop size: {self.crop_size} is too small")
        return out


@dataclass
class SegmentationOptions(_Options):
    """An nnU-Net segmentation (claim.Segmenter + claim.segment), with the
    options SlicerNNUNet offers: model path ("builtin", an nnU-Net results
    folder, a checkpoint or a claim safetensors bundle), folds ("" = every
    fold present, "all", "0,1,2"), configuration ("" = the trained one),
    step size, test-time mirroring, device."""

    model_path: str = "builtin"
    folds: str = ""
    configuration: str = ""
    device: str = "cpu"
    step_size: float = 0.5
    mirroring: bool = True
    postprocess: bool = True

    def folds_list(self):
        return parse_folds(self.folds)

    def problems(self) -> List[str]:
        out = []
        if not str(self.model_path).strip():
            out.append("model: no path (use 'builtin' for the model inside the library)")
        try:
            parse_folds(self.folds)
        except ValueError as exc:
            out.append(str(exc))
        problem = _device_problem(self.device)
        if problem:
            out.append(problem)
        if not 0.0 < float(self.step_size) <= 1.0:
            out.append(f"step size: {self.step_size} is not in (0, 1]")
        return out
