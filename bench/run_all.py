"""Run every benchmark and print one summary table.

    python bench/run_all.py                      # reduced sizes, under 5 minutes on 2 cores
    python bench/run_all.py --full               # the sizes in each benchmark's --full
    python bench/run_all.py --json results/      # also keep each benchmark's JSON (and the tokens plot)
    python bench/run_all.py --only tokens_growth concurrency

Each benchmark runs in its own process, one after the other (they would compete for the 2 cores),
with its own arguments below; a failure is reported in the table and the others still run. Exit
status is 1 if any benchmark failed or a hard requirement broke (a prompt over the window, a lost or
reordered message). Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

REDUCED: dict[str, list[str]] = {
    "turn_overhead": ["--turns", "200"],
    "tokens_growth": ["--turns", "1000"],
    "archival_scale": ["--spread", "100000", "--agents", "1000", "--single", "20000", "--queries", "200"],
    "concurrency": ["--users", "100"],
    "scheduler_scale": ["--agents", "10000", "--due", "300"],
    "documents": [],
    "scale_out": ["--people", "100", "--timeout", "30"],
}
FULL: dict[str, list[str]] = {name: ["--full"] for name in REDUCED}


def _turn_overhead(r: dict[str, Any]) -> tuple[list[str], bool]:
    o = r["overhead_ms"]
    return [
        f"{r['messages']} msgs/{r['passages']} passages: overhead p50 {o['p50']} ms, "
        f"p95 {o['p95']} ms, p99 {o['p99']} ms"
    ], True


def _tokens_growth(r: dict[str, Any]) -> tuple[list[str], bool]:
    p50s = [b["p50"] for b in r["buckets"]]
    return [
        f"{r['turns']} turns, window {r['window']}: max {r['max_prompt_tokens']} tokens, "
        f"p50 per bucket {min(p50s):.0f}-{max(p50s):.0f}, over window {r['requests_over_window']}",
        f"full context at the end {r['full_context_at_end']:,} tokens; "
        f"{r['summariser_calls']} summariser calls",
    ], r["requests_over_window"] == 0


def _archival_scale(r: dict[str, Any]) -> tuple[list[str], bool]:
    s, one = r["spread"], r["single"]
    first, again, big = (
        s["search_first_ms"]["end_to_end"],
        s["search_again_ms"]["end_to_end"],
        one["search_ms"]["end_to_end"],
    )
    return [
        f"{s['passages']:,} passages / {s['agents']:,} agents: top-10 p50 {first['p50']} ms, "
        f"p95 {first['p95']} ms (again: {again['p50']} / {again['p95']})",
        f"{one['passages']:,} in one agent: p50 {big['p50']} ms, p95 {big['p95']} ms",
        f"db {r['db_gb']} GB, load {s['load_seconds'] + one['load_seconds']:.0f} s ({r['vectors']})",
    ], True


def _concurrency(r: dict[str, Any]) -> tuple[list[str], bool]:
    lines, ok = [], True
    for run in r["runs"]:
        lines.append(
            f"{run['users']} users x {run['messages_per_user']} ({run['mode']}): {run['wall_s']} s vs ideal "
            f"{run['ideal_wall_s']} s, ratio {run['throughput_ratio']}, lost {run['lost_messages']}, "
            f"out of order {run['users_out_of_order']}, db busy {run['time_split_s']['db_thread_busy_fraction']}"
        )
        ok = ok and run["lost_messages"] == 0 and run["users_out_of_order"] == 0 and run["failed_turns"] == 0
    return lines, ok


def _documents(r: dict[str, Any]) -> tuple[list[str], bool]:
    loads = ", ".join(f"{x['format']} {x['mb_per_s']} MB/s ({x['passages_per_s']} p/s)" for x in r["load"])
    s = r["search"]
    return [
        f"load: {loads}",
        f"search over {s['passages']:,} document passages: p50 {s['search_ms']['p50']} ms, "
        f"p95 {s['search_ms']['p95']} ms",
    ], True


def _scheduler_scale(r: dict[str, Any]) -> tuple[list[str], bool]:
    late, woke = r["lateness_ms"], r["wake_lateness_ms"]
    return [
        f"{r['agents']:,} agents / {r['reminders']:,} reminders: start to armed {r['start_to_armed_ms']} ms, "
        f"idle sweep {r['idle_sweep_ms']} ms, rss {r['rss_mb']['after_start']} MB",
        f"{r['due']} due at once: delivered {r['delivered']}, late p50 {late['p50']:.0f} ms, "
        f"p99 {late['p99']:.0f} ms (woken p50 {woke['p50']:.0f} / p99 {woke['p99']:.0f} ms)",
    ], r["delivered"] == r["due"]


def _scale_out(r: dict[str, Any]) -> tuple[list[str], bool]:
    lines, ok = [], True
    for run in r.get("scale_out", []):
        lines.append(
            f"{run['processes']} process(es), {run['people']} x {run['messages_per_person']} ({run['mode']}): "
            f"{run['messages_per_s']} msg/s, ratio {run['throughput_ratio']}, lost {run['lost_messages']}, "
            f"duplicates {run['duplicate_deliveries']}, out of order {run['people_out_of_send_order']}, "
            f"busy {run['resources']['machine_busy_fraction']}"
        )
        ok = ok and not (
            run["lost_messages"] or run["duplicate_deliveries"] or run["people_out_of_send_order"]
        )
    for o in r.get("turn_overhead", []):
        ms = o["overhead_ms"]
        lines.append(f"turn overhead on {o['backend']}: p50 {ms['p50']} ms, p99 {ms['p99']} ms")
    return lines, ok


SUMMARY: dict[str, Callable[[dict[str, Any]], tuple[list[str], bool]]] = {
    "turn_overhead": _turn_overhead,
    "tokens_growth": _tokens_growth,
    "archival_scale": _archival_scale,
    "concurrency": _concurrency,
    "scheduler_scale": _scheduler_scale,
    "documents": _documents,
    "scale_out": _scale_out,
}


def run_one(
    name: str, extra: list[str], out: Path, timeout: float
) -> tuple[dict[str, Any] | None, float, str]:
    target = out / f"{name}.json"
    command = [sys.executable, str(HERE / f"{name}.py"), *extra, "--json", str(target)]
    if name == "tokens_growth":
        command += ["--plot", str(out / "tokens_growth.png")]
    print(f"$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - started, f"timed out after {timeout:.0f} s"
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or not target.exists():
        return None, elapsed, (done.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(target.read_text()), elapsed, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full sizes (tens of minutes, ~11 GB of disk)")
    parser.add_argument("--json", default=None, help="directory for each benchmark's JSON and the plot")
    parser.add_argument("--only", nargs="*", choices=sorted(REDUCED), default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    args = parser.parse_args()
    sizes = FULL if args.full else REDUCED
    timeout = args.timeout or (7200 if args.full else 240)
    names = args.only or list(sizes)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.json or tmp)
        out.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[str, float, list[str], bool]] = []
        started = time.perf_counter()
        for name in names:
            result, elapsed, error = run_one(name, sizes[name], out, timeout)
            if result is None:
                rows.append((name, elapsed, [f"FAILED: {error}"], False))
            else:
                lines, ok = SUMMARY[name](result)
                rows.append((name, elapsed, lines, ok))
        total = time.perf_counter() - started

    print(f"\n{'benchmark':<15} {'s':>6}  {'ok':<3} figures")
    for name, elapsed, lines, ok in rows:
        for i, line in enumerate(lines):
            head = f"{name:<15} {elapsed:>6.0f}  {'yes' if ok else 'NO':<3}" if i == 0 else " " * 26
            print(f"{head} {line}")
    print(f"total {total:.0f} s" + (f"; JSON in {args.json}" if args.json else ""))
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
