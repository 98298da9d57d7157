"""The trial database: state machine, durability under kill -9, readers while the manager writes."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest

from orchestrator.trialdb import load_curves, load_events, load_trials
from orchestrator.trials.db import TrialDB, TransitionError
from trainer.contract.errors import UserError

PARAMS = {"mpnn_type": "PNA", "num_conv_layers": 3, "hidden_dim": 120, "num_fc_layers": 2, "fc_dim": 400}


def epoch(i: int, val: float) -> dict:
    return {"epoch": i, "train_loss": val * 1.1, "val_loss": val, "val_energy_mae": 10 * val,
            "val_force_mae": 20 * val, "seconds": 1.5, "graphs_per_second": 100.0, "learning_rate": 1e-3}


def result(*vals: float) -> dict:
    """A result.json as the trainer writes it (trainer/result.py: Result.to_json)."""
    epochs = [epoch(i + 1, v) for i, v in enumerate(vals)]
    return {"status": "completed", "epochs": epochs, "best_val_loss": min(vals), "objective": min(vals),
            "epochs_done": len(vals), "num_parameters": 12345, "wall_time": 42.0}


def test_state_machine_and_events(tmp_path):
    with TrialDB(tmp_path) as db:
        t = db.create_trial("hpo", PARAMS, "trials/{trial_id:05d}")
        assert db.get(t).status == "queued" and db.get(t).trial_dir == f"trials/{t:05d}"
        with pytest.raises(TransitionError):
            db.mark_finished(t, "completed", objective=1.0)  # never ran
        assert db.mark_running(t, 3, ["n001", "n002"]) == 1
        db.update_progress(t, result(0.9))
        with pytest.raises(TransitionError, match="record it as failed"):
            db.mark_finished(t, "completed", objective=float("nan"))
        with pytest.raises(TransitionError, match="reason"):
            db.mark_finished(t, "failed")
        db.mark_finished(t, "failed", error="CUDA out of memory")
        db.requeue(t, "retry on other nodes")
        assert db.mark_running(t, 4, ["n003"]) == 2
        db.mark_finished(t, "completed", result=result(0.9, 0.5, 0.7))
        trial = db.get(t)
        assert (trial.status, trial.objective, trial.epochs_done, trial.attempt) == ("completed", 0.5, 3, 2)
        assert (trial.slice_index, trial.nodes, trial.num_parameters, trial.error) == (4, ["n003"], 12345, None)
        for illegal in (lambda: db.requeue(t, "again"), lambda: db.mark_running(t, 0, ["n1"]),
                        lambda: db.mark_finished(t, "failed", error="x"), lambda: db.update_progress(t, result(1))):
            with pytest.raises(TransitionError):
                illegal()  # a completed trial is never run again
        statuses = [status for _, status, _ in db.events(t)]
        assert statuses == ["queued", "running", "failed", "queued", "running", "completed"]
        assert db.events(t)[3][2] == {"requeued_from": "failed", "reason": "retry on other nodes",
                                      "nodes": ["n001", "n002"], "error": "CUDA out of memory"}
        never_started = db.create_trial("hpo", PARAMS)
        db.mark_finished(never_started, "failed", error="srun: invalid node name")
        assert db.counts("hpo") == {"queued": 0, "running": 0, "completed": 1, "failed": 1, "interrupted": 0,
                                        "discarded": 0}
        assert [x.trial_id for x in db.trials(statuses=["failed"])] == [never_started]
        with pytest.raises(KeyError):
            db.get(999)
        with pytest.raises(ValueError):
            db.create_trial("sweep", PARAMS)


def test_a_trial_and_its_directory_are_created_together(tmp_path):
    """A manager dying while it prepares a trial leaves no queued trial without a trial.yaml."""
    prepared = []

    def dies_while_writing(trial_dir: str) -> None:
        prepared.append(trial_dir)
        raise KeyboardInterrupt  # stands for the SIGKILL between the row and the file

    with TrialDB(tmp_path) as db:
        with pytest.raises(KeyboardInterrupt):
            db.create_trial("hpo", PARAMS, "trials/{trial_id:05d}", prepare=dies_while_writing)
        assert db.trials() == [] and prepared == ["trials/00001"]
        t = db.create_trial("hpo", PARAMS, "trials/{trial_id:05d}", prepare=prepared.append)
        assert prepared[-1] == db.get(t).trial_dir and [x.trial_id for x in db.trials()] == [t]


def test_wal_mode_meta_and_excluded_nodes(tmp_path):
    with TrialDB(tmp_path) as db:
        db.set_meta("command", ["gfm-hpo", "launch", "--nodes", "8"])
        db.set_meta("seed", 7)
        db.set_meta("seed", 8)
        db.exclude_node("frontier00042", "3 failed trials")
        assert db.get_meta("seed") == 8 and db.get_meta("missing", "x") == "x"
        assert db.get_meta("command") == ["gfm-hpo", "launch", "--nodes", "8"]
        assert db.excluded_nodes() == {"frontier00042": "3 failed trials"}
        other = sqlite3.connect(tmp_path / "trials.db")
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()


def test_calls_from_another_thread(tmp_path):
    """Parsl runs done-callbacks on its own threads."""
    with TrialDB(tmp_path) as db:
        t = db.create_trial("hpo", PARAMS)
        errors = []
        thread = threading.Thread(target=lambda: _catch(errors, db.mark_running, t, 0, ["n1"]))
        thread.start()
        thread.join()
        assert not errors and db.get(t).status == "running"


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as err:  # reported to the test thread, which fails on it
        errors.append(err)


def test_load_trials_columns_and_types(tmp_path):
    with TrialDB(tmp_path) as db:
        done = db.create_trial("hpo", PARAMS, "trials/{trial_id}")
        db.mark_running(done, 0, ["n1", "n2"])
        db.mark_finished(done, "completed", result=result(0.8, 0.6))
        failed = db.create_trial("hpo", {**PARAMS, "mpnn_type": "EGNN"})
        db.mark_running(failed, 1, ["n3"])
        db.mark_finished(failed, "failed", error="NaN loss at epoch 2", result=result(0.9))
        queued = db.create_trial("ensemble", PARAMS, parent_id=done)
    trials = load_trials(tmp_path)
    for column in ("trial_id", "status", "objective", "mpnn_type", "num_conv_layers", "hidden_dim",
                   "num_fc_layers", "fc_dim", "epochs_done", "nodes", "started_at", "finished_at", "error"):
        assert column in trials.columns, column
    assert list(trials.trial_id) == [done, failed, queued]
    assert list(trials.status) == ["completed", "failed", "queued"]
    assert trials.objective.dtype == "float64" and trials.objective.iloc[0] == 0.6
    assert pd.isna(trials.objective.iloc[1]) and trials.error.iloc[1] == "NaN loss at epoch 2"
    assert list(trials.mpnn_type) == ["PNA", "EGNN", "PNA"] and trials.hidden_dim.iloc[0] == 120
    assert isinstance(trials.started_at.dtype, pd.DatetimeTZDtype)
    assert pd.isna(trials.started_at.iloc[2]) and trials.finished_at.iloc[0] >= trials.started_at.iloc[0]
    assert trials.nodes.iloc[0] == ["n1", "n2"] and list(trials.num_nodes) == [2, 1, 0]
    assert list(trials.epochs_done.astype(object)) == [2, 1, pd.NA]
    assert trials.parent_id.iloc[2] == done
    curves = load_curves(tmp_path)
    assert list(zip(curves.trial_id, curves.epoch)) == [(done, 1), (done, 2), (failed, 1)]
    assert curves.val_loss.tolist() == [0.8, 0.6, 0.9] and curves.seconds.dtype == "float64"
    events = load_events(tmp_path)
    assert events.status.tolist().count("queued") == 3 and events.detail.iloc[1]["nodes"] == ["n1", "n2"]


def test_reader_never_breaks_the_writer(tmp_path):
    """A Jupyter-like reader polls load_trials in another process while hundreds of commits happen."""
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, pathlib
        import pandas  # imported before `ready`, so that the first read overlaps the writes
        from orchestrator.trialdb import load_trials
        stop, seen = pathlib.Path({str(stop)!r}), []
        pathlib.Path({str(ready)!r}).touch()
        while True:
            last = stop.exists()
            try:
                table = load_trials({str(tmp_path)!r})
                seen.append([len(table), int((table.status == "completed").sum())])
            except FileNotFoundError:
                pass
            if last:
                break
        print(json.dumps(seen))
        """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    n = 150
    deadline = time.monotonic() + 60
    while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with TrialDB(tmp_path) as db:
        for i in range(n):  # 3 commits per trial: 360 transitions
            t = db.create_trial("hpo", {**PARAMS, "hidden_dim": 100 + i})
            db.mark_running(t, i % 8, [f"n{i % 8}"])
            db.mark_finished(t, "completed", objective=1.0 / (i + 1))
    stop.touch()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert len(seen) >= 10 and seen[-1] == [n, n]
    for (rows0, done0), (rows1, done1) in zip(seen, seen[1:]):
        assert rows1 >= rows0 and done1 >= done0 and done1 <= rows1


