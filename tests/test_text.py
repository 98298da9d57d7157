"""Terminal tables and numbers (trainer/contract/text.py): what every command's tables are made of."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.contract.text import number, table


@pytest.mark.parametrize("value, text", [
    (0.032273552152845594, "0.03227"), (0.09893994853151367, "0.09894"), (2.3800000001, "2.38"),
    (12345678.9, "1.235e+07"), (1e-7, "1e-07"), (3, "3"), (np.int64(50), "50"), (np.float32(0.5), "0.5"),
    (None, "-"), (math.nan, "-"), (math.inf, "inf"), ("EGNN", "EGNN"), (True, "True")])
def test_number(value, text):
    assert number(value) == text


def test_number_digits():
    assert number(7.56234, 3) == "7.56" and number(1234.5, 3) == "1.23e+03"


def test_table_columns_fit_their_widest_cell():
    lines = table(["member", "val loss", "HPO trial"],
                  [["member00-hpo00006", 0.029198701072622228, 6], ["m1", 0.1, None]], indent="  ")
    assert lines == ["  member             val loss  HPO trial",
                     "  member00-hpo00006    0.0292          6",
                     "  m1                      0.1          -"]


def test_table_alignment_given_and_rows_checked():
    assert table(["a", "b"], [["1", "x"]], "rl") == ["a  b", "1  x"]
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        table(["a", "b"], [["1"]])
