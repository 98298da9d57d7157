"""EGNN layer (Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks").

    m_ij = phi_e(h_i, h_j, |r_ij|^2, rbf(|r_ij|)) * fc(|r_ij|)
    m_i  = sum_j m_ij / sqrt(<degree>)
    h_i' = h_i + phi_h(h_i, m_i)

The sum is divided by the square root of the training set's mean in-degree
(a sum of n loosely correlated terms grows like sqrt(n)), so one setting
suits molecules with ~8 neighbours and crystals with ~40.

Only invariants (|r_ij|^2 and its radial basis) enter, so node features are
E(3)-invariant and only they feed the energy. The paper's coordinate update
x_i' = x_i + sum_j r_ij phi_x(m_ij) is not applied inside the backbone: the
direct force head (heads.py) has exactly that equivariant form.

Speed: phi_e is Linear-SiLU-Linear. Its first Linear acts on the concatenation
[h_i, h_j, d^2, rbf], i.e. W_i h_i + W_j h_j + W_e [d^2, rbf]: the node parts
are computed on atoms (A rows) and gathered, not on edges (E ~ 8-40 A rows).
Its second Linear commutes with the sum over neighbours (the paper puts a SiLU
after it; we leave it out so it can), so it runs on atoms too. What remains per
edge is two gathered adds, one SiLU and one scaling.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from trainer.models.layers import Graph, mlp, pair_terms, scatter_sum, silu


class EGNNLayer(nn.Module):
    def __init__(self, hidden: int, num_radial: int, avg_degree: float):
        super().__init__()
        self.node_in = nn.Linear(hidden, 2 * hidden, bias=False)  # [W_i; W_j] of phi_e's first Linear
        self.edge_in = nn.Linear(num_radial + 1, hidden)          # W_e and the bias of phi_e's first Linear
        self.message_out = nn.Linear(hidden, hidden)              # phi_e's second Linear
        self.update_mlp = mlp([2 * hidden, hidden, hidden])       # phi_h
        self.norm = avg_degree ** -0.5

    def message(self, h: Tensor, graph: Graph) -> Tensor:
        """SiLU(first Linear of phi_e) per edge, times the cut-off envelope."""
        pre = pair_terms(self.node_in(h), self.edge_in(graph.invariants), graph)
        return silu(pre) * graph.envelope.unsqueeze(-1)

    def aggregate(self, messages: Tensor, graph: Graph) -> Tensor:
        """sum_j m_ij with phi_e's second Linear applied after the sum (it is linear)."""
        summed = scatter_sum(messages, graph.target, graph.num_nodes)
        out = nn.functional.linear(summed, self.message_out.weight)
        # each message carried the bias times its envelope
        return (out + graph.envelope_sum.unsqueeze(-1) * self.message_out.bias) * self.norm

    def update(self, h: Tensor, aggregated: Tensor) -> Tensor:
        return h + self.update_mlp(torch.cat([h, aggregated], dim=-1))

    def forward(self, h: Tensor, graph: Graph) -> Tensor:
        return self.update(h, self.aggregate(self.message(h, graph), graph))
