"""bench/bench_search_quality.py: the grid and its snapping, the replay's trial accounting with the real
optimisers, the table build on ethanol data (resumable), and its command-line errors."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_search_quality as bench  # noqa: E402  (bench/ is not a package)
import curve_table  # noqa: E402
import fidelity_replay as fidelity  # noqa: E402
import search_table  # noqa: E402

SCRIPT = [sys.executable, str(BENCH / "bench_search_quality.py")]


def synthetic_points(failed: str | None = None) -> dict[str, dict]:
    """A full table whose objective is a smooth function of the grid (the replay only reads objectives)."""
    points = {}
    for p in search_table.grid_points():
        objective = ({"PNA": 0.0, "EGNN": 0.05, "SchNet": 0.1}[p["mpnn_type"]] + 0.03 * (p["num_conv_layers"] - 4) ** 2
                     + 0.1 * math.log(p["hidden_dim"] / 100) ** 2 + 0.02 * (p["fc_dim"] == 30)
                     + 0.001 * p["num_fc_layers"])
        points[search_table.key(p)] = {"params": p, "objective": objective, "trainer_source_sha256": "t"}
    if failed:
        points[failed]["objective"] = None
    return points


def test_grid_lies_in_the_small_space_and_snaps_to_itself():
    points = search_table.grid_points()
    assert len(points) == len({search_table.key(p) for p in points}) == 360
    space = search_table.grid_space()
    for p in points:
        assert space.check_params(p) == p
        assert search_table.snap(p) == p


@pytest.mark.parametrize("name, value, level", [
    ("hidden_dim", 35, 25), ("hidden_dim", 36, 50), ("hidden_dim", 141, 100), ("hidden_dim", 142, 200),
    ("hidden_dim", 11, 10), ("fc_dim", 54, 30), ("fc_dim", 55, 100), ("num_conv_layers", 5, 5)])
def test_snap_takes_the_nearest_level_in_log_scale(name, value, level):
    proposal = {**search_table.grid_points()[0], name: value}
    assert search_table.snap(proposal)[name] == level


@pytest.mark.parametrize("backend", ["random", "cbo"])
def test_replay_trains_each_table_point_once_and_counts_look_ups(backend):
    points = synthetic_points(failed="PNA/4/100/2/100")
    run = bench.replay(points, backend, seed=3, trials=20, in_flight=4, max_asks=400)
    assert run["trials"] == len(run["history"]) == 20 and not run["asks_exhausted"]
    assert run["asks"] == run["trials"] + run["lookups"]  # every proposal is a trial or a look-up
    values = [v for v in run["history"] if v is not None]
    assert all(any(v == row["objective"] for row in points.values()) for v in values)


def test_replay_stops_at_the_proposal_cap():
    run = bench.replay(synthetic_points(), "random", seed=0, trials=20, in_flight=4, max_asks=6)
    assert run["asks"] == 6 and run["trials"] <= 6 and run["asks_exhausted"]


def test_best_so_far_and_trials_to_target_treat_failures_and_misses():
    curve = bench.best_so_far([None, 0.5, 0.7, None, 0.2])
    assert curve == [None, 0.5, 0.5, 0.5, 0.2]
    assert bench.trials_to(curve, 0.5) == 2 and bench.trials_to(curve, 0.1) is None
    assert bench.median([3, None, None]) is None and bench.median([3, 5, None]) == 5


def test_replay_of_an_incomplete_table_is_a_one_line_error(tmp_path):
    table = tmp_path / "table.json"
    points = synthetic_points()
    points.pop("SchNet/6/200/3/100")
    table.write_text(json.dumps({"points": points}))
    output = tmp_path / "out.json"
    run = subprocess.run([*SCRIPT, "--replay", "--table", str(table), "--output", str(output)],
                         capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and str(table) in run.stderr and "1 of 360" in run.stderr
    assert not output.exists()


@pytest.mark.parametrize("args, problem", [([], "nothing to do"), (["--replay", "--trials", "0"], "--trials"),
                                           (["--replay", "--table", "{table}"], "not a search table")])
def test_bad_input_is_rejected_without_a_traceback(tmp_path, args, problem):
    table = tmp_path / "table.json"
    table.write_text("[1, 2")
    run = subprocess.run([*SCRIPT, *[a.format(table=table) for a in args]], capture_output=True, text=True)
    assert run.returncode == 2 and problem in run.stderr and "Traceback" not in run.stderr


def test_build_trains_points_and_resumes(tmp_path, session_data, variant):
    table, work = tmp_path / "table.json", tmp_path / "work"
    if variant == "emt":
        # The build converts its data once into WORK/ethanol.bp and uses what it finds there: here,
        # 300 generated ethanol frames instead of the first 1000 of ../shared/data's (as on dft).
        work.mkdir()
        shutil.copytree(session_data.dataset("emt", "ethanol", 300), work / "ethanol.bp")
    for _ in range(2):
        subprocess.run([*SCRIPT, "--build", "--limit", "1", "--table", str(table), "--work-dir", str(work)],
                       check=True, capture_output=True, text=True)
    points = json.loads(table.read_text())["points"]
    assert len(points) == 2  # the second run skipped the point the first had trained
    for name, row in points.items():
        result = json.loads((work / "trials" / name.replace("/", "-") / "result.json").read_text())
        assert row["status"] == result["status"] == "completed"
        assert row["objective"] == result["objective"] and math.isfinite(row["objective"])
        assert result["epochs_done"] == search_table.EPOCHS


# -- the multi-fidelity replay (bench/curve_table.py, bench/fidelity_replay.py) ------------------

def synthetic_curves() -> dict[str, dict]:
    """10-epoch curves over the curve grid: each falls towards its final value, faster for some points,
    so an early rung ranks them roughly (not exactly) as the end does."""
    points = {}
    for i, p in enumerate(curve_table.grid_points()):
        final = synthetic_points()[search_table.key(p)]["objective"] + 0.2
        speed = 1.0 + (i % 3)
        losses = [final + 0.5 / (speed * e) for e in range(1, 11)]
        points[curve_table.key(p)] = {"params": p, "objective": min(losses), "val_loss": losses}
    return points


@pytest.mark.parametrize("backend", ["random", "cbo"])
def test_fidelity_replay_counts_every_epoch_and_discards_only_at_rungs(backend):
    points = synthetic_curves()
    constant = fidelity.replay(points, backend, seed=1, rungs=[], reduction_factor=3, epoch_budget=120,
                               in_flight=4, max_asks=400)
    assert constant["discarded"] == 0 and constant["epochs"] == 10 * constant["completed"]
    assert constant["epochs"] >= 120 and constant["trials"] == constant["completed"]
    asha = fidelity.replay(points, backend, seed=1, rungs=[1, 3], reduction_factor=3, epoch_budget=120,
                           in_flight=4, max_asks=400)
    assert asha["discarded"] > 0 and asha["trials"] == asha["completed"] + asha["discarded"]
    assert asha["trials"] > constant["trials"]                # the same epochs buy more trials
    # Each discarded trial trained 1 or 3 epochs, each completed one 10.
    assert 10 * asha["completed"] + asha["discarded"] <= asha["epochs"] <= 10 * asha["completed"] + 3 * asha["discarded"]
    values = [best for _, best, _ in asha["history"]]
    assert values == sorted(values, reverse=True) and asha["best"] == values[-1]
    assert asha["best"] in {row["objective"] for row in points.values()}   # a full-fidelity objective


def test_epochs_to_target():
    assert fidelity.epochs_to([(10, 0.5, 1), (40, 0.3, 4), (90, 0.1, 9)], 0.3) == 40
    assert fidelity.epochs_to([(10, 0.5, 1), (40, 0.3, 4)], 0.3, column=2) == 4
    assert fidelity.epochs_to([(10, 0.5, 1)], 0.3) is None


def test_fidelity_replay_of_an_incomplete_curve_table_is_a_one_line_error(tmp_path):
    table = tmp_path / "curves.json"
    points = synthetic_curves()
    points.pop(next(iter(points)))
    table.write_text(json.dumps({"points": points}))
    run = subprocess.run([*SCRIPT, "--fidelity", "--curve-table", str(table), "--output", str(tmp_path / "o.json")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "1 of 144" in run.stderr and "--build-curves" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o.json").exists()
