"""The trial database snapshot for readers on other hosts (orchestrator/trials/snapshot.py, issue 11)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from datasets import BIN, emt_only
from hpo_helpers import assert_one_line_error, gfm_hpo
from orchestrator.trialdb import TrialDB, load_trials
from orchestrator.trials import runconfig, snapshot
from orchestrator.views.status import format_status, status_report

ROOT = Path(__file__).resolve().parents[1]


def _fill(db: TrialDB, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        trial_id = db.create_trial("hpo", {"hidden_dim": 10 + i, "mpnn_type": "EGNN"})
        db.mark_running(trial_id, 0, ["local0001"])
        db.mark_finished(trial_id, "completed", 0.5 + i, None, None)


def test_snapshot_reads_exactly_what_the_live_database_holds(tmp_path):
    with TrialDB(tmp_path) as db:
        _fill(db, 3)
        taken = snapshot.publish(db)
        _fill(db, 1, start=3)  # after the snapshot: only the live database has it
    live, copy = load_trials(tmp_path, "live"), load_trials(tmp_path, "snapshot")
    assert list(copy.columns) == list(live.columns)
    pd.testing.assert_frame_equal(copy, live.iloc[:3])
    assert copy.attrs["snapshot"] and copy.attrs["snapshot_at"] == pytest.approx(taken)
    assert copy.attrs["snapshot_age_s"] >= 0
    assert not live.attrs["snapshot"] and live.attrs["snapshot_age_s"] is None
    # a file in rollback-journal mode: nothing beside it for a reader on another host to share
    with sqlite3.connect(snapshot.snapshot_path(tmp_path)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_auto_reads_the_snapshot_only_where_the_manager_runs_elsewhere(tmp_path):
    runconfig.save(tmp_path, runconfig.RunSettings(site="local", data=["x.bp"]))
    with TrialDB(tmp_path) as db:
        _fill(db, 2)
        snapshot.publish(db)
        _fill(db, 1, start=2)
    assert len(load_trials(tmp_path)) == 3   # no manager recorded: the live database
    snapshot.record_owner(tmp_path)
    assert len(load_trials(tmp_path)) == 3   # the manager's own host: live, always current
    owner = json.loads((tmp_path / snapshot.OWNER_FILE).read_text())
    (tmp_path / snapshot.OWNER_FILE).write_text(json.dumps({**owner, "host": "compute-node-7"}))
    seen = load_trials(tmp_path)
    assert len(seen) == 2 and seen.attrs["snapshot"] and seen.attrs["owner"]["host"] == "compute-node-7"
    text = format_status(status_report(tmp_path))
    assert "snapshot from" in text and "s ago (manager on compute-node-7)" in text
    assert "snapshot from" not in format_status(status_report(tmp_path, source="live"))


def test_forcing_a_missing_snapshot_says_so(tmp_path):
    with TrialDB(tmp_path) as db:
        _fill(db, 1)
    with pytest.raises(FileNotFoundError, match="no snapshot"):
        load_trials(tmp_path, "snapshot")


def test_a_failed_publish_leaves_the_last_snapshot_whole(tmp_path, monkeypatch):
    with TrialDB(tmp_path) as db:
        _fill(db, 2)
        snapshot.publish(db)
        _fill(db, 1, start=2)

        def half_copy(target):  # writes part of a database, then fails as a full disk would
            target.execute("CREATE TABLE partial (x)")
            raise OSError("No space left on device")

        monkeypatch.setattr(db, "backup", half_copy)
        snapshot.Publisher(db, 5.0).publish()  # logged, not raised: the campaign goes on
    assert len(load_trials(tmp_path, "snapshot")) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if "snapshot" in p.name) == [snapshot.SNAPSHOT_NAME]


def test_a_reader_never_sees_a_partial_snapshot(tmp_path):
    """Publishing continuously while another thread reads: every read opens a whole database whose
    trials are one committed state (ids 1..n, each completed with its objective)."""
    with TrialDB(tmp_path) as db:
        _fill(db, 1)
        snapshot.publish(db)
        done = threading.Event()

        def write():
            for i in range(1, 40):
                _fill(db, 1, start=i)
                snapshot.publish(db)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        counts = []
        while not done.is_set():
            table = load_trials(tmp_path, "snapshot")
            assert list(table["trial_id"]) == list(range(1, len(table) + 1))
            assert (table["status"] == "completed").all() and table["objective"].notna().all()
            counts.append(len(table))
        writer.join()
    assert counts == sorted(counts) and len(counts) > 1


def test_a_bad_snapshot_interval_is_refused():
    done = gfm_hpo("launch", "--snapshot-interval", "0", "--dry-run")
    assert_one_line_error(done, "--snapshot-interval")


READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from orchestrator.trialdb import load_trials
    from orchestrator.trials.schema import STATUSES
    run, stop = Path(sys.argv[1]), Path(sys.argv[2])
    reads, problems = [], []
    while not stop.exists():
        try:
            table = load_trials(run, "snapshot")
        except FileNotFoundError:       # before the manager's first snapshot
            time.sleep(0.01)
            continue
        ids = list(table["trial_id"])
        if ids != list(range(1, len(ids) + 1)):
            problems.append(f"trial ids {ids}")
        if not table["status"].isin(STATUSES).all():
            problems.append(f"statuses {sorted(set(table['status']))}")
        done = table[table["status"] == "completed"]
        if done["objective"].isna().any() or done["finished_at"].isna().any():
            problems.append("a completed trial without its objective or end")
        running = table[table["status"] == "running"]
        if running["started_at"].isna().any() or running["slice_index"].isna().any():
            problems.append("a running trial without its start or slice")
        reads.append({"at": table.attrs["snapshot_at"], "age": table.attrs["snapshot_age_s"],
                      "trials": len(table), "completed": len(done)})
        time.sleep(0.02)
    print(json.dumps({"reads": reads, "problems": problems}))
""")


