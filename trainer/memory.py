"""Refusing a model that cannot fit before allocating it (a one-line error, not an allocator's traceback).

`hidden_dim: 100000000` would ask the allocator for petabytes in the first
layer's constructor, or worse, with Linux overcommitting, succeed and have
the process killed when the pages are touched (no result.json at all). The
estimate is a lower bound that holds for every backbone: each conv layer has
at least one hidden x hidden matrix (ours add an embedding and the energy
head), so a model is refused only when it certainly does not fit; near the
limit the real allocation still decides.
"""
from __future__ import annotations

import os

from trainer.contract.errors import UserError
from trainer.contract.trialconfig import ModelConfig, TrainingConfig, TrialConfig

def copies(training: TrainingConfig) -> int:
    """Values held per parameter while training: weights and gradients, the optimiser's state
    (Adam's two moments, SGD's momentum; AMSGrad a third), and the weight average if on."""
    state = 1 if training.optimizer == "sgd" else 3 if training.amsgrad else 2
    return 2 + state + (training.ema_decay is not None)


def min_parameters(model: ModelConfig) -> int:
    layers = model.num_conv_layers * model.hidden_dim ** 2
    if model.mpnn_type == "MACE":  # mace-torch's own embedding and readouts: the layers alone
        return layers
    # Ours: an embedding row per element (119) and the energy head's MLP besides the layers.
    head = model.hidden_dim * model.fc_dim + (model.num_fc_layers - 1) * model.fc_dim ** 2
    return layers + 119 * model.hidden_dim + head


def available_bytes(device) -> int | None:
    """Memory this process could get: the GPU's total, or the node's available memory (Linux)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_model_fits(config: TrialConfig, bytes_per_value: int, device) -> None:
    model = config.model
    need = min_parameters(model) * bytes_per_value * copies(config.training)
    have = available_bytes(device)
    if have is not None and need > have:
        raise UserError(
            f"model: hidden_dim {model.hidden_dim}, num_conv_layers {model.num_conv_layers}, fc_dim {model.fc_dim} "
            f"means at least {min_parameters(model):.3g} parameters, {need / 2**30:.3g} GiB to train "
            f"({copies(config.training)} values each), more than the {have / 2**30:.3g} GiB "
            f"available on {device}")
