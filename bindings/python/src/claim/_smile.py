"""AHA 17-segment parcellation, SMILE scar masks, per-segment statistics, bull's-eyes."""

import ctypes
import json
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import _ffi
from ._ffi import Handle, check, lib
from ._image import as_image, input_volume, output_volume, same_shape

__all__ = [
    "PATTERNS",
    "TERRITORIES",
    "SegmentStats",
    "SmileContext",
    "SmileInfo",
    "aha_segments",
    "bullseye_png",
    "bullseye_svg",
    "evaluate",
    "label_scheme",
    "segment_stats",
    "smile",
    "smile_draw",
]

PATTERNS = {
    "ischemic": _ffi.CLAIM_PATTERN_ISCHEMIC,
    "midwall": _ffi.CLAIM_PATTERN_MIDWALL,
    "epicardial": _ffi.CLAIM_PATTERN_EPICARDIAL,
    "insertion": _ffi.CLAIM_PATTERN_INSERTION,
    "claim": _ffi.CLAIM_PATTERN_CLAIM,
}
TERRITORIES = {
    "any": _ffi.CLAIM_TERRITORY_ANY,
    "lad": _ffi.CLAIM_TERRITORY_LAD,
    "rca": _ffi.CLAIM_TERRITORY_RCA,
    "lcx": _ffi.CLAIM_TERRITORY_LCX,
}
_PATTERN_NAMES = {v: k for k, v in PATTERNS.items()}
_TERRITORY_NAMES = {v: k for k, v in TERRITORIES.items()}


def _choice(value, table, name):
    key = str(value).lower()
    if key == "ischaemic" and table is PATTERNS:
        key = "ischemic"
    if key not in table:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(table)}")
    return table[key]


def label_scheme(lv=1, myo=2, scar=3, mvo_label=4, rv=None):
    """A claim_label_scheme: LV cavity, myocardium, scar, MVO and RV labels
    (rv None: the map has no RV). Defaults: EMIDEC."""
    scheme = _ffi.default(_ffi.claim_label_scheme)
    scheme.lv_cavity = int(lv)
    scheme.myocardium = int(myo)
    scheme.scar = int(scar)
    scheme.mvo = int(mvo_label)
    scheme.rv = -1 if rv is None else int(rv)
    return scheme


def _aha_params(scheme, rotation_deg, long_axis):
    params = _ffi.default(_ffi.claim_aha_params)
    params.labels = ctypes.pointer(scheme)
    params.rotation_deg = float(rotation_deg)
    if long_axis is not None:
        axis = [float(v) for v in np.asarray(long_axis, dtype=np.float64).reshape(-1)]
        if len(axis) != 3:
            raise ValueError(f"long_axis: expected 3 values (LPS, apex to base), got {len(axis)}")
        params.long_axis[:] = axis
    return params


def aha_segments(labels, lv=1, myo=2, rv=None, rotation_deg=0.0, long_axis=None, scar=3, mvo_label=4):
    """Parcellates the LV myocardium of a label map into the 17 AHA segments
    (claim_aha_parcellate).

    `labels`: Image (or array) holding LV cavity `lv` and myocardium (`myo`,
    plus `scar`/`mvo_label` voxels), no other label than the scheme's (add
    `rv` when the map has an RV: the septum and the RV insertion points then
    come from it; without it they are approximated from the image's patient
    orientation). `rotation_deg`: extra counter-clockwise rotation seen from
    the apex. `long_axis`: LPS apex-to-base direction to use instead of the
    estimated one.

    Returns a uint8 Image on the labels' grid: 0 outside the myocardium,
    1–17 on every myocardium voxel. Raises ClaimError (INVALID_ARGUMENT) for
    labels outside the scheme, no myocardium or LV cavity, a degenerate LV.
    """
    vol = input_volume(labels, "labels")
    scheme = label_scheme(lv, myo, scar, mvo_label, rv)
    params = _aha_params(scheme, rotation_deg, long_axis)
    out = output_volume(vol.geometry, np.uint8, vol.array.shape)
    check(lib.claim_aha_parcellate(vol.ref, ctypes.byref(params), out.ref))
    return out.to_image()


def _smile_params(
    pattern, territory, burden, transmurality, mvo, lv, myo, scar, mvo_label, rv, rotation_deg, long_axis
):
    """claim_smile_params with its label scheme and AHA parameters, from the
    keyword arguments `smile` and `SmileContext` share. The struct keeps the
    scheme and AHA structs it points to alive (ctypes pointers hold their
    targets)."""
    scheme = label_scheme(lv, myo, scar, mvo_label, rv)
    aha = _aha_params(scheme, rotation_deg, long_axis)
    params = _ffi.default(_ffi.claim_smile_params)
    params.pattern = _choice(pattern, PATTERNS, "pattern")
    params.territory = _choice(territory, TERRITORIES, "territory")
    params.mvo = 1 if mvo else 0
    params.burden = -1.0 if burden is None else float(burden)
    params.transmurality = -1.0 if transmurality is None else float(transmurality)
    params.labels = ctypes.pointer(scheme)
    params.aha = ctypes.pointer(aha)
    return params


