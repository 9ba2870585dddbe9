#!/usr/bin/env python3
"""Draws dynstack's stack memory against thread count, from `make bench` results, as an SVG.

    scripts/plot_memory.py bench/results.txt docs/memory.svg

Reads the `BENCH name=memory` lines (one per thread count: `threads`, `fixed_kib`, `idle_kib`,
`mix_kib`, `trim_kib` and the three `*_pct` savings) and draws two panels:

- left: stack memory mapped (MiB) against threads, for fixed stacks, dynamic stacks holding
  `idle` threads, `mix` threads after `settle` and the same after `trim`, with Linux's fixed
  16 KiB per thread as a reference line;
- right: the savings against fully mapped stacks (percent, thread count on a log scale), with
  the brief's goals (74.5% for idle and after trim, 72% for mix) as dashed lines.

Only what the file says is drawn; the caption names the file's date and commit. Exit status 0
on success, 1 when the file has no usable `memory` line, 2 for bad usage. Python 3 standard
library only; the SVG needs no fonts or scripts beyond a generic sans-serif.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

# Linux's kernel stack per thread on arm64 (and x86-64): the brief's fixed baseline.
LINUX_STACK_KIB = 16
# The brief's goals for savings_pct (with kstack.max=16k).
GOAL_IDLE_TRIM = 74.5
GOAL_MIX = 72.0

WIDTH, HEIGHT = 1000, 470
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"

# Series drawn dashed (over another that may coincide with them).
DASH = {"trim": "7 5"}

COLORS = {
    "linux": "#9a9a9a",
    "fixed": "#d62728",
    "mix": "#ff7f0e",
    "idle": "#1f77b4",
    "trim": "#2ca02c",
}


@dataclass
class Point:
    threads: int
    fixed_kib: int
    idle_kib: int
    mix_kib: int
    trim_kib: int
    idle_pct: float
    mix_pct: float
    trim_pct: float


def parse(text: str) -> tuple[list[Point], dict[str, str]]:
    """The memory points (sorted by thread count) and the header fields of a results file."""
    points: dict[int, Point] = {}
    meta: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^(date|commit|qemu): (.*)$", line)
        if m and m.group(1) not in meta:
            meta[m.group(1)] = m.group(2).strip()
        for key in ("initial", "max"):
            m = re.search(rf"kstack\.{key}=(\d+) KiB", line)
            if m and f"{key}_kib" not in meta:
                meta[f"{key}_kib"] = m.group(1)
        if not line.startswith("BENCH name=memory "):
            continue
        kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        try:
            p = Point(
                threads=int(kv["threads"]),
                fixed_kib=int(kv["fixed_kib"]),
                idle_kib=int(kv["idle_kib"]),
                mix_kib=int(kv["mix_kib"]),
                trim_kib=int(kv["trim_kib"]),
                idle_pct=float(kv["idle_pct"]),
                mix_pct=float(kv["mix_pct"]),
                trim_pct=float(kv["mix_trim_pct"]),
            )
        except (KeyError, ValueError):
            print(f"plot_memory.py: skipping a line it cannot read: {line}", file=sys.stderr)
            continue
        if p.threads > 0:
            points[p.threads] = p
    return [points[k] for k in sorted(points)], meta


def nice_step(span: float, ticks: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` intervals."""
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_num(v: float) -> str:
    if abs(v - round(v)) < 1e-9:
        return f"{int(round(v)):,}"
    return f"{v:g}"


class Svg:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, x: float, y: float, s: str, size: int = 13, anchor: str = "start",
             weight: str = "normal", fill: str = "#222", rotate: float | None = None) -> None:
        tr = f" transform='rotate({rotate} {x:.1f} {y:.1f})'" if rotate is not None else ""
        self.add(f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
                 f"font-weight='{weight}' fill='{fill}'{tr}>{escape(s)}</text>")

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str, width: float = 1,
             dash: str | None = None) -> None:
        d = f" stroke-dasharray='{dash}'" if dash else ""
        self.add(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                 f"stroke='{stroke}' stroke-width='{width}'{d}/>")

    def polyline(self, pts: list[tuple[float, float]], stroke: str, width: float = 2.2,
                 dash: str | None = None, marker: str | None = None) -> None:
        d = f" stroke-dasharray='{dash}'" if dash else ""
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(f"<polyline points='{coords}' fill='none' stroke='{stroke}' "
                 f"stroke-width='{width}' stroke-linejoin='round'{d}/>")
        for x, y in pts if marker else []:
            self.marker(x, y, stroke, marker)

    def marker(self, x: float, y: float, color: str, kind: str) -> None:
        if kind == "circle":
            self.add(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.6' fill='{color}'/>")
        elif kind == "square":
            self.add(f"<rect x='{x - 3.4:.1f}' y='{y - 3.4:.1f}' width='6.8' height='6.8' "
                     f"fill='{color}'/>")
        elif kind == "diamond":
            self.add(f"<polygon points='{x:.1f},{y - 4.6:.1f} {x + 4.6:.1f},{y:.1f} "
                     f"{x:.1f},{y + 4.6:.1f} {x - 4.6:.1f},{y:.1f}' fill='{color}'/>")
        elif kind == "ring":
            self.add(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4.4' fill='white' "
                     f"stroke='{color}' stroke-width='2'/>")

    def render(self) -> str:
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
                f"viewBox='0 0 {WIDTH} {HEIGHT}' {FONT}>\n"
                f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>\n"
                + "\n".join(self.parts) + "\n</svg>\n")


