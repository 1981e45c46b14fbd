"""Collected figures, the markdown table and the PNG chart."""
from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field

from bench.common import median

SIDES = ("fedstack", "synapse")


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    higher_better: bool
    fedstack: list = field(default_factory=list)
    synapse: list = field(default_factory=list)
    note: str = ""


class Results:
    def __init__(self):
        self.metrics: dict[str, Metric] = {}
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.params: dict = {}

    def add(self, key: str, side: str, value, *, label: str, unit: str, higher_better: bool,
            note: str = "") -> None:
        m = self.metrics.get(key)
        if m is None:
            m = self.metrics[key] = Metric(key, label, unit, higher_better)
        if note:
            m.note = note
        getattr(m, side).append(value)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def to_json(self) -> str:
        return json.dumps({"params": self.params, "metrics": [asdict(m) for m in self.metrics.values()],
                           "notes": self.notes, "warnings": self.warnings}, indent=1)


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return f"{int(v):,}"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _cell(values) -> str:
    if not values:
        return "—"
    med = median(values)
    if len(values) == 1:
        return _fmt(med)
    return f"{_fmt(med)} ({_fmt(min(values))}–{_fmt(max(values))})"


def _ratio(m: Metric) -> str:
    if not m.fedstack or not m.synapse:
        return "—"
    f, s = median(m.fedstack), median(m.synapse)
    if not s:
        return "—"
    r = f / s
    better = (r > 1) == m.higher_better if r != 1 else None
    mark = "" if better is None else (" (fedstack better)" if better else " (Synapse better)")
    return f"{r:.2f}×{mark}" if r < 10 else f"{r:.0f}×{mark}"


def markdown_table(results: Results) -> str:
    lines = ["| benchmark | unit | fedstack median (min–max) | Synapse median (min–max) | fedstack ÷ Synapse |",
             "|---|---|---|---|---|"]
    for m in results.metrics.values():
        arrow = "↑" if m.higher_better else "↓"
        label = m.label + (f" — {m.note}" if m.note else "")
        lines.append(f"| {label} | {m.unit} {arrow} | {_cell(m.fedstack)} | {_cell(m.synapse)} | {_ratio(m)} |")
    return "\n".join(lines)


def chart(results: Results, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in results.metrics.values() if m.fedstack or m.synapse]
    ncols = 4
    nrows = max(1, -(-len(metrics) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    colors = {"fedstack": "#2b7bba", "synapse": "#e07b39"}
    for ax, m in zip(axes.flat, metrics):
        names, meds, lo, hi, cols = [], [], [], [], []
        for side in SIDES:
            vals = getattr(m, side)
            if not vals:
                continue
            med = median(vals)
            names.append("fedstack" if side == "fedstack" else "Synapse")
            meds.append(med)
            lo.append(med - min(vals))
            hi.append(max(vals) - med)
            cols.append(colors[side])
        ax.bar(names, meds, color=cols, yerr=[lo, hi], capsize=6)
        for i, v in enumerate(meds):
            ax.annotate(_fmt(v), (i, v), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 3), textcoords="offset points")
        ax.set_title(textwrap.fill(m.label, 46), fontsize=8)
        ax.set_ylabel(f"{m.unit} ({'higher' if m.higher_better else 'lower'} is better)", fontsize=7.5)
        ax.tick_params(labelsize=8)
        if len(meds) == 2 and min(meds) > 0 and max(meds) / min(meds) > 30:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("fedstack vs Synapse on this machine: median, bars = min–max over repeats", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.965))
    fig.savefig(path, dpi=110)
    plt.close(fig)
