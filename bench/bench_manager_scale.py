"""The manager at the paper's scale, simulated: 8192 nodes, 32 slices of 256, 2000 trials.

    python bench/bench_manager_scale.py [--trials 2000] [--median-seconds 2]
        [--deephyper-trials 500] [--deephyper-timeout 240]
        [--settings ours ours-per-trial deephyper random]
    smoke run (< 1 min): --trials 100 --median-seconds 0.5 --settings ours random

The real manager, trial database, optimiser and Parsl launcher run searches on
bench/sites/simulated-frontier.yaml (manager_probe.py: timed subclasses, the
library unchanged); every trial is bench/standin_trainer.py, a process that
sleeps for a drawn duration (lognormal-ish, heavy right tail, by model size)
and writes result.json. Per setting this reports:

- per trial, the manager's work on it: ask (its share of the propose call that
  created it), tell, database (each commit or read naming it), dispatch
  (TrialExecutor.submit) and their sum, as p50/p99 in bins of the evaluations told
  before the trial was proposed;
- the latency users feel: from a trainer process ending to the manager marking
  the next trial running on that slice ("gap"), then to the next trainer process
  running ("launch": Parsl, the shell, Python start-up);
- the manager's busy time per trial (every pass of its loop, shared work included)
  and its CPU time; the optimiser's calls also as CPU time of the manager's thread,
  which the other processes on this shared machine do not inflate;
- slice utilisation: trainer process time / (slices x makespan), over the run and
  in the steady state (all slices started, trials still being created), and that
  of a manager without overhead given the same durations (list scheduling).

Settings: `ours` (packaged table_iv: cbo with orchestrator/optimizers.py's
defaults; the outcomes that finished since the last proposal told in one call,
as orchestrator/search/proposers.py does); `ours-per-trial` (the same, told one by one
as they finish: the manager before that change); `deephyper` (the same
space with deephyper.hpo.CBO's signature defaults, stopped after
--deephyper-trials or --deephyper-timeout s: it takes seconds per tell);
`random` (the zero-cost optimiser: the baseline of the ratios).
Trials here are ~500x shorter than real 10-epoch trials, so the manager's cost
weighs ~500x more than on Frontier; min_trial_s_for_95pct says where it stops
mattering. The trainers run on the manager's two cores: the machine is shared, noisy.
"""
from __future__ import annotations

import argparse
import bisect
import heapq
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchio import RESULTS, save_result
from manager_probe import NODES, SITE_FILE, Probe, run_search
from orchestrator.sites import load_site
from orchestrator.trialdb import load_trials
from trainer.contract.trialconfig import RESULT_FILE

RESULT = RESULTS / "manager_scale.json"
# name -> (optimiser settings, one tell per finished trial instead of the manager's batched tells)
SETTINGS = {"ours": ("ours", False), "ours-per-trial": ("ours", True), "deephyper": ("deephyper", False),
            "random": ("random", False)}
# Per trial (wall seconds, and CPU seconds of the manager's thread for the optimiser's calls), per slice reuse.
TRIAL_METRICS = ("ask", "tell", "tell_cpu", "db", "dispatch", "per_trial", "per_trial_cpu")
GAP_METRICS = ("gap", "launch")
KINDS = ("ask", "tell", "db", "dispatch")


# -- analysis ------------------------------------------------------------------------------

def trial_rows(probe: Probe, run_dir: Path) -> dict[int, dict[str, Any]]:
    """Per trial: the manager's time on it by kind, its slice, DB and trainer-process timestamps."""
    table = load_trials(run_dir)
    rows: dict[int, dict[str, Any]] = {}
    for trial in table.itertuples():
        # No result.json: the stand-in never ran (the launch failed; recorded as a failure, as it should be).
        path = Path(trial.trial_dir) / RESULT_FILE
        result = json.loads(path.read_text()) if path.exists() else {}
        rows[trial.trial_id] = {"status": trial.status, "objective": trial.objective, "slice": trial.slice_index,
                                "marked_running": trial.started_at.timestamp(), "seen_end": trial.finished_at.timestamp(),
                                "proc_start": result.get("started_at"), "proc_end": result.get("finished_at"), "told": 0,
                                **{f"{kind}{cpu}": 0.0 for kind in KINDS for cpu in ("", "_cpu")}}
    for call in probe.calls:
        if call["kind"] == "loop":
            continue
        shares = [(t, 1 / len(call["trials"])) for t in call.get("trials", [])]  # one call, several trials
        for trial_id, share in shares + ([(call["trial"], 1.0)] if call["trial"] is not None else []):
            rows[trial_id][call["kind"]] += call["seconds"] * share
            rows[trial_id][f"{call['kind']}_cpu"] += call["cpu_seconds"] * share
        if call["kind"] == "ask":
            for trial_id in call["trials"]:
                rows[trial_id]["told"] = call["told"]
    for row in rows.values():
        row["per_trial"] = sum(row[kind] for kind in KINDS)
        row["per_trial_cpu"] = sum(row[f"{kind}_cpu"] for kind in KINDS)
    return rows


