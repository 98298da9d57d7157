"""SchNet interaction block (Schütt et al. 2017/2018): a continuous-filter convolution.

    W_ij = filter(rbf(|r_ij|)) * fc(|r_ij|)           fc: cosine cut-off at the radius
    h_i' = h_i + lin(ssp(lin2(sum_j lin1(h)_j * W_ij)))

The same function, with the same parameters, as PyG's
`torch_geometric.nn.models.schnet.InteractionBlock` (with its CFConv) plus
the residual that PyG's SchNet adds around it (tests/test_models.py checks
this); written without torch_geometric to keep start-up cheap.
"""
from __future__ import annotations

from torch import Tensor, nn

from trainer.models.layers import Graph, ShiftedSoftplus, mlp, scatter_sum


class SchNetInteraction(nn.Module):
    def __init__(self, hidden: int, num_radial: int, num_filters: int):
        super().__init__()
        self.filter = mlp([num_radial, num_filters, num_filters], activation=ShiftedSoftplus)
        self.lin1 = nn.Linear(hidden, num_filters, bias=False)
        self.lin2 = nn.Linear(num_filters, hidden)
        self.act = ShiftedSoftplus()
        self.lin = nn.Linear(hidden, hidden)

    def message(self, h: Tensor, graph: Graph) -> Tensor:
        weights = self.filter(graph.radial) * graph.envelope.unsqueeze(-1)
        return self.lin1(h).index_select(0, graph.source) * weights

    def aggregate(self, messages: Tensor, graph: Graph) -> Tensor:
        return scatter_sum(messages, graph.target, graph.num_nodes)

    def interact(self, h: Tensor, graph: Graph) -> Tensor:
        """What PyG's InteractionBlock computes."""
        return self.lin(self.act(self.lin2(self.aggregate(self.message(h, graph), graph))))

    def forward(self, h: Tensor, graph: Graph) -> Tensor:
        return h + self.interact(h, graph)