@emt_only  # the stand-in trainer never reads the data
def test_a_second_process_reads_consistent_snapshots_while_the_manager_writes(tmp_path, molecules_bp):
    site = tmp_path / "standin-site.yaml"
    site.write_text(yaml.safe_dump({
        "name": "standin", "scheduler": "local", "launcher": "none", "nodes_per_trial": 1,
        "node_pattern": "local[0001-0002]",
        "trainer_command": [sys.executable, str(ROOT / "bench" / "standin_trainer.py"), "--median-seconds", "0.3"]}))
    run_dir, stop = tmp_path / "run", tmp_path / "stop-reading"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(run_dir), str(stop)], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    try:
        launched = gfm_hpo("launch", "--site", site, "--nodes", "2", "--max-evals", "8", "--epochs", "2",
                           "--space", "small", "--data", molecules_bp, "--run-dir", run_dir,
                           "--snapshot-interval", "0.2", timeout=600)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=120)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    seen = json.loads(out)
    assert seen["problems"] == []
    reads = seen["reads"]
    print(f"{len(reads)} reads of {len({r['at'] for r in reads})} snapshots, "
          f"ages {min(r['age'] for r in reads):.2f}-{max(r['age'] for r in reads):.2f} s")
    assert len({r["at"] for r in reads}) >= 3   # several snapshots, each read whole
    assert [r["at"] for r in reads] == sorted(r["at"] for r in reads)
    assert [r["completed"] for r in reads] == sorted(r["completed"] for r in reads)
    assert all(r["age"] >= 0 for r in reads)
    # the finished manager's final snapshot is the final state
    pd.testing.assert_frame_equal(load_trials(run_dir, "snapshot"), load_trials(run_dir, "live"))
    owner = json.loads((run_dir / snapshot.OWNER_FILE).read_text())
    assert owner["host"] == snapshot.this_host() and owner["pid"] > 0
    status = gfm_hpo("status", run_dir, "--source", "snapshot", check=True)
    assert "snapshot from" in status.stdout and "8 completed" in status.stdout