def slice_gaps(rows: dict[int, dict[str, Any]], tells: list[float]) -> list[dict[str, float]]:
    """For every reuse of a slice: trainer end -> next trial marked running -> next trainer running."""
    by_slice: dict[int, list[dict[str, Any]]] = {}
    for row in rows.values():
        by_slice.setdefault(row["slice"], []).append(row)
    gaps = []
    for runs in by_slice.values():
        runs.sort(key=lambda r: r["marked_running"])
        for before, after in zip(runs, runs[1:]):
            free = before["proc_end"] or before["seen_end"]
            gaps.append({"told": bisect.bisect_right(tells, free), "gap": after["marked_running"] - free,
                         "launch": None if after["proc_start"] is None else after["proc_start"] - after["marked_running"]})
    return gaps


def ideal_makespan(durations: list[float], slices: int) -> float:
    """A manager without overhead: each trial, in creation order, starts the moment a slice frees."""
    free = [0.0] * slices
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def utilisation(rows: dict[int, dict[str, Any]], probe: Probe, slices: int) -> dict[str, float]:
    runs = [rows[k] for k in sorted(rows) if rows[k]["proc_start"] is not None]
    durations = [r["proc_end"] - r["proc_start"] for r in runs]
    end = max(r["proc_end"] for r in runs)
    makespan = end - probe.started
    # Steady state: from the moment every slice has run a trial to the creation of the last trial.
    begin = sorted(r["proc_start"] for r in runs)[min(slices, len(runs)) - 1]
    creations = [c["at"] for c in probe.calls if c["name"] == "create_trial"]
    stop = max(creations)
    steady = sum(max(0.0, min(r["proc_end"], stop) - max(r["proc_start"], begin)) for r in runs)
    ideal = ideal_makespan(durations, slices)
    whole = sum(durations) / (slices * makespan)
    return {"makespan_s": makespan, "utilisation": whole,
            "steady_utilisation": steady / (slices * (stop - begin)) if stop > begin else float("nan"),
            "ideal_makespan_s": ideal, "ideal_utilisation": sum(durations) / (slices * ideal),
            "utilisation_vs_ideal": whole / (sum(durations) / (slices * ideal)),
            "trial_seconds_p50": float(np.median(durations)), "trial_seconds_p99": float(np.percentile(durations, 99))}