@dataclass(frozen=True)
class SmileInfo:
    """What one SMILE draw did (claim_smile_info).

    pattern, territory: names as in `PATTERNS` / `TERRITORIES`; territory is
    the culprit artery of an ischaemic draw ("any" for other patterns).
    segments_chosen: the AHA segments (1–17) the lesion was centred on.
    burden_target: the burden aimed at (None for the CLAIM pattern without
    a burden). burden: (scar + MVO) voxels / myocardium voxels.
    transmurality, territory_fraction: ischaemic pattern only (else None).
    """

    pattern: str
    territory: str
    segments_chosen: Tuple[int, ...]
    burden_target: Optional[float]
    burden: float
    transmurality: Optional[float]
    territory_fraction: Optional[float]
    scar_voxels: int
    mvo_voxels: int
    seed: int

    @classmethod
    def _from_struct(cls, s):
        def opt(v):
            return None if v < 0 else float(v)

        return cls(
            pattern=_PATTERN_NAMES.get(s.pattern, str(s.pattern)),
            territory=_TERRITORY_NAMES.get(s.territory, str(s.territory)),
            segments_chosen=tuple(int(v) for v in s.segments_chosen[: s.segments_chosen_count]),
            burden_target=opt(s.burden_target),
            burden=float(s.burden),
            transmurality=opt(s.transmurality),
            territory_fraction=opt(s.territory_fraction),
            scar_voxels=int(s.scar_voxels),
            mvo_voxels=int(s.mvo_voxels),
            seed=int(s.seed),
        )


def smile(
    labels,
    seed=0,
    pattern="ischemic",
    territory="any",
    burden=None,
    transmurality=None,
    mvo=False,
    lv=1,
    myo=2,
    scar=3,
    mvo_label=4,
    rv=None,
    rotation_deg=0.0,
    long_axis=None,
):
    """Draws one SMILE scar mask into a copy of a label map
    (claim_smile_generate).

    The map is parcellated into AHA segments, its scar/MVO reset to healthy
    myocardium, then scar (label `scar`, and `mvo_label` with `mvo`) is
    written on myocardium voxels only.

    pattern: "ischemic" (endocardial wavefront in one coronary territory),
    "midwall", "epicardial", "insertion" (non-ischaemic) or "claim" (the
    upstream generator). territory: "any", "lad", "rca", "lcx" (ischemic
    only). burden: lesion fraction 0–1 of the myocardium, hit within ±0.02
    (None: drawn at random). transmurality: 0–1 of the wall (ischemic; None:
    drawn). mvo: add an MVO core (ischemic). The same seed, input and
    parameters give the same mask on every run, machine and thread.

    Returns an Image of the input's (converted) dtype and geometry. Raises
    ValueError for an unknown pattern/territory name, ClaimError
    (INVALID_ARGUMENT) for out-of-range values or labels outside the scheme.
    """
    vol = input_volume(labels, "labels")
    params = _smile_params(
        pattern, territory, burden, transmurality, mvo, lv, myo, scar, mvo_label, rv, rotation_deg, long_axis
    )
    out = output_volume(vol.geometry, vol.array.dtype, vol.array.shape)
    check(lib.claim_smile_generate(vol.ref, ctypes.byref(params), int(seed), out.ref))
    return out.to_image()


