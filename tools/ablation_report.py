#!/usr/bin/env python3
"""Summarises tools/claim_ablation.sh's work folder: scar Dice, HD95 and
scar-burden error per arm (mean ± sd over the test cases) as a Markdown
table (printed, and written to WORK/table.md) and an SVG bar chart
(DOCS/claim_ablation.svg). Standard library only.

Usage: ablation_report.py WORK_DIR DOCS_DIR
"""
import json
import math
import pathlib
import sys

ARMS = [
    ("a", "real only"),
    ("b", "real + synthetic, upstream masks"),
    ("c", "real + synthetic, SMILE masks"),
    ("d", "joint loop (SMILE, λ = 0.01)"),
]


def mean_sd(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return (float("nan"), float("nan"), 0)
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / max(len(values) - 1, 1))
    return (m, sd, len(values))


def arm_metrics(work, arm):
    cases = sorted((work / arm / "test").glob("case_*.json"))
    dice, hd95, burden = [], [], []
    for path in cases:
        m = json.loads(path.read_text())
        scar = next(s for s in m["structures"] if s["structure"] == "scar_and_mvo")
        dice.append(scar["dice"])
        hd95.append(scar["hd95_mm"])
        burden.append(m["scar_burden"]["abs_difference"])
    validation = {}
    vpath = work / arm / "validation.csv"
    if vpath.exists():
        for line in vpath.read_text().splitlines()[1:]:
            name, value = line.split(",")
            validation[name] = float(value)
    return {
        "cases": len(cases),
        "dice": mean_sd(dice),
        "hd95": mean_sd(hd95),
        "burden": mean_sd(burden),
        "validation": validation,
    }


def bar_chart(results):
    """Three panels (Dice, HD95, burden error), one bar per arm with ±sd."""
    panels = [("scar Dice ↑", "dice", 1.0), ("scar HD95, mm ↓", "hd95", None),
              ("burden error, % points ↓", "burden", None)]
    colours = ["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728"]
    pw, ph, top, left = 220, 200, 40, 40
    width = left + len(panels) * (pw + 30)
    height = top + ph + 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for p, (title, key, fixed_max) in enumerate(panels):
        x0 = left + p * (pw + 30)
        values = [results[a][key] for a, _ in ARMS]
        vmax = fixed_max or max((m + (sd if math.isfinite(sd) else 0)) for m, sd, _ in values
                                if math.isfinite(m)) * 1.15 or 1.0
        out.append(f'<text x="{x0 + pw / 2}" y="{top - 15}" text-anchor="middle" '
                   f'font-weight="bold">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{top + ph}" x2="{x0 + pw}" y2="{top + ph}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{top + ph}" stroke="black"/>')
        for tick in range(5):
            v = vmax * tick / 4
            y = top + ph - ph * tick / 4
            out.append(f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end" font-size="10">{v:.2g}</text>')
        bw = pw / (len(ARMS) * 1.5)
        for i, (m, sd, _) in enumerate(values):
            if not math.isfinite(m):
                continue
            bx = x0 + bw * 0.5 + i * bw * 1.5
            bh = ph * m / vmax
            out.append(f'<rect x="{bx:.1f}" y="{top + ph - bh:.1f}" width="{bw:.1f}" '
                       f'height="{bh:.1f}" fill="{colours[i]}"/>')
            if math.isfinite(sd):
                cx = bx + bw / 2
                y1, y2 = top + ph - ph * (m - sd) / vmax, top + ph - ph * (m + sd) / vmax
                out.append(f'<line x1="{cx:.1f}" y1="{max(y1, top):.1f}" x2="{cx:.1f}" '
                           f'y2="{max(y2, top):.1f}" stroke="black"/>')
            out.append(f'<text x="{bx + bw / 2:.1f}" y="{top + ph + 14}" text-anchor="middle">'
                       f'{ARMS[i][0]}</text>')
    for i, (arm, label) in enumerate(ARMS):
        y = top + ph + 36 + 14 * i
        out.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{colours[i]}"/>')
        out.append(f'<text x="{left + 16}" y="{y}">{arm}: {label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    work, docs = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    results = {a: arm_metrics(work, a) for a, _ in ARMS}
    fmt = lambda t, digits: f"{t[0]:.{digits}f} ± {t[1]:.{digits}f}"
    lines = ["| arm | segmenter trained on | scar Dice | scar HD95 (mm) | burden error (% points) |"
             " validation scar Dice |",
             "|---|---|---|---|---|---|"]
    for arm, label in ARMS:
        r = results[arm]
        val = r["validation"].get("infarction", float("nan"))
        lines.append(f"| {arm} | {label} | {fmt(r['dice'], 3)} | {fmt(r['hd95'], 1)} | "
                     f"{fmt(r['burden'], 1)} | {val:.3f} |")
    table = "\n".join(lines) + "\n"
    (work / "table.md").write_text(table)
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "claim_ablation.svg").write_text(bar_chart(results))
    print(table)


if __name__ == "__main__":
    main()