@dataclass
class Box:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height


def legend(svg: Svg, x: float, y: float, entries: list[tuple[str, str, str | None, str | None]],
           note: str) -> None:
    """Entries of (label, color, dash, marker), one per row, then a note, in a white box."""
    row = 19
    w = 8 + 34 + 8 + max(len(e[0]) for e in entries) * 6.5 + 8
    svg.add(f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' "
            f"height='{row * (len(entries) + 1) + 6}' "
            f"fill='white' fill-opacity='0.92' stroke='#cccccc'/>")
    svg.text(x + 50, y + 14 + len(entries) * row + 2, note, 11, fill="#666")
    for i, (label, color, dash, marker) in enumerate(entries):
        cy = y + 14 + i * row
        svg.line(x + 8, cy, x + 42, cy, color, 2.6 if dash else 2.2, dash)
        if marker:
            svg.marker(x + 25, cy, color, marker)
        svg.text(x + 50, cy + 4.5, label, size=12)


def memory_panel(svg: Svg, box: Box, pts: list[Point]) -> None:
    xmax_data = pts[-1].threads
    ymax_data = max(max(p.fixed_kib for p in pts), xmax_data * LINUX_STACK_KIB) / 1024
    xstep = nice_step(xmax_data, 5)
    xmax = math.ceil(xmax_data / xstep) * xstep
    ystep = nice_step(ymax_data, 6)
    ymax = math.ceil(ymax_data * 1.04 / ystep) * ystep

    def sx(v: float) -> float:
        return box.left + v / xmax * box.width

    def sy(v: float) -> float:
        return box.bottom - v / ymax * box.height

    svg.text(box.left, box.top - 14, "Stack memory mapped against thread count", 15, weight="bold")
    # Grid and axes.
    v = 0.0
    while v <= ymax + 1e-9:
        svg.line(box.left, sy(v), box.right, sy(v), "#e6e6e6")
        svg.text(box.left - 8, sy(v) + 4.5, fmt_num(v), 12, "end")
        v += ystep
    v = 0.0
    while v <= xmax + 1e-9:
        svg.line(sx(v), box.bottom, sx(v), box.bottom + 5, "#444")
        svg.text(sx(v), box.bottom + 20, fmt_num(v), 12, "middle")
        v += xstep
    svg.line(box.left, box.bottom, box.right, box.bottom, "#444")
    svg.line(box.left, box.top, box.left, box.bottom, "#444")
    svg.text(box.left + box.width / 2, box.bottom + 42, "threads alive", 13, "middle")
    svg.text(box.left - 52, box.top + box.height / 2, "stack memory mapped (MiB)", 13, "middle",
             rotate=-90)

    # Linux's 16 KiB per thread: a straight reference line from 0.
    svg.polyline([(sx(0), sy(0)), (sx(xmax), sy(xmax * LINUX_STACK_KIB / 1024))],
                 COLORS["linux"], 6, dash=None)
    series = [
        ("fixed", [p.fixed_kib for p in pts], "square"),
        ("mix", [p.mix_kib for p in pts], "diamond"),
        ("idle", [p.idle_kib for p in pts], "circle"),
        ("trim", [p.trim_kib for p in pts], "ring"),
    ]
    for key, kibs, marker in series:
        line = [(sx(0), sy(0))] + [(sx(p.threads), sy(k / 1024)) for p, k in zip(pts, kibs)]
        # `trim` often equals `idle` exactly: dashed on top, so both stay visible.
        svg.polyline(line, COLORS[key], 2.2, DASH.get(key))
        for x, y in line[1:]:
            svg.marker(x, y, COLORS[key], marker)

    # Per-thread cost at the largest count, in the legend.
    last = pts[-1]

    def per(kib: int) -> str:
        return f"{kib / last.threads:.2f} KiB/thread"

    legend(svg, box.left + 12, box.top + 8, [
        (f"Linux: {LINUX_STACK_KIB} KiB per thread, fixed (reference)", COLORS["linux"], None,
         None),
        (f"fixed stacks, idle threads: {per(last.fixed_kib)}", COLORS["fixed"], None,
         "square"),
        (f"dynamic, mix after settle: {per(last.mix_kib)}", COLORS["mix"], None, "diamond"),
        (f"dynamic, idle: {per(last.idle_kib)}", COLORS["idle"], None, "circle"),
        (f"dynamic, mix after trim: {per(last.trim_kib)}", COLORS["trim"], DASH["trim"],
         "ring"),
    ], f"KiB/thread: stack mapped ÷ threads, at {last.threads:,}")