class SmileContext(Handle):
    """One heart prepared for many SMILE draws (claim_smile_context_*): the
    parcellation and distances are computed once, `draw(seed)` only draws.

    Arguments as `smile`, plus `segments`: None to parcellate `labels`, or a
    segment map (0–17) of the same shape and geometry (e.g. an atlas's own
    segments or `aha_segments`' output). A context and a seed give the same
    mask as `smile` with the same input and parameters. Thread-safe: several
    threads may draw at once. Free it with `close()` or a `with` block (it
    is also freed when garbage-collected).
    """

    _free = staticmethod(lambda h: lib.claim_smile_context_free(h))

    def __init__(
        self,
        labels,
        segments=None,
        pattern="ischemic",
        territory="any",
        burden=None,
        transmurality=None,
        mvo=False,
        lv=1,
        myo=2,
        scar=3,
        mvo_label=4,
        rv=None,
        rotation_deg=0.0,
        long_axis=None,
    ):
        self._handle = None
        vol = input_volume(labels, "labels")
        seg = None
        if segments is not None:
            same_shape(as_image(labels, "labels"), as_image(segments, "segments"), "labels", "segments")
            seg = input_volume(segments, "segments")
        params = _smile_params(
            pattern, territory, burden, transmurality, mvo, lv, myo, scar, mvo_label, rv, rotation_deg, long_axis
        )
        handle = _ffi.claim_smile_context_p()
        check(
            lib.claim_smile_context_create(
                vol.ref, seg.ref if seg is not None else None, ctypes.byref(params), ctypes.byref(handle)
            )
        )
        self._handle = handle
        # Geometry and shape only: the context holds its own copy of the labels.
        self._geometry = as_image(labels, "labels")
        self._geometry = (self._geometry.spacing, self._geometry.origin, self._geometry.direction.copy())
        self._shape = vol.array.shape
        self._dtype = vol.array.dtype

    def draw(self, seed):
        """One mask: (Image of the input's dtype and geometry, SmileInfo)."""
        out = output_volume(self._geometry, self._dtype, self._shape)
        info = _ffi.sized(_ffi.claim_smile_info)
        check(lib.claim_smile_context_draw(self.handle, int(seed), out.ref, ctypes.byref(info)))
        return out.to_image(), SmileInfo._from_struct(info)


def smile_draw(labels, seed=0, **kwargs):
    """As `smile`, also returning what was drawn: (Image, SmileInfo).
    Accepts `segments=` like SmileContext."""
    with SmileContext(labels, **kwargs) as ctx:
        return ctx.draw(seed)


@dataclass
class SegmentStats:
    """Myocardium, scar and MVO per AHA segment (claim_aha_segment_stats).

    Per-segment arrays have 18 entries indexed by segment number: [s] is AHA
    segment s (1–17), [0] myocardium without a segment. Volumes in mL;
    "scar" includes the MVO core; scar_percent = 100 * scar / myocardium
    (0 without myocardium); burden = total_scar_ml / total_myocardium_ml.
    """

    myocardium_ml: np.ndarray
    scar_ml: np.ndarray
    mvo_ml: np.ndarray
    scar_percent: np.ndarray
    total_myocardium_ml: float
    total_scar_ml: float
    total_mvo_ml: float
    burden: float
    _arrays = ("myocardium_ml", "scar_ml", "mvo_ml", "scar_percent")

    @classmethod
    def _from_struct(cls, s):
        return cls(
            **{name: np.array(getattr(s, name)[:], dtype=np.float64) for name in cls._arrays},
            total_myocardium_ml=float(s.total_myocardium_ml),
            total_scar_ml=float(s.total_scar_ml),
            total_mvo_ml=float(s.total_mvo_ml),
            burden=float(s.burden),
        )

    @classmethod
    def from_scar_percent(cls, percent):
        """Stats whose only content is a scar % for each of segments 1–17 (17
        values), e.g. to draw a bull's-eye of values measured elsewhere."""
        percent = np.asarray(percent, dtype=np.float64).reshape(-1)
        if percent.size != 17:
            raise ValueError(f"from_scar_percent: expected 17 values (segments 1–17), got {percent.size}")
        myo = np.ones(18)
        myo[0] = 0.0
        scar = np.concatenate([[0.0], percent / 100.0])
        return cls(
            myocardium_ml=myo,
            scar_ml=scar,
            mvo_ml=np.zeros(18),
            scar_percent=np.concatenate([[0.0], percent]),
            total_myocardium_ml=float(myo.sum()),
            total_scar_ml=float(scar.sum()),
            total_mvo_ml=0.0,
            burden=float(scar.sum() / myo.sum()),
        )

    def as_dict(self):
        """Plain Python values (lists and floats), e.g. for JSON."""
        return {
            **{name: getattr(self, name).tolist() for name in self._arrays},
            "total_myocardium_ml": self.total_myocardium_ml,
            "total_scar_ml": self.total_scar_ml,
            "total_mvo_ml": self.total_mvo_ml,
            "burden": self.burden,
        }

    def _to_struct(self):
        s = _ffi.sized(_ffi.claim_aha_segment_stats)
        for name in self._arrays:
            values = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if values.size != _ffi.CLAIM_AHA_STATS_ENTRIES:
                raise ValueError(f"stats.{name}: expected 18 values (index 0 and segments 1–17), got {values.size}")
            getattr(s, name)[:] = values.tolist()
        s.total_myocardium_ml = self.total_myocardium_ml
        s.total_scar_ml = self.total_scar_ml
        s.total_mvo_ml = self.total_mvo_ml
        s.burden = self.burden
        return s


