"""PaiNN (Schütt, Unke & Gastegger 2021, "Equivariant message passing for the prediction of
tensorial properties and molecular spectra"): scalar features s_i [F] and vector features
v_i [3, F] per atom.

Message, for every edge j -> i with unit vector u_ij and distance d_ij:
    (x_vv, x_s, x_vs) = phi(s_j) * W(d_ij)               phi: Linear-SiLU-Linear to 3F
    s_i += sum_j x_s
    v_i += sum_j v_j * x_vv + x_vs u_ij
Update, per atom:
    (a_vv, a_sv, a_ss) = MLP([s_i, |V v_i|])
    v_i += a_vv * (U v_i)
    s_i += a_sv * <U v_i, V v_i> + a_ss

W(d) is layers.RadialFilter (a Linear of the Bessel basis plus a bias, times the cosine
cut-off): exactly the paper's filter. Vectors are only ever scaled by invariants, summed
and contracted with each other, so s is invariant and v turns with the structure under
every rotation and reflection (tests/test_model_physics.py).

Two choices of ours: (1) the sums over neighbours are divided by sqrt(<in-degree>) of the
training set, as in the EGNN layer, so that one initialisation suits molecules (~8
neighbours) and crystals (~40); it is a constant factor the filter could absorb, so the
function class is the paper's. (2) |V v| is sqrt(|V v|^2 + eps): v is zero before the first
message and on isolated atoms, where the norm has no gradient (and conservative forces
need its second derivative).

The state passed from layer to layer is the pair (s, v); the first layer receives the
embedding s alone and starts from v = 0. phi runs on atoms and is gathered per edge.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from trainer.models.layers import Graph, RadialFilter, mlp, scatter_sum

_NORM_EPS = 1e-8
State = tuple[Tensor, Tensor]  # s [N, F], v [N, 3, F]


def vector_norm(v: Tensor) -> Tensor:
    """sqrt(|v|^2 + eps) over the Cartesian axis of [N, 3, F]: differentiable twice at v = 0."""
    return torch.sqrt((v * v).sum(dim=1) + _NORM_EPS)


class PaiNNLayer(nn.Module):
    def __init__(self, hidden: int, num_radial: int, avg_degree: float):
        super().__init__()
        self.hidden = hidden
        self.phi = mlp([hidden, hidden, 3 * hidden])
        self.filter = RadialFilter(num_radial, 3 * hidden)
        self.norm = avg_degree ** -0.5
        self.uv = nn.Linear(hidden, 2 * hidden, bias=False)  # [U; V], acting on the channels of v
        self.update_mlp = mlp([2 * hidden, hidden, 3 * hidden])

    def message(self, s: Tensor, v: Tensor, graph: Graph) -> State:
        x = self.phi(s).index_select(0, graph.source) * self.filter(graph)
        x_vv, x_s, x_vs = x.split(self.hidden, dim=-1)
        ds = scatter_sum(x_s, graph.target, graph.num_nodes)
        dv_edges = v.index_select(0, graph.source) * x_vv.unsqueeze(1) + graph.unit.unsqueeze(-1) * x_vs.unsqueeze(1)
        dv = scatter_sum(dv_edges, graph.target, graph.num_nodes)
        return s + ds * self.norm, v + dv * self.norm

    def update(self, s: Tensor, v: Tensor) -> State:
        uv, vv = self.uv(v).split(self.hidden, dim=-1)
        a_vv, a_sv, a_ss = self.update_mlp(torch.cat([s, vector_norm(vv)], dim=-1)).split(self.hidden, dim=-1)
        return s + a_sv * (uv * vv).sum(dim=1) + a_ss, v + a_vv.unsqueeze(1) * uv

    def forward(self, state: Tensor | State, graph: Graph) -> State:
        s, v = (state, state.new_zeros(state.shape[0], 3, self.hidden)) if isinstance(state, Tensor) else state
        return self.update(*self.message(s, v, graph))


class GatedEquivariantBlock(nn.Module):
    """(s, v) -> (s', v'): v' = W v scaled per channel by a gate computed from [s, |W' v|].

    The paper's readout for vector outputs (its Fig. 3); here the direct force head, as in
    the Open Catalyst Project's PaiNN with direct forces.
    """

    def __init__(self, n_in: int, n_out: int, last: bool):
        super().__init__()
        self.n_in, self.n_out, self.last = n_in, n_out, last
        self.vectors = nn.Linear(n_in, n_in + n_out, bias=False)  # [W' (feeds the gate's input); W]
        self.net = mlp([2 * n_in, n_in, 2 * n_out])

    def forward(self, s: Tensor, v: Tensor) -> State:
        to_norm, to_out = self.vectors(v).split([self.n_in, self.n_out], dim=-1)
        s_out, gate = self.net(torch.cat([s, vector_norm(to_norm)], dim=-1)).split(self.n_out, dim=-1)
        return (s_out if self.last else nn.functional.silu(s_out)), to_out * gate.unsqueeze(1)


class PaiNNForceHead(nn.Module):
    """F_i = the one vector channel left after gated equivariant blocks of widths hidden -> fc_dim... -> 1."""

    def __init__(self, hidden: int, fc_dim: int, num_fc_layers: int):
        super().__init__()
        widths = [hidden] + [fc_dim] * (num_fc_layers - 1) + [1]
        self.blocks = nn.ModuleList(GatedEquivariantBlock(a, b, last=k == len(widths) - 2)
                                    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])))

    @property
    def output(self) -> nn.Linear:
        """The Linear that makes the last gate: zero at initialisation, so forces start at zero."""
        return self.blocks[-1].net[-1]

    def forward(self, state: State, graph: Graph) -> Tensor:
        s, v = state
        for block in self.blocks:
            s, v = block(s, v)
        return v[:, :, 0]