def savings_panel(svg: Svg, box: Box, pts: list[Point]) -> None:
    lo_x = 10 ** math.floor(math.log10(pts[0].threads))
    hi_x = 10 ** math.ceil(math.log10(pts[-1].threads))
    if hi_x <= lo_x:
        hi_x = lo_x * 10
    values = [v for p in pts for v in (p.idle_pct, p.mix_pct, p.trim_pct)]
    lo_y = math.floor(min(values + [GOAL_MIX]) - 1)
    hi_y = math.ceil(max(values + [GOAL_IDLE_TRIM]) + 1)

    def sx(v: float) -> float:
        return box.left + (math.log10(v) - math.log10(lo_x)) / (
            math.log10(hi_x) - math.log10(lo_x)) * box.width

    def sy(v: float) -> float:
        return box.bottom - (v - lo_y) / (hi_y - lo_y) * box.height

    svg.text(box.left, box.top - 14, "Savings against fixed stacks", 15, weight="bold")
    for v in range(lo_y, hi_y + 1):
        svg.line(box.left, sy(v), box.right, sy(v), "#e6e6e6")
        svg.text(box.left - 8, sy(v) + 4.5, f"{v}", 12, "end")
    decade = lo_x
    while decade <= hi_x:
        svg.line(sx(decade), box.bottom, sx(decade), box.bottom + 5, "#444")
        svg.text(sx(decade), box.bottom + 20, fmt_num(decade), 12, "middle")
        decade *= 10
    svg.line(box.left, box.bottom, box.right, box.bottom, "#444")
    svg.line(box.left, box.top, box.left, box.bottom, "#444")
    svg.text(box.left + box.width / 2, box.bottom + 42, "threads alive (log scale)", 13, "middle")
    svg.text(box.left - 40, box.top + box.height / 2, "savings_pct (%)", 13, "middle", rotate=-90)

    for goal, label in ((GOAL_IDLE_TRIM, f"goal {GOAL_IDLE_TRIM:g}: idle, after trim"),
                        (GOAL_MIX, f"goal {GOAL_MIX:g}: mix")):
        svg.line(box.left, sy(goal), box.right, sy(goal), "#555", 1.3, "6 4")
        svg.text(box.right - 4, sy(goal) + 16, label, 11, "end", fill="#555")

    for key, vals, marker in (
        ("mix", [p.mix_pct for p in pts], "diamond"),
        ("idle", [p.idle_pct for p in pts], "circle"),
        ("trim", [p.trim_pct for p in pts], "ring"),
    ):
        svg.polyline([(sx(p.threads), sy(v)) for p, v in zip(pts, vals)], COLORS[key], 2.2,
                     DASH.get(key), marker=marker)
    first = pts[0]
    svg.text(sx(first.threads) + 6, sy(max(first.idle_pct, first.trim_pct)) - 9,
             "idle, mix after trim", 11, fill="#333")
    svg.text(sx(first.threads) + 6, sy(first.mix_pct) + 19, "mix after settle", 11,
             fill="#333")


def draw(pts: list[Point], meta: dict[str, str]) -> str:
    svg = Svg()
    max_kib = int(meta.get("max_kib", "16"))
    initial = meta.get("initial_kib", "?")
    svg.text(WIDTH / 2, 28, f"dynstack: dynamic stacks ({initial} KiB mapped at first, grown on "
             f"demand) against fixed {max_kib} KiB stacks", 16, "middle", weight="bold")
    memory_panel(svg, Box(92, 84, 480, 300), pts)
    savings_panel(svg, Box(672, 84, 290, 300), pts)
    caption = "each point: one BENCH name=memory line of bench/results.txt (make bench, QEMU virt)"
    if "date" in meta:
        caption += f", {meta['date']}"
    if "commit" in meta:
        caption += f", commit {meta['commit'][:12]}"
        if "uncommitted" in meta["commit"]:
            caption += "+changes"
    svg.text(WIDTH / 2, HEIGHT - 12, caption, 11, "middle", fill="#666")
    return svg.render()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1].strip(), file=sys.stderr)
        return 0 if len(argv) == 2 and argv[1] in ("-h", "--help") else 2
    src, dst = Path(argv[1]), Path(argv[2])
    try:
        text = src.read_text(errors="replace")
    except OSError as e:
        print(f"plot_memory.py: cannot read {src}: {e}", file=sys.stderr)
        return 2
    pts, meta = parse(text)
    if not pts:
        print(f"plot_memory.py: no `BENCH name=memory` line in {src}", file=sys.stderr)
        return 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(draw(pts, meta))
    print(f"plot_memory.py: wrote {dst} ({len(pts)} thread counts, "
          f"{pts[0].threads:,} to {pts[-1].threads:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
