#!/usr/bin/env python3
"""Draws the strategies comparison of `make bench-strategies` as an SVG.

    scripts/plot_strategies.py bench/strategies.txt docs/strategies.svg

Reads the `STRATEGY` lines and draws, per workload, one bar per strategy (fault, expand,
check at each lookahead) in two panels:

- top: instructions per operation against fixed stacks (`overhead_pct`);
- bottom: stack memory per thread at the workload's end (`stack_kib / threads`), with the
  fixed stacks' as a bar of its own.

A strategy that missed (threads ended because their stack was not grown in time) gets its bar
crossed out and the number of misses written above it. Only what the file says is drawn; the
caption names its date and commit. Exit status 0 on success, 1 when the file has no usable
line, 2 for bad usage. Python 3 standard library only.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 1100, 640
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
WORKLOADS = ["mix", "churn", "chain", "bigframe", "inflate", "json", "switch", "spawn", "svc"]
COLORS = {
    "fixed": "#9a9a9a",
    "fault": "#1f77b4",
    "expand": "#ff7f0e",
    "check-512": "#c5e3b5",
    "check-2048": "#6cbf5a",
    "check-4096": "#2a7a1e",
}


def series(f: dict[str, str]) -> str:
    return f"check-{f['lookahead']}" if f["name"] == "check" else f["name"]


def read(path: Path) -> tuple[dict[tuple[str, str], dict[str, str]], str]:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    about = []
    for line in path.read_text().splitlines():
        if line.startswith(("date:", "commit:")):
            about.append(line.split(":", 1)[1].strip()[:19])
        m = re.match(r"^STRATEGY (.*)$", line)
        if m:
            f = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            rows[(f["workload"], series(f))] = f
    return rows, ", ".join(about)


def nice_step(span: float) -> float:
    """A step of 1, 2 or 5 times a power of ten that cuts `span` into about four."""
    raw = span / 4
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def panel(out: list[str], rows, names, workloads, top: float, height: float, title: str, value,
          unit: str, show_fixed: bool) -> None:
    left, right = 80, WIDTH - 20
    shown = [n for n in names if show_fixed or n != "fixed"]
    values = [value(rows[(w, n)]) for w in workloads for n in shown if (w, n) in rows]
    step = nice_step(max([v for v in values if v is not None] + [1.0])
                     - min([v for v in values if v is not None] + [0.0]))
    hi = math.ceil(max([v for v in values if v is not None] + [1.0]) / step) * step
    lo = math.floor(min([v for v in values if v is not None] + [0.0]) / step) * step
    span = hi - lo or 1.0
    y = lambda v: top + height - (v - lo) / span * height  # noqa: E731
    out.append(f"<text x='{left}' y='{top - 12}' font-size='14' font-weight='bold' {FONT}>{escape(title)}</text>")
    for i in range(int(round(span / step)) + 1):
        v = lo + step * i
        out.append(f"<line x1='{left}' x2='{right}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#e4e4e4'/>")
        out.append(f"<text x='{left - 6}' y='{y(v) + 4:.1f}' font-size='11' text-anchor='end' {FONT}>{v:.0f}{unit}</text>")
    out.append(f"<line x1='{left}' x2='{right}' y1='{y(0):.1f}' y2='{y(0):.1f}' stroke='#444'/>")
    group = (right - left) / len(workloads)
    bar = (group - 14) / len(shown)
    for gi, w in enumerate(workloads):
        x0 = left + gi * group + 7
        out.append(f"<text x='{x0 + (group - 14) / 2:.1f}' y='{top + height + 16:.1f}' font-size='12' "
                   f"text-anchor='middle' {FONT}>{w}</text>")
        for bi, n in enumerate(shown):
            f = rows.get((w, n))
            if f is None:
                continue
            v = value(f)
            x = x0 + bi * bar
            if v is None:
                v = 0.0
            y1, y2 = sorted((y(0), y(v)))
            out.append(f"<rect x='{x:.1f}' y='{y1:.1f}' width='{bar - 1:.1f}' height='{max(y2 - y1, 1):.1f}' "
                       f"fill='{COLORS.get(n, '#000')}'><title>{escape(n)} {escape(w)}: {v:.1f}{unit}</title></rect>")
            misses = int(f.get("misses", "0"))
            if misses:
                out.append(f"<line x1='{x:.1f}' x2='{x + bar - 1:.1f}' y1='{y(0) - 14:.1f}' y2='{y(0):.1f}' stroke='#d62728' stroke-width='2'/>")
                out.append(f"<line x1='{x + bar - 1:.1f}' x2='{x:.1f}' y1='{y(0) - 14:.1f}' y2='{y(0):.1f}' stroke='#d62728' stroke-width='2'/>")
                out.append(f"<text x='{x + bar / 2:.1f}' y='{min(y1, y(0) - 14) - 3:.1f}' font-size='10' fill='#d62728' "
                           f"text-anchor='middle' {FONT}>{misses}✗</text>")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    rows, about = read(Path(sys.argv[1]))
    if not rows:
        print(f"plot_strategies.py: no STRATEGY lines in {sys.argv[1]}", file=sys.stderr)
        return 1
    names = [n for n in COLORS if any(k[1] == n for k in rows)]
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}'>",
           f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>"]

    def overhead(f):
        return None if int(f.get("ops", "1")) == 0 else float(f["overhead_pct"])

    def per_thread(f):
        t = int(f["threads"])
        return int(f["stack_kib"]) / t if t else 0.0

    panel(out, rows, names, WORKLOADS, 50, 220,
          "Instructions per operation against fixed stacks (overhead, %; spawn, switch, svc: one each)",
          overhead, "%", False)
    panel(out, rows, names, WORKLOADS[:6], 350, 200,
          "Stack memory per thread at the end of the workload (KiB)", per_thread, "", True)
    lx = 80
    for n in names:
        out.append(f"<rect x='{lx}' y='{HEIGHT - 40}' width='14' height='14' fill='{COLORS[n]}'/>")
        out.append(f"<text x='{lx + 20}' y='{HEIGHT - 28}' font-size='12' {FONT}>{escape(n)}</text>")
        lx += 40 + 8 * len(n)
    out.append(f"<text x='{lx + 10}' y='{HEIGHT - 28}' font-size='12' fill='#d62728' {FONT}>N✗ = threads ended: stack not grown in time</text>")
    out.append(f"<text x='{WIDTH - 20}' y='{HEIGHT - 8}' font-size='10' fill='#777' text-anchor='end' {FONT}>"
               f"{escape(sys.argv[1])}: {escape(about)}; QEMU virt, 1 CPU, -icount shift=0</text>")
    out.append("</svg>")
    Path(sys.argv[2]).write_text("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
