"""EGNN layer (Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks").

    m_ij = SiLU(W_i h_i + W_j h_j + b) * W(|r_ij|)
    m_i  = W_o sum_j m_ij / sqrt(<degree>)
    h_i' = h_i + phi_h(h_i, m_i)

W(|r_ij|) is a radial filter (layers.RadialFilter: a Linear of the radial
basis, times the cut-off envelope), one weight per channel. The paper's
phi_e instead feeds |r_ij|^2 into its first Linear, next to h_i and h_j,
where distance can only shift a SiLU. Measured on the ethanol workload
(bench/bench_accuracy.py: test MAE after 30 epochs over the trivial
predictors' MAE, 2-3 seeds): with the paper's additive input the force ratio
was 0.26-0.29 and the energy ratio 0.82 (hardly learned); the filter here
and in the force head (heads.py) bring them to ~0.15 and ~0.40 (0.14 and
0.37 together with loss.py's weighted mean, under which the gradient clip
no longer binds). Once the
filter was in, the additive distance input no longer helped (force ratio
0.144 with it, 0.145 without) and cost 10-15 % of a training step, so it is
gone.

The sum is divided by the square root of the training set's mean in-degree
(a sum of n loosely correlated terms grows like sqrt(n)), so one setting
suits molecules with ~8 neighbours and crystals with ~40.

Only distances enter, so node features are E(3)-invariant and only they feed
the energy. The paper's coordinate update x_i' = x_i + sum_j (x_i - x_j)
phi_x(m_ij), with later layers reading distances of the moved positions, was
tried and left out: on the same workload it did not lower the force error
(0.139 and 0.150 with it, 0.140 and 0.136 without, two seeds), made the
energy worse (0.45 vs 0.38) and costs a distance and basis per layer. The
equivariant form sum_j w_ij r_ij lives in the direct force head instead.

Speed: W_i h_i and W_j h_j are computed on atoms (A rows) and gathered, not
on edges (E ~ 8-40 A rows); W_o commutes with the sum over neighbours, so it
runs on atoms too (a bias there would be one constant per atom, which phi_h's
first bias already is). Per edge remain two gathered adds, one SiLU, the
filter (a [1+R -> F] map) and one product.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from trainer.models.layers import Graph, RadialFilter, mlp, pair_terms, scatter_sum, silu


class EGNNLayer(nn.Module):
    def __init__(self, hidden: int, num_radial: int, avg_degree: float):
        super().__init__()
        self.node_in = nn.Linear(hidden, 2 * hidden)               # [W_i; W_j]; the two halves' biases add up to b
        self.filter = RadialFilter(num_radial, hidden)
        self.message_out = nn.Linear(hidden, hidden, bias=False)  # W_o
        self.update_mlp = mlp([2 * hidden, hidden, hidden])       # phi_h
        self.norm = avg_degree ** -0.5

    def message(self, h: Tensor, graph: Graph) -> Tensor:
        return silu(pair_terms(self.node_in(h), graph)) * self.filter(graph)

    def aggregate(self, messages: Tensor, graph: Graph) -> Tensor:
        """W_o sum_j m_ij, with W_o applied after the sum (it is linear)."""
        return self.message_out(scatter_sum(messages, graph.target, graph.num_nodes)) * self.norm

    def update(self, h: Tensor, aggregated: Tensor) -> Tensor:
        return h + self.update_mlp(torch.cat([h, aggregated], dim=-1))

    def forward(self, h: Tensor, graph: Graph) -> Tensor:
        return self.update(h, self.aggregate(self.message(h, graph), graph))
