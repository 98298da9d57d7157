"""MACE through mace-torch: our wrapper against mace-torch's own model and data pipeline, and the
optional extra (nothing imports mace unless MACE is chosen; without it, one line that says how
to install it)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from datasets import BIN
from test_train import make_trial, result_of
from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.models import DataStats, build_model
from trainer.models.mace_backbone import import_mace, mace_settings

RADIUS = 5.0
CONFIG = dict(mpnn_type="MACE", num_conv_layers=2, hidden_dim=16, fc_dim=16, max_L=1, correlation=2)


@pytest.fixture(scope="module")
def structures(session_data, variant):
    """Molecules, periodic crystals and slabs with adsorbates (generated, or real ethanol, Si and OC20), 3 frames each."""
    return (session_data.frames(variant, "molecules", 3) + session_data.frames(variant, "crystals", 3)
            + session_data.frames(variant, "slabs", 3))


def stats_of(structures) -> DataStats:
    elements = sorted({int(z) for atoms in structures for z in atoms.numbers})
    # References that float32 holds exactly: the model's table is a float32 buffer before .double().
    return DataStats(radius=RADIUS, elements=elements, reference_energies=[{z: -1.0 - 0.125 * z for z in elements}],
                     energy_shift=0.2, energy_scale=0.5, force_scale=0.8, degree_histogram=[0] * 20 + [5])


def mace_torch_prediction(model, stats: DataStats, structures) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Energies, forces and the number of edges of mace-torch's ScaleShiftMACE with our weights, called the library's own way:
    config_from_atoms -> AtomicData.from_config (its neighbour list) -> its DataLoader -> model(batch.to_dict())."""
    modules, _ = import_mace()
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable, torch_geometric
    from mace.tools.torch_tools import default_dtype

    with default_dtype(torch.float64):
        settings = mace_settings(model.config, stats)
        settings["atomic_energies"] = np.array([stats.reference_energies[0][z] for z in stats.elements])
        theirs = modules.ScaleShiftMACE(atomic_inter_scale=stats.energy_scale, atomic_inter_shift=stats.energy_shift,
                                        **settings)
        weights = {k: v for k, v in model.mace.state_dict().items() if not k.startswith("atomic_energies_fn.")}
        missing, unexpected = theirs.load_state_dict(weights, strict=False)
        assert sorted(missing) == ["atomic_energies_fn.atomic_energies", "scale_shift.scale", "scale_shift.shift"]
        assert unexpected == []
        table = AtomicNumberTable(stats.elements)
        data = [mace_data.AtomicData.from_config(mace_data.config_from_atoms(atoms), z_table=table, cutoff=RADIUS)
                for atoms in structures]
        loader = torch_geometric.dataloader.DataLoader(dataset=data, batch_size=len(data), shuffle=False)
        batch = next(iter(loader))
        out = theirs.eval()(batch.to_dict(), compute_force=True)
    return out["energy"].detach(), out["forces"].detach(), batch.edge_index.shape[1]


@pytest.mark.parametrize("force_mode", ["conservative", "direct"])
def test_wrapper_gives_mace_torch_energies_and_forces(structures, force_mode):
    stats = stats_of(structures)
    torch.manual_seed(0)
    model = build_model(ModelConfig(force_mode=force_mode, **CONFIG), stats, dtype=torch.float64).eval()
    graphs = GraphArrays.from_atoms(structures, radius=RADIUS, max_neighbours=None)  # no cap, as in mace-torch
    energy, forces = model(Batch.from_arrays(graphs, dtype=torch.float64))
    expected_energy, expected_forces, edges = mace_torch_prediction(model, stats, structures)
    assert edges == len(graphs.edge_index)  # the same neighbour lists (ours from vesin, theirs from matscipy)
    assert expected_forces.abs().max() > 0.01  # a real check, not zeros against zeros
    torch.testing.assert_close(energy, expected_energy, rtol=1e-12, atol=1e-10)
    if force_mode == "conservative":
        torch.testing.assert_close(forces, expected_forces, rtol=0, atol=1e-10)
    else:  # direct forces are our head on MACE's features: equal only in shape
        assert forces.shape == expected_forces.shape and forces.abs().max() == 0  # its output layer starts at zero
    # mace-torch's import sets this variable (full unpickling for every torch.load); ours puts it back.
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ


def test_unknown_element_is_named():
    stats = DataStats(radius=RADIUS, elements=[1, 8], reference_energies=[{1: -1.0, 8: -2.0}], energy_shift=0.0,
                      energy_scale=1.0, force_scale=1.0, degree_histogram=[0, 2])
    model = build_model(ModelConfig(**{**CONFIG, "num_conv_layers": 1}), stats)
    from ase import Atoms
    graphs = GraphArrays.from_atoms([Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.1]])], radius=RADIUS)
    with pytest.raises(ValueError, match=r"MACE: elements \[6\] are not among the training elements \[1, 8\]"):
        model(Batch.from_arrays(graphs))


def test_importing_the_project_does_not_import_mace():
    script = ("import sys\n"
              "import trainer, trainer.models, trainer.train, trainer.ensemble.predict, trainer.calculator\n"
              "import orchestrator.cli.hpo, orchestrator.cli.ensemble\n"
              "from trainer.models import DataStats, build_model\n"
              "from trainer.contract.trialconfig import ModelConfig\n"
              "build_model(ModelConfig(mpnn_type='PaiNN'), DataStats(5.0, [1], [{1: -1.0}], 0.0, 1.0, 1.0, [0, 2]))\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mace', 'e3nn')))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_mace_trial_without_mace_torch_fails_in_one_line(tmp_path, molecules_bp):
    """A site without the extra: the trial fails as a bad configuration, saying how to install it."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "mace.py").write_text("raise ModuleNotFoundError(\"No module named 'mace'\", name='mace')\n")
    trial = make_trial(tmp_path / "t", molecules_bp, model=CONFIG)
    paths = [str(blocker)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    run = subprocess.run([str(BIN / "gfm-train"), str(trial)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "mpnn_type MACE needs the mace-torch package" in lines[0] and "pip install" in lines[0] and "[mace]" in lines[0]
    result = result_of(trial)
    assert result["status"] == "failed" and "mace-torch" in result["error"]


def test_mace_trial_trains(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp, model={**CONFIG, "force_mode": "conservative"},
                       training={"epochs": 1})
    run = subprocess.run([str(BIN / "gfm-train"), str(trial)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = result_of(trial)
    assert result["status"] == "completed" and np.isfinite(result["objective"]) and result["num_parameters"] > 0
    assert (trial / "best.pt").stat().st_size > 0
