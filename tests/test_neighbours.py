"""trainer.data.neighbours against a brute-force search over cell images."""
from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
from ase.build import bulk, fcc111, molecule

from trainer.data.neighbours import neighbour_list


def brute_force(positions: np.ndarray, cell: np.ndarray, pbc, radius: float) -> dict[tuple, float]:
    """{(j, i, shift): |r_ij|} for every pair and image within `radius` (i's own position excluded).

    The image range along a periodic axis covers `radius` over the spacing of
    its lattice planes, plus the spread of the atoms' fractional coordinates
    (positions need not be wrapped into the cell).
    """
    pbc = np.broadcast_to(pbc, (3,))
    ranges = []
    for axis in range(3):
        if not pbc[axis]:
            ranges.append([0])
            continue
        spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell)[:, axis])
        fractional = positions @ np.linalg.inv(cell)[:, axis]
        reach = int(np.ceil(radius / spacing + np.ptp(fractional))) + 1
        ranges.append(range(-reach, reach + 1))
    pairs = {}
    for shift in itertools.product(*ranges):
        offset = np.asarray(shift) @ cell if any(shift) else np.zeros(3)
        vectors = positions[None, :, :] - positions[:, None, :] + offset  # [i, j, 3]
        distance = np.linalg.norm(vectors, axis=-1)
        for i, j in zip(*np.nonzero(distance <= radius)):
            if i == j and not any(shift):
                continue
            pairs[(int(j), int(i), shift)] = float(distance[i, j])
    return pairs


def computed(positions, cell, pbc, radius, max_neighbours=None) -> dict[tuple, float]:
    edge_index, shift = neighbour_list(positions, cell, pbc, radius, max_neighbours)
    vectors = positions[edge_index[:, 0]] - positions[edge_index[:, 1]] + shift @ cell
    distance = np.linalg.norm(vectors, axis=1)
    pairs = {(int(j), int(i), tuple(int(s) for s in sh)): float(d)
             for (j, i), sh, d in zip(edge_index, shift, distance)}
    assert len(pairs) == len(edge_index), "duplicate edges"
    return pairs


def _triclinic(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cell = np.array([[4.0, 0, 0], [1.3, 3.7, 0], [-0.9, 1.1, 4.4]]) + rng.uniform(-0.2, 0.2, (3, 3))
    return rng.uniform(0, 1, (7, 3)) @ cell, cell


CASES = {
    # One atom whose own images are its only neighbours (radius > every cell length).
    "one_atom_fcc": lambda rng: (bulk("Cu", "fcc", a=3.6).positions, bulk("Cu", "fcc", a=3.6).cell.array, True, 5.0),
    # Two atoms, rattled, in a small orthorhombic cell: images of both atoms.
    "two_atoms_small_cell": lambda rng: (np.array([[0.1, 0.2, 0.1], [1.3, 1.1, 1.6]]) + rng.normal(0, 0.05, (2, 3)),
                                         np.diag([2.5, 2.8, 3.1]), True, 4.0),
    "triclinic": lambda rng: (*_triclinic(rng), True, 5.0),
    # Atoms outside the cell (unwrapped MD) must still find the right images.
    "unwrapped": lambda rng: (rng.uniform(-3, 9, (6, 3)), np.diag([4.0, 5.0, 4.5]), True, 3.5),
    "slab_periodic_in_xy": lambda rng: (lambda s: (s.positions + rng.normal(0, 0.03, s.positions.shape),
                                                   s.cell.array, s.pbc.copy(), 4.5))(fcc111("Pt", (2, 2, 3), vacuum=5.0)),
    "molecule": lambda rng: (molecule("CH3CH2OH").positions, np.zeros((3, 3)), False, 3.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_brute_force(case):
    positions, cell, pbc, radius = CASES[case](np.random.default_rng(11))
    expected = brute_force(positions, cell, pbc, radius)
    found = computed(positions, cell, pbc, radius)
    assert found.keys() == expected.keys()
    for key, distance in expected.items():
        assert found[key] == pytest.approx(distance, abs=1e-9)
    if case == "one_atom_fcc":  # fcc shells at a/sqrt2, a, a*sqrt(3/2) (12 + 6 + 24) are all images of atom 0
        assert len(found) == 42 and all(j == i == 0 for j, i, _ in found)


@pytest.mark.parametrize("case", ["triclinic", "one_atom_fcc", "slab_periodic_in_xy"])
@pytest.mark.parametrize("cap", [1, 4, 10])
def test_cap_keeps_exactly_the_nearest_k(case, cap):
    positions, cell, pbc, radius = CASES[case](np.random.default_rng(5))
    full = defaultdict(list)
    for (j, i, shift), distance in brute_force(positions, cell, pbc, radius).items():
        full[i].append(distance)
    kept = defaultdict(list)
    for (j, i, shift), distance in computed(positions, cell, pbc, radius, cap).items():
        kept[i].append(distance)
    for i in range(len(positions)):
        nearest = sorted(full[i])[:cap]  # ties (symmetric crystals) may pick either of equal neighbours
        np.testing.assert_allclose(sorted(kept[i]), nearest, atol=1e-9)


def test_edges_sorted_by_target_then_distance():
    positions, cell, pbc, radius = CASES["triclinic"](np.random.default_rng(2))
    edge_index, shift = neighbour_list(positions, cell, pbc, radius)
    distance = np.linalg.norm(positions[edge_index[:, 0]] - positions[edge_index[:, 1]] + shift @ cell, axis=1)
    order = np.lexsort((distance, edge_index[:, 1]))
    np.testing.assert_array_equal(order, np.arange(len(order)))
    assert edge_index.dtype == np.int64 and shift.dtype == np.int64 and shift.shape == (len(edge_index), 3)


def test_isolated_atom_has_no_edges():
    edge_index, shift = neighbour_list(np.zeros((1, 3)), np.zeros((3, 3)), False, 5.0, 8)
    assert edge_index.shape == (0, 2) and shift.shape == (0, 3)
