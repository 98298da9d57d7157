"""Calibration maps and their fitting, on synthetic errors whose right answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.contract import typed
from trainer.contract.typed import ConfigError
from trainer.ensemble import calibration_fit, uncertainty
from trainer.ensemble.calibration import Calibration, StdMap, energy_spread, member_offsets, upgrade_v1

N = 4000


def stds(n: int = N, seed: int = 0) -> np.ndarray:
    """Raw stds spread over two decades, as an ensemble's are between easy and hard structures."""
    return np.exp(np.random.default_rng(seed).uniform(np.log(0.01), np.log(1.0), n))


def area(error, std) -> float:
    return uncertainty.miscalibration_area(error, std)


def test_fast_area_is_the_reported_area():
    rng = np.random.default_rng(1)
    std = stds()
    error = rng.standard_t(3, N) * std
    for scale in (0.3, 1.0, 2.7):
        assert calibration_fit.area_of(np.abs(error) / std, np.array([scale]))[0] == pytest.approx(
            area(error, scale * std), abs=1e-12)


def test_scalar_miscalibration_gets_the_scalar_form():
    std = stds()
    error = np.random.default_rng(2).normal(0.0, 3.0 * std)
    fitted = calibration_fit.fit_quantity(error, std, np.arange(N))
    assert fitted.form == "scalar" and fitted.a == pytest.approx(3.0, rel=0.05)
    assert area(error, fitted.apply(std)) < 0.01 < 0.25 < area(error, std)
    assert fitted.fit["held_out_area"]["scalar"] < fitted.fit["held_out_area"]["identity"]


def test_a_wrong_exponent_gets_the_power_form():
    std = stds()
    error = np.random.default_rng(3).normal(0.0, 0.5 * std ** 0.5)   # errors grow slower than the std
    fitted = calibration_fit.fit_quantity(error, std, np.arange(N))
    assert fitted.form == "power" and 0.4 <= fitted.b <= 0.7
    held_out = fitted.fit["held_out_area"]
    assert held_out["power"] < held_out["scalar"] - calibration_fit.MARGIN
    assert area(error, fitted.apply(std)) < 0.01
    # The ranking is kept: a*sigma^b is monotone in sigma.
    assert uncertainty.spearman(fitted.apply(std), np.abs(error)) == pytest.approx(
        uncertainty.spearman(std, np.abs(error)))


def test_a_calibrated_std_is_left_alone_and_says_so():
    std = stds()
    error = np.random.default_rng(4).normal(0.0, std)
    fitted = calibration_fit.fit_quantity(error, std, np.arange(N))
    assert fitted.form == "identity" and (fitted.a, fitted.b) == (1.0, 1.0)
    assert "raw std kept" in fitted.fit["note"]


def test_where_the_nll_scalar_makes_it_worse_ours_does_not():
    """The issue's case: a few large errors drive s^2 = mean(z^2) far up, and the area with it."""
    rng = np.random.default_rng(5)
    std = stds()
    z = np.where(rng.uniform(size=N) < 0.9, rng.normal(0.0, 0.5, N), rng.normal(0.0, 20.0, N))
    error = z * std
    nll_factor = uncertainty.fit_scale(error, std)
    assert area(error, nll_factor * std) > area(error, std) + 0.1   # the old calibration: worse than raw
    fitted = calibration_fit.fit_quantity(error, std, np.arange(N))
    assert fitted.form != "identity" and fitted.a < 1.0
    assert area(error, fitted.apply(std)) < area(error, std) - 0.1


@pytest.mark.parametrize("seed", range(8))
def test_never_worse_than_raw_on_its_fitting_data(seed):
    """Small, odd data sets (few structures, heavy tails, skew, structures of several entries)."""
    rng = np.random.default_rng(seed)
    structures = int(rng.integers(10, 40))
    per = int(rng.integers(1, 28))
    std = stds(structures * per, seed)
    error = rng.standard_t(int(rng.integers(1, 6)), std.size) * std ** rng.uniform(0.2, 2.0) * rng.uniform(0.1, 10)
    fitted = calibration_fit.fit_quantity(error, std, np.repeat(np.arange(structures), per))
    assert area(error, fitted.apply(std)) <= area(error, std) + 1e-12
    assert fitted.fit["structures"] == structures and fitted.fit["values"] == std.size