def segment_stats(
    labels,
    segments=None,
    lv=1,
    myo=2,
    scar=3,
    mvo_label=4,
    rv=None,
    rotation_deg=0.0,
    long_axis=None,
):
    """Measures myocardium, scar and MVO per AHA segment
    (claim_aha_segment_stats_measure) and returns a SegmentStats.

    `segments`: None to parcellate `labels` first (with `rv`, `rotation_deg`,
    `long_axis`), or a segment map (0–17) with the shape and geometry of
    `labels`, e.g. `aha_segments(labels)`. Volumes use the labels' voxel
    volume.
    """
    vol = input_volume(labels, "labels")
    seg = None
    if segments is not None:
        same_shape(as_image(labels, "labels"), as_image(segments, "segments"), "labels", "segments")
        seg = input_volume(segments, "segments")
    scheme = label_scheme(lv, myo, scar, mvo_label, rv)
    params = _aha_params(scheme, rotation_deg, long_axis)
    out = _ffi.sized(_ffi.claim_aha_segment_stats)
    check(
        lib.claim_aha_segment_stats_measure(
            vol.ref, seg.ref if seg is not None else None, ctypes.byref(params), ctypes.byref(out)
        )
    )
    return SegmentStats._from_struct(out)


def _bullseye_options(size_px, max_percent, title, show_numbers, show_percent):
    options = _ffi.default(_ffi.claim_bullseye_options)
    options.size_px = int(size_px)
    options.max_percent = float(max_percent)
    options.show_numbers = 1 if show_numbers else 0
    options.show_percent = 1 if show_percent else 0
    options.title = None if title is None else str(title).encode("utf-8")
    return options


def _render(fn, stats, options):
    if not isinstance(stats, SegmentStats):
        raise TypeError(f"stats: expected a claim.SegmentStats, got {type(stats).__name__}")
    s = stats._to_struct()
    needed = ctypes.c_size_t(0)
    check(fn(ctypes.byref(s), ctypes.byref(options), None, 0, ctypes.byref(needed)))
    buf = ctypes.create_string_buffer(needed.value)
    check(fn(ctypes.byref(s), ctypes.byref(options), buf, needed.value, ctypes.byref(needed)))
    return buf.raw[: needed.value]


def bullseye_svg(stats, size_px=480, max_percent=100.0, title=None, show_numbers=True, show_percent=True):
    """The bull's-eye plot of `stats` (AHA layout seen from the apex; scar % on
    a yellow–red scale, grey without myocardium) as an SVG document (str).
    `size_px`: plot diameter 64–4096 (the image is 1.3 times as wide for
    the colour bar); `max_percent`: top of the scale; `title`: optional."""
    options = _bullseye_options(size_px, max_percent, title, show_numbers, show_percent)
    return _render(lib.claim_bullseye_render_svg, stats, options).rstrip(b"\0").decode("utf-8")


def bullseye_png(stats, size_px=480, max_percent=100.0, show_numbers=True):
    """The bull's-eye plot of `stats` as PNG bytes (RGB; no title or
    percentages, those are SVG-only)."""
    options = _bullseye_options(size_px, max_percent, None, show_numbers, False)
    return _render(lib.claim_bullseye_render_png, stats, options)



def evaluate(prediction, reference, lv=1, myo=2, scar=3, mvo_label=4, rv=None, rotation_deg=0.0):
    """Compares a predicted label map with a reference (claim_labels_evaluate_json,
    C ABI 2.2): per structure Dice, HD95 and Hausdorff distance in mm,
    voxels and mL of each map and their difference; the scar burden and
    EMIDEC's percentage errors; the burden per AHA segment of the
    reference's parcellation; notes. The same numbers as `claim eval
    --json`, returned as the parsed JSON (a dict).

    Both maps: same shape and geometry, integral labels in the scheme
    lv/myo/scar/mvo_label/rv. Raises ClaimError UNSUPPORTED with a library
    older than ABI 2.2.
    """
    fn = _ffi.require("claim_labels_evaluate_json")
    pred = as_image(prediction, "prediction")
    ref = as_image(reference, "reference")
    same_shape(ref, pred, "reference", "prediction")
    vpred = input_volume(pred, "prediction")
    vref = input_volume(ref, "reference")
    scheme = label_scheme(lv, myo, scar, mvo_label, rv)
    params = _aha_params(scheme, rotation_deg, None)
    needed = ctypes.c_size_t(0)
    check(fn(vpred.ref, vref.ref, ctypes.byref(params), None, 0, ctypes.byref(needed)))
    buf = ctypes.create_string_buffer(needed.value)
    check(fn(vpred.ref, vref.ref, ctypes.byref(params), buf, needed.value, ctypes.byref(needed)))
    return json.loads(buf.value.decode("utf-8"))
