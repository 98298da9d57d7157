"""gfm-train at the edges: a stop during start-up, checkpoints it cannot trust, an edited trial.yaml,
a model far too big for the machine. Each ends with one line naming the file and the problem, and
nothing the trial already had is deleted or overwritten."""
from __future__ import annotations

import collections
import signal
import subprocess
import time

import torch
import yaml

from datasets import BIN, emt_only
from test_train import gfm_train, make_trial, result_of
from trainer.contract.result import EXIT_BAD_CONFIG, EXIT_INTERRUPTED


class NotAllowed:  # pickled into a checkpoint: weights-only loading must refuse it
    pass


def handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def torch_loaded(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return "libtorch" in maps.read()


def refused(run: subprocess.CompletedProcess, *fragments: str) -> str:
    assert run.returncode == EXIT_BAD_CONFIG, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if ": failed: " in line]
    assert len(lines) == 1, run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@emt_only
def test_a_stop_during_start_up_is_an_interruption(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp, training={"epochs": 1})
    process = subprocess.Popen([BIN / "gfm-train", str(trial)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 60
    while not handles_sigterm(process.pid):  # installed before torch is imported
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.002)
    early = not torch_loaded(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert early, "the handler came only after torch was loaded"
    assert process.returncode == EXIT_INTERRUPTED, stderr
    result = result_of(trial)
    assert result["status"] == "interrupted" and "before training started" in result["error"]
    again = gfm_train(trial)  # and the trial simply runs when started again
    assert again.returncode == 0, again.stderr
    assert result_of(trial)["status"] == "completed"


@emt_only
def test_checkpoints_that_cannot_be_trusted_are_named_and_kept(tmp_path, molecules_bp):
    cases = {
        "damaged": (lambda p: p.write_bytes(b"\x00 not a zip archive" * 40), ["unreadable checkpoint"]),
        "unsafe": (lambda p: torch.save({"model": collections.OrderedDict(), "x": NotAllowed()}, p),
                   ["unreadable checkpoint", "refused by weights_only loading", "NotAllowed"]),
        "foreign": (lambda p: torch.save({"weights": torch.zeros(3)}, p),
                    ["not a checkpoint of gfm-train", "model, optimizer"]),
    }
    for name, (write, fragments) in cases.items():
        trial = make_trial(tmp_path / name, molecules_bp, training={"epochs": 1})
        path = trial / "checkpoint.pt"
        write(path)
        content = path.read_bytes()
        line = refused(gfm_train(trial), str(path), *fragments)
        assert "weights_only=False" not in line and "add_safe_globals" not in line
        assert path.read_bytes() == content  # never deleted nor replaced: it may be all there is


def _edit(trial, section: str, key: str, value) -> None:
    config = yaml.safe_load((trial / "trial.yaml").read_text())
    config[section][key] = value
    (trial / "trial.yaml").write_text(yaml.safe_dump(config))


@emt_only
def test_a_trial_yaml_edited_after_its_checkpoint(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp, training={"epochs": 1})
    assert gfm_train(trial).returncode == 0
    completed = (trial / "result.json").read_bytes()
    _edit(trial, "model", "hidden_dim", 32)
    refused(gfm_train(trial), f"{trial / 'trial.yaml'}: changed since {trial / 'checkpoint.pt'} was written",
            "model.hidden_dim: 16 -> 32", "new trial directory")
    assert (trial / "result.json").read_bytes() == completed  # the old result is not taken for the new config
    # A checkpoint written before configurations were recorded: the weights themselves do not fit.
    state = torch.load(trial / "checkpoint.pt", weights_only=True)
    del state["bound_config"]
    torch.save(state, trial / "checkpoint.pt")
    refused(gfm_train(trial), f"{trial / 'checkpoint.pt'}: does not fit this trial's model", "size mismatch")
    # The budget is not bound: a longer one resumes the trial (e.g. to a higher fidelity).
    _edit(trial, "model", "hidden_dim", 16)
    _edit(trial, "training", "epochs", 2)
    assert gfm_train(trial).returncode == 0
    result = result_of(trial)
    assert result["status"] == "completed" and result["epochs_done"] == 2 and result["resumed_from_epoch"] == 1


@emt_only
def test_a_model_far_too_big_is_refused_before_allocation(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp, model={"hidden_dim": 100_000_000})
    line = refused(gfm_train(trial), "model: hidden_dim 100000000", "GiB to train", "GiB available on cpu")
    assert result_of(trial)["error"] in line and not (trial / "checkpoint.pt").exists()


def test_the_memory_estimate_is_a_lower_bound_for_every_backbone():
    from trainer.contract.trialconfig import ModelConfig
    from trainer.memory import min_parameters
    from trainer.models.build import DataStats, build_model, count_parameters

    stats = DataStats(radius=5.0, elements=[1, 6, 8], reference_energies=[{1: 0.0, 6: 0.0, 8: 0.0}],
                      energy_shift=0.0, energy_scale=1.0, force_scale=1.0, degree_histogram=[0, 1, 2, 3])
    import importlib.util

    backbones = ["EGNN", "PNA", "SchNet", "PaiNN"] + (["MACE"] if importlib.util.find_spec("mace") else [])
    for mpnn_type in backbones:
        for hidden, fc, layers, heads, forces in [(8, 4, 1, 1, "direct"), (32, 8, 3, 3, "conservative"),
                                                  (16, 128, 2, 3, "conservative")]:
            extra = {"max_L": 0, "correlation": 1} if mpnn_type == "MACE" else {}
            config = ModelConfig(mpnn_type=mpnn_type, hidden_dim=hidden, fc_dim=fc, num_conv_layers=layers,
                                 num_fc_layers=heads, force_mode=forces, **extra)
            assert min_parameters(config) <= count_parameters(build_model(config, stats)), config
