"""MACE (Batatia et al. 2022, "MACE: Higher Order Equivariant Message Passing Neural Networks
for Fast and Accurate Force Fields") through mace-torch's own model, fed our batches.

mace-torch is an optional extra (`pip install .[mace]`): it is imported only when a MACE
model is built, so sites without it run every other backbone, and a MACE trial there fails
with one line that says how to install it.

The model is `mace.modules.MACE` as mace-torch's `run_train --model MACE` builds it
(RealAgnosticInteractionBlock first, RealAgnosticResidualInteractionBlock after it, spherical
harmonics up to l = 3, a radial MLP of [64, 64, 64], SiLU gate, polynomial cut-off p = 5),
with our hyperparameters mapped onto it:

    hidden_dim      -> channels of the node features (num_channels), for every L <= max_L
    num_conv_layers -> num_interactions
    num_radial      -> num_bessel
    fc_dim          -> the hidden width of the last (non-linear) readout (MLP_irreps)
    max_L, correlation  as in mace-torch
    num_fc_layers   -> only the direct force head (MACE's readout has one hidden layer)

Its per-element energies (E0s) are zero: the per-source reference energies, the scale and
the shift are ours (build.EnergyForceModel), exactly what mace-torch's ScaleShiftMACE
computes with E0s, scale and shift (tests/test_mace.py checks this against mace-torch's
own data pipeline). Forces: conservative by autograd through MACE's energy, or direct,
from the edge head (heads.DirectForceHead) on MACE's last-layer scalar features.

Our edges (source j -> target i, r_ij = x_j - x_i + offset) are mace-torch's
edge_index = [sender, receiver] = [j, i] with shifts = -offset: mace-torch forms
x_receiver - x_sender + shift, the vector from j's image to i, and sums at the receiver.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from trainer.contract.errors import UserError, one_line
from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.models.build import NUM_ELEMENTS, DataStats, EnergyForceModel, direct_force_head
from trainer.models.layers import BesselBasis, Graph, init_weights

INSTALL = "pip install 'gfm-orchestrator[mace]' (in a checkout: pip install -e '.[mace]')"
MAX_ELL = 3                # spherical harmonics of the edges (mace-torch's default)
RADIAL_MLP = [64, 64, 64]  # mace-torch's default
POLYNOMIAL_CUTOFF = 5      # mace-torch's default p of its polynomial envelope


def import_mace() -> tuple[Any, Any]:
    """(mace.modules, e3nn.o3), or a UserError that says how to install mace-torch."""
    # mace-torch sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 at import, before it imports e3nn
    # 0.4.4 (whose constants file needs a full unpickle), so mace comes first; afterwards
    # the variable would make every later torch.load without an explicit weights_only
    # unpickle arbitrary objects, so it is put back. mace-torch also prints a line about
    # cuequivariance (a GPU extension not used here) to stdout.
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from mace import modules
            from e3nn import o3
    except ImportError as err:
        raise UserError(f"mpnn_type MACE needs the mace-torch package, which cannot be imported "
                        f"({one_line(err)}): {INSTALL}") from None
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before
    return modules, o3


def mace_settings(config: ModelConfig, stats: DataStats) -> dict[str, Any]:
    """The keyword arguments of `mace.modules.MACE` for our config (E0s zero; see the module doc)."""
    modules, o3 = import_mace()
    irreps = " + ".join(f"{config.hidden_dim}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(config.max_L + 1))
    return dict(
        r_max=float(stats.radius), num_bessel=config.num_radial, num_polynomial_cutoff=POLYNOMIAL_CUTOFF,
        max_ell=MAX_ELL, interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=config.num_conv_layers, num_elements=len(stats.elements),
        hidden_irreps=o3.Irreps(irreps), MLP_irreps=o3.Irreps(f"{config.fc_dim}x0e"),
        atomic_energies=np.zeros(len(stats.elements)), avg_num_neighbors=max(stats.average_degree, 1.0),
        atomic_numbers=list(stats.elements), correlation=config.correlation, gate=modules.gate_dict["silu"],
        radial_MLP=list(RADIAL_MLP), use_reduced_cg=False)


class MACEModel(EnergyForceModel):
    """Our energy and forces around `mace.modules.MACE` (attribute `mace`)."""

    def __init__(self, config: ModelConfig, stats: DataStats, activation_checkpointing: bool = False,
                 dtype: torch.dtype | None = None):
        super().__init__(config, stats, activation_checkpointing)
        modules, _ = import_mace()
        self.basis = BesselBasis(stats.radius, config.num_radial)  # for the direct force head's Graph
        dtype = dtype or torch.get_default_dtype()
        # mace-torch builds its tables (Clebsch-Gordan, Wigner 3j) in torch's default dtype.
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            self.mace = modules.MACE(**mace_settings(config, stats))
        finally:
            torch.set_default_dtype(default)
        self.force_head = direct_force_head(config)
        if self.force_head is not None:  # MACE keeps its own initialisation
            init_weights(self.force_head, zero=[self.force_head.output])
        index = torch.full((NUM_ELEMENTS,), -1, dtype=torch.long)
        index[torch.tensor(stats.elements, dtype=torch.long)] = torch.arange(len(stats.elements))
        self.register_buffer("element_index", index, persistent=False)
        self.to(dtype)

    def _energy(self, batch: Batch, positions: Tensor) -> tuple[Tensor, Tensor, Graph | None]:
        species = self.element_index[batch.atomic_numbers]
        if bool((species < 0).any()):
            unknown = sorted(set(batch.atomic_numbers[species < 0].tolist()))
            raise ValueError(f"MACE: elements {unknown} are not among the training elements {self.stats.elements}")
        node_attrs = torch.nn.functional.one_hot(species, len(self.stats.elements)).to(positions.dtype)
        if self.activation_checkpointing and torch.is_grad_enabled():
            node_energy, features = checkpoint(self._mace, batch, positions, node_attrs, use_reentrant=False)
        else:
            node_energy, features = self._mace(batch, positions, node_attrs)
        graph = None if self.force_head is None else self._graph(batch, positions)
        return self._total_energy(batch, node_energy), features, graph

    def _mace(self, batch: Batch, positions: Tensor, node_attrs: Tensor) -> tuple[Tensor, Tensor]:
        """mace-torch's per-atom energy (E0s zero, so the sum of its readouts) and last-layer scalars."""
        if positions.shape[0] == 0:
            # mace-torch cannot reshape empty tensors; a DDP rank's empty step must still put
            # every parameter (and the positions, for conservative forces) into the graph.
            anchor = positions.sum() * 0.0 + sum(p.sum() for p in self.mace.parameters()) * 0.0
            return positions.new_zeros(0) + anchor, positions.new_zeros(0, self.config.hidden_dim) + anchor
        # MACE calls requires_grad_() on the positions it is given; a detached alias keeps
        # the caller's tensor as it was when no force needs their gradient.
        given = positions if positions.requires_grad else positions.detach()
        ptr = torch.zeros(batch.num_graphs + 1, dtype=torch.long, device=positions.device)
        torch.cumsum(batch.num_atoms, 0, out=ptr[1:])
        data = {"positions": given, "node_attrs": node_attrs, "edge_index": batch.edge_index,
                "shifts": -batch.edge_offset, "batch": batch.graph_index, "ptr": ptr,
                "cell": positions.new_zeros(3 * batch.num_graphs, 3)}
        out = self.mace(data, training=self.training, compute_force=False)
        return out["node_energy"], out["node_feats"][:, -self.config.hidden_dim:]