def test_a_fit_worse_than_raw_is_never_returned(monkeypatch):
    std = stds()
    error = np.random.default_rng(6).normal(0.0, 3.0 * std)
    choose = calibration_fit.fit_form
    # Held-out folds pick a form honestly; its final fit on all the data is (made) bad.
    calls = []

    def bad_at_the_end(form, e, s):
        calls.append(len(e))
        return StdMap("scalar", 100.0, 1.0) if len(e) == N else choose(form, e, s)

    monkeypatch.setattr(calibration_fit, "fit_form", bad_at_the_end)
    fitted = calibration_fit.fit_quantity(error, std, np.arange(N))
    assert N in calls
    assert fitted.form == "identity" and "raw std kept: the fitted scalar form" in fitted.fit["note"]


def test_too_few_structures_or_no_spread():
    std = stds(9 * 27)
    error = np.random.default_rng(7).normal(0.0, 2.0 * std)
    fitted = calibration_fit.fit_quantity(error, std, np.repeat(np.arange(9), 27))
    assert fitted.form == "identity" and "too few to calibrate" in fitted.fit["note"]
    fitted = calibration_fit.fit_quantity(error, np.zeros_like(std), np.arange(std.size))
    assert fitted.form == "identity" and fitted.fit["structures"] == 0


def test_maps_apply_describe_and_refuse_nonsense():
    std = np.array([0.0, 0.25, 1.0, 4.0])
    np.testing.assert_array_equal(StdMap().apply(std), std)
    np.testing.assert_allclose(StdMap.scalar(2.0).apply(std), 2.0 * std)
    np.testing.assert_allclose(StdMap("power", 3.0, 0.5).apply(std), [0.0, 1.5, 3.0, 6.0])
    assert StdMap.scalar(1.0).form == "identity"
    assert (StdMap().describe(), StdMap.scalar(2.0).describe(), StdMap("power", 3.0, 0.5).describe()) == (
        "raw (identity)", "x 2", "3·σ^0.5")
    for bad, message in (({"form": "identity", "a": 2.0}, "a: the identity has a = b = 1"),
                         ({"form": "scalar", "a": 2.0, "b": 0.5}, "b: the scalar form has b = 1"),
                         ({"form": "power", "a": 1.0, "b": -1.0}, "b: must be greater than 0.0"),
                         ({"form": "cubic"}, "form")):
        with pytest.raises(ConfigError, match=message):
            typed.build(StdMap, bad, origin="test")


def test_format_1_calibration_reads_as_scalar_maps():
    upgraded = upgrade_v1({"energy": 2.5, "forces": 1.0, "fitted_on": {"file": "v.bp"}})
    calibration = typed.build(Calibration, upgraded, origin="old manifest")
    assert calibration.energy == StdMap("scalar", 2.5, 1.0) and calibration.forces == StdMap()
    assert calibration.fitted_on == {"file": "v.bp"}
    assert upgrade_v1(None) is None and upgrade_v1({"energy": {"form": "power", "a": 1, "b": 2}})["energy"]["b"] == 2


def test_member_offsets_remove_a_constant_disagreement_and_keep_the_mean():
    rng = np.random.default_rng(5)
    num_atoms = rng.integers(5, 40, size=200)
    truth = -4.0 * num_atoms + rng.normal(0, 0.1, 200)
    noise = rng.normal(0, 0.02, (4, 200))             # the spread that depends on the structure
    constant = np.array([0.003, -0.001, 0.0005, -0.0025])   # eV/atom each member is off by, always
    members = truth + constant[:, None] * num_atoms + noise
    offsets = member_offsets(members, num_atoms)
    assert sum(offsets) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(offsets, constant - constant.mean(), atol=5e-4)
    aligned = energy_spread(members, num_atoms, offsets)
    assert aligned.mean() == pytest.approx(noise.std(axis=0).mean(), rel=0.1)
    assert members.std(axis=0).mean() > 3 * aligned.mean()     # the offsets dominated the raw spread
    # Removed from every member, they leave the ensemble mean as it was.
    shifted = members - np.asarray(offsets)[:, None] * num_atoms
    np.testing.assert_allclose(shifted.mean(axis=0), members.mean(axis=0), atol=1e-9)
    np.testing.assert_array_equal(energy_spread(members, num_atoms, None), members.std(axis=0))
