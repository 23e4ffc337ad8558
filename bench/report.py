"""results.json -> results.md: medians per workload and tool, ratios, politeness, targets.

Standard library only. ``python bench/report.py results.json > results.md`` re-renders.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

TOOLS = ["shoal", "shoal-w2", "plain", "scrapy", "crawlee"]
TOOL_NAMES = {"shoal": "shoal", "shoal-w2": "shoal --workers 2",
              "plain": "plain aiohttp script", "scrapy": "Scrapy",
              "crawlee": "Crawlee (HttpCrawler)"}
MB = 1_000_000


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def aggregate(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Medians per (workload, tool) over its runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["workload"], r["tool"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        lag = [r["lag_p99_ms"] for r in rs if r.get("lag_p99_ms") is not None]
        pol = [r["politeness"] for r in rs if r.get("politeness")]
        out[key] = {
            "runs": len(rs),
            "pages_per_s": _median([r["pages_per_s"] for r in rs]),
            "cpu_s": _median([r["cpu_s"] for r in rs]),
            "cpu_us_per_page": _median([r["cpu_s"] / r["records"] * 1e6
                                        for r in rs if r["records"]]),
            "peak_rss_mb": _median([r["peak_rss_bytes"] / MB for r in rs]),
            "lag_p99_ms": _median(lag),
            "correct": all(r["check"]["ok"] for r in rs),
            "correct_text": "; ".join(sorted({r["check_summary"] for r in rs})),
            "timed_out": sum(bool(r["timed_out"]) for r in rs),
            "failed": sum(r["returncode"] not in (0, None) and not r["timed_out"] for r in rs),
            "other_cpu_share": _median([r["other_cpu_s"] / (r["wall_s"] * r["cpus"])
                                        for r in rs if r["wall_s"]]),
            "politeness": _worst_politeness(pol) if pol else None,
        }
    return out


def _worst_politeness(pols: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [p["min_gap_ms"] for p in pols if p["min_gap_ms"] is not None]
    return {
        "max_in_flight": max(p["max_in_flight"] for p in pols),
        "min_gap_ms": min(gaps) if gaps else None,
        "gaps_under_delay": max(p["gaps_under_delay"] for p in pols),
        "gaps_under_tolerance": max(p["gaps_under_tolerance"] for p in pols),
        "requests": max(p["requests"] for p in pols),
        "hosts": max(p["hosts"] for p in pols),
        "ok": all(p["ok"] for p in pols),
        "ok_with_tolerance": all(p["ok_with_tolerance"] for p in pols),
        "tolerance_ms": pols[0]["tolerance_ms"],
    }


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    runs = data["runs"]
    agg = aggregate(runs)
    workloads = [w for w in meta["workloads"] if any(k[0] == w for k in agg)]
    tools = [t for t in TOOLS if any(k[1] == t for k in agg)]
    lines: list[str] = []
    add = lines.append
    add("# shoal benchmark results")
    add("")
    add(f"- date: {meta['date']}; mode: {'quick' if meta['quick'] else 'full'}; "
        f"repeats: {meta['repeat']} (figures are medians over the repeats)")
    add(f"- machine: {meta['machine']}")
    add(f"- server: {meta['server']}; farm: {meta['farm']}")
    add(f"- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}")
    add(f"- command: `{meta['command']}`")
    add("- pages/s = records written / wall time of the whole process (start-up included); "
        "CPU = user + sys of the tool's process tree; peak RSS = the larger of ru_maxrss and "
        "the sampled sum over the tool's processes; loop lag = how late a 50 ms timer fires "
        "(shoal's own monitor; the same monitor is added to each peer)")
    digests = sorted({r["shoal_source"] for r in runs if r.get("shoal_source")})
    if len(digests) > 1:
        add(f"- **warning: shoal's source changed during the suite**: its runs used "
            f"{len(digests)} different versions of `src/` (digests "
            f"{', '.join(digests)}; per run in results.json)")
    busy = [v["other_cpu_share"] for v in agg.values() if v["other_cpu_share"] is not None]
    if busy and max(busy) > 0.10:
        add(f"- **warning: other processes were busy during some runs** (up to "
            f"{max(busy):.0%} of the machine's CPU; see the `other CPU` column under "
            f"\"Every run\"): figures are lower than on an idle machine")
    add("")
    for w in workloads:
        wmeta = meta["workload_info"][w]
        add(f"## {w}: {wmeta['title']}")
        add("")
        polite = bool(wmeta.get("delay"))
        head = ["tool", "pages/s", "shoal ÷ tool", "CPU s", "CPU µs/page", "peak RSS MB",
                "loop lag p99 ms", "correct", "runs"]
        if polite:
            head[2:2] = ["% of bound"]
        add("| " + " | ".join(head) + " |")
        add("|" + "---|" * len(head))
        shoal_rate = agg.get((w, "shoal"), {}).get("pages_per_s")
        for t in tools:
            a = agg.get((w, t))
            if a is None:
                continue
            note = []
            if a["timed_out"]:
                note.append(f"{a['timed_out']} timed out")
            if a["failed"]:
                note.append(f"{a['failed']} exited non-zero")
            runs_txt = str(a["runs"]) + (f" ({', '.join(note)})" if note else "")
            ratio = "—" if t == "shoal" else _f(_ratio(shoal_rate, a["pages_per_s"]),
                                                "{:.2f}x")
            row = [TOOL_NAMES[t], _f(a["pages_per_s"]), ratio, _f(a["cpu_s"], "{:.1f}"),
                   _f(a["cpu_us_per_page"]), _f(a["peak_rss_mb"]),
                   _f(a["lag_p99_ms"], "{:.1f}"),
                   "yes" if a["correct"] else a["correct_text"], runs_txt]
            if polite:
                row[2:2] = [_f(_ratio(a["pages_per_s"], wmeta["bound"]), "{:.0%}")]
            add("| " + " | ".join(row) + " |")
        add("")
        if polite:
            add(f"Politeness from nginx's access log (bound: {wmeta['hosts']} hosts × "
                f"1 / {wmeta['delay']} s = {wmeta['bound']:,.0f} pages/s; each host at most "
                f"{wmeta['per_host']} in flight and request starts ≥ "
                f"{wmeta['delay'] * 1000:.0f} ms apart; start = $msec − $request_time; worst "
                "host, worst run):")
            add("")
            add("| tool | requests | max in flight | min gap ms | gaps < 50 ms | "
                "gaps < 45 ms | within bounds (strict) | within bounds (5 ms tolerance) |")
            add("|---|---|---|---|---|---|---|---|")
            for t in tools:
                a = agg.get((w, t))
                p = a and a["politeness"]
                if not p:
                    continue
                add(f"| {TOOL_NAMES[t]} | {p['requests']:,} | {p['max_in_flight']} | "
                    f"{_f(p['min_gap_ms'], '{:.0f}')} | {p['gaps_under_delay']:,} | "
                    f"{p['gaps_under_tolerance']:,} | {'yes' if p['ok'] else 'no'} | "
                    f"{'yes' if p['ok_with_tolerance'] else 'no'} |")
            add("")
            if not any(agg.get((w, t), {}).get("politeness") for t in tools):
                add("(no access log: politeness is only analysed with the nginx server)")
                add("")
    add("## Targets (shoal)")
    add("")
    if meta["quick"]:
        add("Quick mode: the sizes are smaller than the targets assume (start-up weighs "
            "more); judge the targets on a full run.")
        add("")
    add("| target | measured | result |")
    add("|---|---|---|")
    for name, measured, ok in targets(agg, meta):
        add(f"| {name} | {measured} | {'n/a' if ok is None else 'PASS' if ok else 'FAIL'} |")
    add("")
    add("## Every run")
    add("")
    add("| workload | tool | run | URLs | records | wall s | pages/s | CPU s | peak RSS MB | "
        "lag p99 ms | exit | correct | server CPU s | other CPU s |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        add(f"| {r['workload']} | {r['tool']} | {r['rep']} | {r['urls']:,} | "
            f"{r['records']:,} | {r['wall_s']:.1f} | {r['pages_per_s']:,.0f} | "
            f"{r['cpu_s']:.1f} | {r['peak_rss_bytes'] / MB:,.0f} | "
            f"{_f(r.get('lag_p99_ms'), '{:.1f}')} | "
            f"{'timeout' if r['timed_out'] else r['returncode']} | {r['check_summary']} | "
            f"{r['server_cpu_s']:.1f} | {r['other_cpu_s']:.1f} |")
    add("")
    if Path(meta.get("chart", "")).name:
        add(f"![throughput and peak memory]({Path(meta['chart']).name})")
        add("")
    return "\n".join(lines)


def targets(agg: dict[tuple[str, str], dict[str, Any]], meta: dict[str, Any]
            ) -> list[tuple[str, str, bool | None]]:
    def get(w: str, t: str, k: str) -> Any:
        return agg.get((w, t), {}).get(k)

    out: list[tuple[str, str, bool | None]] = []

    def ratio_target(w: str, peer: str, want: float) -> None:
        r = _ratio(get(w, "shoal", "pages_per_s"), get(w, peer, "pages_per_s"))
        out.append((f"{w}: shoal ≥ {want:g}x {TOOL_NAMES[peer]} (pages/s)",
                    _f(r, "{:.2f}x"), None if r is None else r >= want))

    ratio_target("fetch100k", "plain", 1.0)
    r2 = _ratio(get("fetch100k", "shoal-w2", "pages_per_s"), get("fetch100k", "shoal",
                                                                 "pages_per_s"))
    out.append(("fetch100k: shoal --workers 2 ≥ 1.6x shoal in one process (pages/s)",
                _f(r2, "{:.2f}x"), None if r2 is None else r2 >= 1.6))
    ratio_target("fetch100k", "scrapy", 8.0)
    ratio_target("fetch100k", "crawlee", 3.0)
    rss100 = get("fetch100k", "shoal", "peak_rss_mb")
    out.append(("fetch100k: shoal peak RSS ≤ 150 MB", _f(rss100, "{:.0f} MB"),
                None if rss100 is None else rss100 <= 150))
    rss1m = get("fetch1m", "shoal", "peak_rss_mb")
    r = _ratio(rss1m, rss100)
    out.append(("fetch1m: shoal peak RSS ≤ 1.2 × fetch100k's",
                "n/a" if r is None else f"{rss1m:.0f} MB = {r:.2f} ×",
                None if r is None else r <= 1.2))
    ratio_target("crawl50k", "scrapy", 8.0)
    ratio_target("crawl50k", "crawlee", 3.0)
    info = meta["workload_info"].get("polite")
    rate = get("polite", "shoal", "pages_per_s")
    if info:
        share = rate / info["bound"] if rate is not None else None
        out.append((f"polite: shoal ≥ 90% of the bound ({info['bound']:,.0f} pages/s)",
                    _f(share, "{:.0%}"), None if share is None else share >= 0.9))
    pol = get("polite", "shoal", "politeness")
    out.append(("polite: shoal kept ≤ 2 in flight and ≥ 50 ms between starts at every host "
                "(strict / with 5 ms tolerance)",
                "n/a" if not pol else
                f"max {pol['max_in_flight']} in flight, min gap {_f(pol['min_gap_ms'], '{:.0f}')}"
                f" ms ({'yes' if pol['ok'] else 'no'} / "
                f"{'yes' if pol['ok_with_tolerance'] else 'no'})",
                None if not pol else pol["ok_with_tolerance"]))
    lags = {w: get(w, "shoal", "lag_p99_ms") for w in meta["workloads"]}
    lags = {w: v for w, v in lags.items() if v is not None}
    worst = max(lags.values()) if lags else None
    out.append(("loop lag p99 < 50 ms (shoal, every workload)",
                "n/a" if worst is None else
                ", ".join(f"{w} {v:.1f} ms" for w, v in lags.items()),
                None if worst is None else worst < 50))
    shoal_runs = [v for k, v in agg.items() if k[1] == "shoal"]
    out.append(("every shoal output verified (records = URLs, all 200, titles and links right)",
                f"{sum(v['correct'] for v in shoal_runs)}/{len(shoal_runs)} workloads",
                None if not shoal_runs else all(v["correct"] for v in shoal_runs)))
    return out


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[1]).read_text())
    sys.stdout.write(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
