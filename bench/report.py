"""`python -m bench.report [results.json]`: README's benchmark table from a run's results.

Every figure is the median over the run's repetitions with the spread (min-max) beside it;
ratios are taken within each repetition (bridge and baseline from the same run) before the
median is taken.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS


def _fmt(value: float, unit: str = "") -> str:
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:,.2f}" if abs(value) >= 1 else f"{value:,.3f}"
    else:
        text = f"{int(value):,}"
    return f"{text}{unit}"


def cell(summary: dict[str, Any], key: str, unit: str = "") -> str:
    item = summary[key]
    median = _fmt(item["median"], unit)
    if item["min"] == item["max"]:
        return median
    return f"{median} ({_fmt(item['min'])} to {_fmt(item['max'], unit)})"


def target(summary: dict[str, Any], key: str, limit: float, *, above: bool = False) -> str:
    value = summary[key]["median"]
    met = value >= limit if above else value <= limit
    sign = ">=" if above else "<="
    return f"{sign} {limit:g}: {'met' if met else '**not met**'}"


def threads_target(summary: dict[str, Any]) -> str:
    """One thread per reader plus a constant: 3 more threads for 3 more readers."""
    one = summary["line_bridge_threads"]["median"]
    four = summary["four_readers_threads"]["median"]
    per_reader = (four - one) / 3
    constant = one - per_reader
    met = per_reader == 1
    verdict = "met" if met else "**not met**"
    return f"one per reader + a constant: {verdict} ({per_reader:g} per reader + {constant:g})"


def table(results: dict[str, Any]) -> str:
    s = results["summary"]
    rows = [
        ("CPU at line rate, 1 reader (1,000 msg/s, QoS 1, v5), % of a core",
         f"**{cell(s, 'line_bridge_cpu_pct')}**",
         f"bare paho `loop_start` {cell(s, 'line_paho_cpu_pct')}; lean floor "
         f"{cell(s, 'line_lean_cpu_pct')}", ""),
        ("**CPU, bridge / bare paho** (same run)", f"**{cell(s, 'cpu_bridge_vs_paho', 'x')}**",
         "", target(s, "cpu_bridge_vs_paho", 1.0)),
        ("CPU, bridge / lean floor, line rate", cell(s, "cpu_bridge_vs_lean", "x"), "", ""),
        ("**realistic mix** (every 5 ms: 4 single-report + one 1,226-byte message), CPU %",
         cell(s, "mix_bridge_cpu_pct"), f"lean floor {cell(s, 'mix_lean_cpu_pct')}", ""),
        ("**mix, bridge / lean floor**", f"**{cell(s, 'mix_bridge_vs_lean', 'x')}**",
         "median of 3 bridge phases, each against the mean of the lean phases either side",
         target(s, "mix_bridge_vs_lean", 2.0)),
        ("mix, the lean floor in the bridge's thread layout (a read thread per reader, one I/O "
         "thread), CPU % / its ratio to the floor", f"{cell(s, 'mix_lean_threads_cpu_pct')} / "
         f"{cell(s, 'mix_layout_vs_lean', 'x')}", "bridge / this layout: "
         f"{cell(s, 'mix_bridge_vs_layout', 'x')}", ""),
        ("**spool cost**: CPU with / without the durable spool",
         f"**{cell(s, 'spool_cost_ratio', 'x')}**", f"{cell(s, 'spool_cpu_pct')} % with it; "
         f"{cell(s, 'spool_plain_cpu_pct')} % without; median of 3 spool phases, each against the "
         "plain phases either side",
         target(s, "spool_cost_ratio", 1.1)),
        ("**4 readers at line rate**: delivered to the out-of-process subscriber",
         f"**{cell(s, 'four_readers_delivered_pct', ' %')}**",
         f"of {cell(s, 'four_readers_sent')} sent; lost {cell(s, 'four_readers_lost')}; CPU "
         f"{cell(s, 'four_readers_cpu_pct')} %", target(s, "four_readers_delivered_pct", 99.0,
                                                        above=True)),
        ("**threads**, 1 / 4 readers", f"**{cell(s, 'line_bridge_threads')} / "
         f"{cell(s, 'four_readers_threads')}**", "bare paho 2, lean floor 1",
         threads_target(s)),
        ("one-way latency at line rate, per message, p50 / p99 (ms)",
         f"{cell(s, 'line_bridge_latency_p50_ms')} / {cell(s, 'line_bridge_latency_p99_ms')}",
         f"bare paho {cell(s, 'line_paho_latency_p50_ms')} / "
         f"{cell(s, 'line_paho_latency_p99_ms')}", ""),
        ("**added latency** p99 (bridge p99 - paho p99, same run), ms",
         f"**{cell(s, 'added_latency_p99_ms')}**", "", target(s, "added_latency_p99_ms", 1.0)),
        ("**SendCommand -> response** at the requester, p50 / p99 (ms)",
         f"**{cell(s, 'command_p50_ms')} / {cell(s, 'command_p99_ms')}**",
         f"lost {cell(s, 'commands_lost')}", target(s, "command_p99_ms", 2.0)),
        ("lost / duplicate / stray at line rate, 1 reader",
         f"{cell(s, 'line_bridge_lost')} / {cell(s, 'line_bridge_duplicates')} / "
         f"{cell(s, 'line_bridge_stray')}", "", ""),
        (f"memory: {results['growth_seconds']:g} s at line rate (sustainable), RSS / growth MB",
         f"{cell(s, 'growth_rss_mb')} / {cell(s, 'growth_rss_growth_mb')}",
         f"{cell(s, 'growth_messages')} messages, lost {cell(s, 'growth_lost')}", ""),
        ("start-up, process start -> retained `connected` (s)", cell(s, "startup_s"), "", ""),
    ]
    lines = ["| measure | bridge | baseline (same run) | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    framing = " / ".join(f"{results[f'framing_mb_s_{n}b']:g}" for n in (64, 1024, 65536))
    lines.append(f"| framing (packetize + reassemble) 64 B / 1 KB / 64 KB, MB/s | {framing} "
                 "| | |")
    return "\n".join(lines)


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