def test_kill_minus_9_loses_nothing_committed(tmp_path):
    writer = subprocess.Popen([sys.executable, "-u", "-c", textwrap.dedent(f"""
        from orchestrator.trials.db import TrialDB
        db = TrialDB({str(tmp_path)!r})
        i = 0
        while True:
            t = db.create_trial("hpo", {{"i": i}})
            print("queued", t, flush=True)
            db.mark_running(t, 0, ["n1"])
            print("running", t, flush=True)
            db.mark_finished(t, "completed", objective=float(i))
            print("completed", t, flush=True)
            i += 1
        """)], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in writer.stdout:
        acknowledged.append(line.split())
        if len(acknowledged) == 200:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    order = {"queued": 0, "running": 1, "completed": 2}
    with TrialDB(tmp_path) as db:
        assert db._query("PRAGMA integrity_check") == [("ok",)]
        status = {t.trial_id: t.status for t in db.trials()}
        for state, trial_id in acknowledged:
            assert order[status[int(trial_id)]] >= order[state], (trial_id, state)
        # The database is usable after the crash: unfinished work can be requeued and rerun.
        for trial in db.trials(statuses=["running"]):
            db.requeue(trial.trial_id, "manager crashed")
        assert db.counts()["running"] == 0


def test_foreign_sqlite_file_is_refused(tmp_path):
    other = sqlite3.connect(tmp_path / "trials.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(UserError, match=r"trials.db: not a trial database of this version \(schema version 0"):
        TrialDB(tmp_path)
    with pytest.raises(FileNotFoundError, match="no trial database"):
        load_trials(tmp_path / "elsewhere")
    (tmp_path / "notes.db").write_text("not sqlite at all\n" * 100)
    with pytest.raises(UserError, match="notes.db: not a trial database \\(file is not a database\\)"):
        TrialDB(tmp_path / "notes.db")


def test_origin_is_recorded_and_shown(tmp_path):
    with TrialDB(tmp_path) as db:
        ids = [db.create_trial("hpo", {**PARAMS, "hidden_dim": 100 + k}, origin=origin)
               for k, origin in enumerate(["initial_points", "initial_design", "surrogate", "random"])]
        member = db.create_trial("ensemble", PARAMS, parent_id=ids[2])
        assert db.get(ids[2]).origin == "surrogate" and db.get(member).origin is None
        with pytest.raises(ValueError, match="origin must be one of"):
            db.create_trial("hpo", PARAMS, origin="guess")
    trials = load_trials(tmp_path)
    assert list(trials.columns[:5]) == ["trial_id", "phase", "status", "objective", "origin"]
    assert trials.origin.tolist() == ["initial_points", "initial_design", "surrogate", "random", None]


def _old_schema(version: int) -> str:
    """The schema as version 1 (no origin) or 2 (no status "discarded", discarded_at or rungs table) wrote it."""
    from orchestrator.trials.schema import RUNGS_TABLE, SCHEMA

    old = (SCHEMA.replace(RUNGS_TABLE + ";", "").replace(", 'discarded')", ")")
           .replace(",                      -- HPO: where its configuration came from (ORIGINS)\n"
                    "    discarded_at   INTEGER                    -- ASHA: the rung (epoch) at which it was discarded",
                    ""))
    assert "discarded" not in old and "rungs" not in old
    return old if version == 2 else old.replace(",\n    origin         TEXT", "")


def _schema_1_database(path) -> None:
    """A database as an earlier version wrote it: no origin column, user_version 1."""
    db = sqlite3.connect(path / "trials.db")
    db.executescript(_old_schema(1))
    db.execute("INSERT INTO trials (phase, status, params, submitted_at, objective) "
               "VALUES ('hpo', 'completed', ?, 1.0, 0.5)", (json.dumps(PARAMS),))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_a_database_of_schema_1_is_read_and_upgraded(tmp_path):
    _schema_1_database(tmp_path)
    columns = [row[1] for row in sqlite3.connect(tmp_path / "trials.db").execute("PRAGMA table_info(trials)")]
    assert "origin" not in columns
    before = load_trials(tmp_path)                     # a reader does not change the file
    assert before.origin.tolist() == [None] and before.objective.tolist() == [0.5]
    with TrialDB(tmp_path) as db:                      # the manager's connection adds the column
        assert db.get(1).origin is None and db.get(1).objective == 0.5
        new = db.create_trial("hpo", {**PARAMS, "fc_dim": 300}, origin="surrogate")
    assert load_trials(tmp_path).origin.tolist() == [None, "surrogate"] and new == 2
    assert sqlite3.connect(tmp_path / "trials.db").execute("PRAGMA user_version").fetchone()[0] == 3
    other = tmp_path / "future"
    other.mkdir()
    TrialDB(other).close()
    sqlite3.connect(other / "trials.db").execute("PRAGMA user_version = 7")
    with pytest.raises(UserError, match=r"not a trial database of this version \(schema version 7, this program reads 3\)"):
        TrialDB(other)


def test_a_database_of_schema_2_gains_discarded_trials_and_rungs_keeping_everything(tmp_path):
    """Version 3 rebuilds the trials table (its status CHECK gains "discarded"): rows, ids, events, curves
    and references survive, and new ids continue after the old ones."""
    from orchestrator.trials.rungs import RungDecision

    db = sqlite3.connect(tmp_path / "trials.db")
    db.executescript(_old_schema(2))
    db.execute("INSERT INTO trials (phase, status, params, submitted_at, objective, origin) "
               "VALUES ('hpo', 'completed', ?, 1.0, 0.5, 'surrogate')", (json.dumps(PARAMS),))
    db.execute("INSERT INTO trials (phase, status, params, submitted_at, parent_id) VALUES ('ensemble', 'queued', ?, 2.0, 1)",
               (json.dumps(PARAMS),))
    db.execute("INSERT INTO events (trial_id, at, status, detail) VALUES (1, 1.0, 'completed', '{}')")
    db.execute("INSERT INTO curves (trial_id, epoch, val_loss) VALUES (1, 1, 0.5)")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with pytest.raises(sqlite3.IntegrityError):  # the old table refuses the new status
        with sqlite3.connect(tmp_path / "trials.db") as raw:
            raw.execute("UPDATE trials SET status = 'discarded' WHERE trial_id = 1")
    assert load_trials(tmp_path).discarded_at.isna().all()   # a reader of the old file copes
    with TrialDB(tmp_path) as db:
        assert db.get(1).objective == 0.5 and db.get(1).origin == "surrogate" and db.get(2).parent_id == 1
        assert [status for _, status, _ in db.events(1)] == ["completed"]
        new = db.create_trial("hpo", {**PARAMS, "fc_dim": 300})
        assert new == 3
        db.mark_running(new, 0, ["n1"])
        db.record_rung(RungDecision(new, 1, 0.9, False, 2, 2))
        db.mark_finished(new, "discarded", 0.9, discarded_at=1)
        assert db.get(new).status == "discarded" and db.get(new).discarded_at == 1
    raw = sqlite3.connect(tmp_path / "trials.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    assert raw.execute("SELECT COUNT(*) FROM curves").fetchone()[0] == 1
