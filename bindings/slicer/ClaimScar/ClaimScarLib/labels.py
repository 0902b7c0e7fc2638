"""The module's label scheme, segment names and colours.

Inside the module every label map uses one scheme, EMIDEC's plus an RV:
1 LV cavity, 2 myocardium, 3 scar, 4 MVO, 5 RV (the claim phantoms' RV
value). Segmentation nodes carry names, not values: a segment is matched to
its value by name (case, spaces, '_' and '-' ignored; a few common aliases
accepted), and the module writes segments with the canonical names and
colours below.

Only numpy is used here.
"""

import re
from dataclasses import dataclass
from typing import Tuple

import numpy as np

__all__ = [
    "LV",
    "MYO",
    "SCAR",
    "MVO",
    "RV",
    "LabelInfo",
    "LABELS",
    "BY_VALUE",
    "claim_kwargs",
    "label_for_segment_name",
    "merge_exported",
    "heart_problem",
    "relabel",
    "burden",
    "toy_heart",
]

LV, MYO, SCAR, MVO, RV = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class LabelInfo:
    value: int
    name: str
    color: Tuple[float, float, float]  # RGB, 0-1
    aliases: Tuple[str, ...]


LABELS = (
    LabelInfo(LV, "LV cavity", (0.86, 0.31, 0.29), ("lv", "lv cavity", "lv blood pool", "left ventricle", "lv bp", "lv blood")),
    LabelInfo(MYO, "Myocardium", (0.49, 0.74, 0.36), ("myo", "myocardium", "lv myocardium", "myocardium lv", "healthy myocardium")),
    LabelInfo(SCAR, "Scar", (0.99, 0.85, 0.20), ("scar", "infarct", "infarction", "lge", "enhancement", "fibrosis")),
    LabelInfo(MVO, "MVO", (0.55, 0.27, 0.80), ("mvo", "microvascular obstruction", "no reflow")),
    LabelInfo(RV, "RV", (0.29, 0.53, 0.87), ("rv", "rv cavity", "right ventricle", "rv blood pool")),
)
BY_VALUE = {info.value: info for info in LABELS}

_NAME_TO_VALUE = {}
for _info in LABELS:
    for _alias in (_info.name,) + _info.aliases:
        _NAME_TO_VALUE[re.sub(r"[\s_\-]+", " ", _alias.lower()).strip()] = _info.value


def _normalise(name):
    return re.sub(r"[\s_\-]+", " ", str(name).lower()).strip()


def label_for_segment_name(name):
    """The scheme value a segment name stands for, or None.

    Canonical names and aliases match whatever their case and separators
    ("lv_cavity", "Left Ventricle"). "Label_N" and "Segment_N" (the names
    Slicer gives segments imported from a label map without a colour table)
    match value N when N is one of the scheme's values.
    """
    key = _normalise(name)
    if key in _NAME_TO_VALUE:
        return _NAME_TO_VALUE[key]
    m = re.fullmatch(r"(?:label|segment) (\d+)", key)
    if m and int(m.group(1)) in BY_VALUE:
        return int(m.group(1))
    return None


def merge_exported(exported, segment_names):
    """Converts a label map exported from a segmentation, where segment n
    (0-based, in export order) has value n + 1, into the module's scheme by
    segment names. Returns (uint8 label map, names that matched no label).
    Segments with unknown names are left out (background)."""
    exported = np.asarray(exported)
    out = np.zeros(exported.shape, dtype=np.uint8)
    unknown = []
    for n, name in enumerate(segment_names):
        value = label_for_segment_name(name)
        if value is None:
            unknown.append(name)
            continue
        out[exported == n + 1] = value
    return out, unknown


def heart_problem(labels):
    """None when the label map holds an LV cavity and myocardium (what
    AHA parcellation and SMILE need), else a sentence saying what is
    missing."""
    values = set(np.unique(np.asarray(labels)).tolist())
    missing = [BY_VALUE[v].name for v in (LV, MYO) if v not in values]
    if missing:
        return (
            "the label map has no " + " and no ".join(missing) + " (segments are matched by name: "
            + ", ".join(f"'{info.name}'" for info in LABELS) + ")"
        )
    return None


def claim_kwargs(labels):
    """The label keyword arguments of claim's calls for a map in this scheme:
    rv=5 only when the map holds RV voxels."""
    has_rv = bool(np.any(np.asarray(labels) == RV))
    return dict(lv=LV, myo=MYO, scar=SCAR, mvo_label=MVO, rv=RV if has_rv else None)


def relabel(array, mapping, default=0, dtype=np.uint8):
    """A new array where each key of `mapping` (a value, or an iterable or
    range of values) becomes its value; everything else `default`.

    Example (the AHA atlas: segments 1-17 myocardium, 21 LV, 24 RV):
    ``relabel(atlas, {range(1, 18): MYO, 21: LV, 24: RV})``.
    """
    array = np.asarray(array)
    out = np.full(array.shape, default, dtype=dtype)
    for key, value in mapping.items():
        keys = [key] if np.isscalar(key) else list(key)
        out[np.isin(array, keys)] = value
    return out


def burden(labels):
    """Lesion burden of a label map: (scar + MVO) voxels / (myocardium +
    scar + MVO) voxels (0 without myocardium)."""
    labels = np.asarray(labels)
    lesion = int(np.count_nonzero((labels == SCAR) | (labels == MVO)))
    wall = lesion + int(np.count_nonzero(labels == MYO))
    return lesion / wall if wall else 0.0


def toy_heart(shape=(12, 64, 64)):
    """A small synthetic short-axis heart in the module's scheme, for tests
    and examples: stacked discs (LV cavity in a myocardial ring, closed by
    an apical cap in slice 1) and an RV crescent on one side. Indexed
    [k, j, i]; use it with an in-plane spacing of about 1.5 mm and 8 mm
    slices."""
    nk, nj, ni = shape
    k, j, i = np.mgrid[0:nk, 0:nj, 0:ni]
    cj, ci = (nj - 1) / 2.0, ni * 0.47
    r = np.hypot(i - ci, j - cj)
    r_rv = np.hypot(i - (ci + ni * 0.25), j - cj)
    outer, inner, rv_radius = ni * 0.2, ni * 0.125, ni * 0.22
    out = np.zeros(shape, np.uint8)
    inside = (k >= 1) & (k <= nk - 2)
    out[inside & (r_rv < rv_radius) & (r >= outer)] = RV
    out[inside & (r < outer)] = MYO
    out[inside & (r < inner)] = LV
    out[(k == 1) & (r < outer)] = MYO
    return out