def binned(samples: list[tuple[int, float]], width: int) -> list[dict[str, float]]:
    """p50/p99 of (evaluations so far, seconds) samples in bins [k*width, (k+1)*width)."""
    bins: dict[int, list[float]] = {}
    for told, seconds in samples:
        if seconds is not None:
            bins.setdefault(told // width, []).append(seconds)
    return [{"from": k * width, "to": (k + 1) * width, "n": len(v), "p50_s": float(np.percentile(v, 50)),
             "p99_s": float(np.percentile(v, 99))} for k, v in sorted(bins.items())]


def analyse(setting: str, probe: Probe, run_dir: Path, cpu: dict[str, float], width: int) -> dict[str, Any]:
    rows = trial_rows(probe, run_dir)
    gaps = slice_gaps(rows, probe.tells)
    slices = NODES // load_site(SITE_FILE).nodes_per_trial
    bins = {m: binned([(r["told"], r[m]) for r in rows.values()], width) for m in TRIAL_METRICS}
    bins.update({m: binned([(g["told"], g[m]) for g in gaps], width) for m in GAP_METRICS})
    loop = [c for c in probe.calls if c["kind"] == "loop"]
    busy = sum(c["seconds"] for c in loop)
    objectives = [r["objective"] for r in rows.values() if r["status"] == "completed"]
    summary = {"trials": len(rows), "completed": len(objectives),
               "failed": sum(r["status"] == "failed" for r in rows.values()),
               "never_ran": sum(r["proc_start"] is None for r in rows.values()),
               "best_objective": min(objectives) if objectives else None,
               "manager_busy_per_trial_s": busy / len(rows),
               "manager_loop_cpu_per_trial_s": sum(c["cpu_seconds"] for c in loop) / len(rows),
               "manager_cpu_per_trial_s": cpu["manager_cpu_s"] / len(rows),  # all its threads (Parsl's too)
               "trainer_cpu_per_trial_s": cpu["trainers_cpu_s"] / len(rows),
               "throughput_trials_per_s": len(rows) / (probe.ended - probe.started),
               **utilisation(rows, probe, slices)}
    # The shortest trials that keep 95% of the slices busy: the manager (one loop) handles at most
    # 1/busy trials per second across all slices, and even unqueued a slice idles for one trial's
    # handling plus its launch (the measured gap also holds queueing, when the manager is saturated).
    launches = [g["launch"] for g in gaps if g["launch"] is not None]
    idle = float(np.median([r["per_trial"] for r in rows.values()]) + (np.median(launches) if launches else 0.0))
    summary["min_trial_s_for_95pct"] = max(slices * summary["manager_busy_per_trial_s"] / 0.95, 19 * idle)
    return {"setting": setting, "summary": summary, "bins": bins, "db_methods": by_name(probe, "db"),
            "loop_steps": by_name(probe, "loop")}


def by_name(probe: Probe, kind: str) -> dict[str, dict[str, float]]:
    """Every call of one kind, by method: count, total, p50 and p99 seconds."""
    found: dict[str, list[float]] = {}
    for call in probe.calls:
        if call["kind"] == kind:
            found.setdefault(call["name"], []).append(call["seconds"])
    return {name: {"n": len(v), "total_s": float(sum(v)), "p50_s": float(np.percentile(v, 50)),
                   "p99_s": float(np.percentile(v, 99))} for name, v in found.items()}


# -- output ----------------------------------------------------------------------------------

def print_tables(reports: list[dict[str, Any]]) -> None:
    names = [r["setting"] for r in reports]
    print("\nper-trial p50 / p99 in ms, by evaluations told so far")
    for metric in TRIAL_METRICS + GAP_METRICS:
        print(f"\n{metric:10s} " + "".join(f"{name:>22s}" for name in names))
        edges = sorted({(b["from"], b["to"]) for r in reports for b in r["bins"][metric]})
        for lo, hi in edges:
            cells = []
            for report in reports:
                found = [b for b in report["bins"][metric] if b["from"] == lo]
                cells.append(f"{found[0]['p50_s'] * 1e3:9.1f} /{found[0]['p99_s'] * 1e3:9.1f}" if found else "-")
            print(f"{lo:>4d}-{hi:<5d} " + "".join(f"{c:>22s}" for c in cells))
    print()
    keys = list(reports[0]["summary"])
    print(f"{'':28s}" + "".join(f"{name:>16s}" for name in names))
    for key in keys:
        values = [r["summary"][key] for r in reports]
        print(f"{key:28s}" + "".join(f"{v:16.4g}" if isinstance(v, (int, float)) else f"{v!s:>16s}" for v in values))


def ratios(reports: list[dict[str, Any]], baseline: str = "random") -> dict[str, dict[str, float]]:
    base = next((r["summary"] for r in reports if r["setting"] == baseline), None)
    if base is None:
        return {}
    keys = ("manager_busy_per_trial_s", "utilisation", "steady_utilisation", "makespan_s")
    return {r["setting"]: {k: r["summary"][k] / base[k] for k in keys if base[k]}
            for r in reports if r["setting"] != baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000, help="trials of `ours` and `random` [2000]")
    parser.add_argument("--median-seconds", type=float, default=2.0, help="median stand-in trial duration [2]")
    parser.add_argument("--deephyper-trials", type=int, default=500, help="at most this many with DeepHyper's defaults")
    parser.add_argument("--deephyper-timeout", type=float, default=240.0,
                        help="seconds after which the deephyper setting starts no new trial [240]")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--bin", type=int, default=250, help="width of the evaluations-so-far bins [250]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="keep the run directories here (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    # Parsl leaves a failed bash app's stdout/stderr files to the garbage collector: one warning per failure.
    warnings.filterwarnings("ignore", category=ResourceWarning)

    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-manager-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for setting in args.settings:
            optimizer, per_trial_tells = SETTINGS[setting]
            slow = optimizer == "deephyper"
            load = os.getloadavg()[0]
            probe, run_dir, cpu = run_search(setting, optimizer, args.deephyper_trials if slow else args.trials,
                                             timeout=args.deephyper_timeout if slow else None,
                                             median_seconds=args.median_seconds, seed=args.seed, work=work,
                                             per_trial_tells=per_trial_tells)
            report = analyse(setting, probe, run_dir, cpu, args.bin)
            report["summary"].update(load_average_before=load, load_average_after=os.getloadavg()[0])
            reports.append(report)
            save(args, reports)  # after every setting: a long run that fails later keeps what it measured
            s = report["summary"]
            print(f"{setting}: {s['trials']} trials in {s['makespan_s']:.0f} s, utilisation {s['utilisation']:.2f} "
                  f"(ideal {s['ideal_utilisation']:.2f}), manager busy {s['manager_busy_per_trial_s'] * 1e3:.1f} ms/trial",
                  flush=True)
    print_tables(reports)
    for setting, values in ratios(reports).items():
        print(f"{setting} / random: " + ", ".join(f"{k} {v:.2f}x" for k, v in values.items()))
    print(f"wrote {args.output}")


def save(args: argparse.Namespace, reports: list[dict[str, Any]]) -> None:
    save_result(args.output, announce=False, payload={
        "what": "the real manager, trial database and Parsl on 8192 simulated nodes (32 slices of 256), "
                "stand-in trials; per-trial seconds binned by evaluations told before the trial was proposed",
        "machine": {"node": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "command": sys.argv, "reports": reports, "ratios_vs_random": ratios(reports)})

if __name__ == "__main__":
    main()
