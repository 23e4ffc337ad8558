"""results.json -> results.png: throughput and peak memory per workload and tool (matplotlib).

Run with the peers venv's Python (matplotlib lives there): ``chart.py results.json out.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import StrMethodFormatter
from report import TOOL_NAMES, TOOLS, aggregate

COLOURS = {"shoal": "#1b7f5f", "shoal-w2": "#2fb38a", "plain": "#6b8fd6", "scrapy": "#d9822b",
           "crawlee": "#9b59b6"}


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[1]).read_text())
    agg = aggregate(data["runs"])
    workloads = [w for w in data["meta"]["workloads"] if any(k[0] == w for k in agg)]
    tools = [t for t in TOOLS if any(k[1] == t for k in agg)]
    if not workloads:
        return 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(tools))
    for ax, key, label in ((axes[0], "pages_per_s", "pages per second (median)"),
                           (axes[1], "peak_rss_mb", "peak RSS, MB (median)")):
        for i, t in enumerate(tools):
            xs, ys, hatches, labels = [], [], [], []
            for j, w in enumerate(workloads):
                a = agg.get((w, t))
                if a and a[key] is not None:
                    xs.append(j + (i - (len(tools) - 1) / 2) * width)
                    ys.append(a[key])
                    hatches.append("//" if a["timed_out"] else "")
                    labels.append(f"{a[key]:,.0f}" + (" (timed out)" if a["timed_out"] else ""))
            bars = ax.bar(xs, ys, width, label=TOOL_NAMES[t], color=COLOURS[t],
                          hatch=hatches or None)
            ax.bar_label(bars, labels=labels, fontsize=7, rotation=90, padding=2)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels([f"{w}\n({data['meta']['workload_info'][w]['urls']:,} URLs)"
                            for w in workloads], fontsize=8)
        ax.set_ylabel(label)
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    mode = "quick" if data["meta"]["quick"] else "full"
    fig.suptitle(f"shoal vs peers on a loopback nginx farm ({mode} run, "
                 f"{data['meta']['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
