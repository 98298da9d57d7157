"""Small real ensembles for tests: members trained by the real `gfm-train` on the test data, a real manifest.

Both are built together, once per test session and data variant (datasets.py)
however many test modules import the fixtures (pytest would otherwise run an
imported fixture once per module): conversions side by side, then all five
trainings at once.
  ethanol_ensemble  3 members (EGNN direct, SchNet conservative, PNA direct) on 200 ethanol frames
                    (rMD17's, or generated ones: one molecule in both, as the tests expect)
  mixed_ensemble    2 members on two sources: source 0 = crystals, source 1 = slabs
"""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datasets import BIN, convert
from datasets import BIN, SOURCE_NAMES, SessionData, convert
from trainer.contract import typed
from trainer.contract import typed
from trainer.contract.trialconfig import TrialConfig, write_trial
from trainer.contract.trialconfig import TrialConfig, write_trial
from trainer.ensemble.manifest import TrainedMember, write_manifest

_BUILT: dict[str, dict[str, Path]] = {}  # variant: ensemble name: ENSEMBLE_DIR

ETHANOL_MEMBERS = {
    "egnn16": ({"mpnn_type": "EGNN", "num_conv_layers": 2, "hidden_dim": 16, "fc_dim": 16}, 2),
    "schnet12": ({"mpnn_type": "SchNet", "num_conv_layers": 2, "hidden_dim": 12, "fc_dim": 12,
                  "force_mode": "conservative"}, 1),
    "pna8": ({"mpnn_type": "PNA", "num_conv_layers": 1, "hidden_dim": 8, "fc_dim": 8}, 2),
}
MIXED_MEMBERS = {
    "egnn8": ({"mpnn_type": "EGNN", "num_conv_layers": 2, "hidden_dim": 8, "fc_dim": 8}, 1),
    "schnet8": ({"mpnn_type": "SchNet", "num_conv_layers": 2, "hidden_dim": 8, "fc_dim": 8}, 1),
}


def _write_trials(root: Path, data: list[Path], members: dict[str, tuple[dict, int]],
                  batch_size: int) -> list[tuple[str, dict, Path]]:
    trials = []
    for seed, (name, (model, epochs)) in enumerate(members.items()):
        trial = root / "trials" / name
        write_trial(trial, typed.build(TrialConfig, {
            "name": name, "data": {"sources": [{"path": str(p)} for p in data]}, "model": model,
            "training": {"epochs": epochs, "batch_size": batch_size, "threads": 1, "seed": seed}}, "test"))
        trials.append((name, model, trial))
    return trials


def _train(trials: list[tuple[str, dict, Path]]) -> list[TrainedMember]:
    """Train every member with the real gfm-train, all at once (one thread each: start-up dominates)."""
    running = [subprocess.Popen([str(BIN / "gfm-train"), str(trial)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _, _, trial in trials]
    sources = []
    for trial_id, ((name, model, trial), process) in enumerate(zip(trials, running)):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"training member {name} failed:\n{out}{err}"
        sources.append(TrainedMember(name, trial / "best.pt", dict(model), trial_id))
    return sources


def build_all(root: Path, session_data: SessionData, variant: str) -> dict[str, Path]:
    """Both ensembles; the conversions run side by side, then all five trainings."""
    jobs = {"ethanol": (200, 0.1, 0.1), "crystals": (40, 0.2, 0.1), "slabs": (30, 0.2, 0.1)}
    files = {role: session_data.file(variant, role) for role in jobs}
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {role: pool.submit(convert, files[role], root / f"{role}.bp", SOURCE_NAMES[variant][role],
                                     count, val, test)
                   for role, (count, val, test) in jobs.items()}
        data = {role: future.result() for role, future in futures.items()}
    ethanol = _write_trials(root / "ethanol", [data["ethanol"]], ETHANOL_MEMBERS, batch_size=16)
    mixed = _write_trials(root / "mixed", [data["crystals"], data["slabs"]], MIXED_MEMBERS, batch_size=4)
    members = _train(ethanol + mixed)
    built = {}
    for name, group in (("ethanol", members[:len(ethanol)]), ("mixed", members[len(ethanol):])):
        write_manifest(root / name / "ensemble", group, run_dir=str(root / name), max_neighbours=50)
        built[name] = root / name / "ensemble"
    return built


def _ensemble(name: str, tmp_path_factory, session_data: SessionData, variant: str) -> Path:
    if variant not in _BUILT:
        _BUILT[variant] = build_all(tmp_path_factory.mktemp(f"ensembles_{variant}"), session_data, variant)
    return _BUILT[variant][name]


@pytest.fixture(scope="module")
def ethanol_ensemble(tmp_path_factory, session_data, variant) -> Path:
    """ENSEMBLE_DIR of three ethanol members (treat as read-only: copy it to change it); the
    converted dataset is ENSEMBLE_DIR/../../ethanol.bp."""
    return _ensemble("ethanol", tmp_path_factory, session_data, variant)


@pytest.fixture(scope="module")
def mixed_ensemble(tmp_path_factory, session_data, variant) -> Path:
    """ENSEMBLE_DIR of two members trained on crystals (source 0) and slabs (source 1)."""
    return _ensemble("mixed", tmp_path_factory, session_data, variant)
