"""What a person watching a trial sees: one line per epoch, and a bar when attached to a terminal.

Nothing parses these lines; the manager reads result.json.
"""
from __future__ import annotations

import sys
import time

from trainer.contract.result import EpochRecord

_BAR_WIDTH = 30
_REFRESH_S = 0.2


class EpochProgress:
    def __init__(self, enabled: bool, epoch: int, epochs: int | None, steps: int):
        self.enabled, self.epoch, self.steps = enabled, epoch, max(steps, 1)
        # "epoch 3/40", or "epoch 3" where only the wall time ends training
        self.label = f"epoch {epoch}/{epochs}" if epochs is not None else f"epoch {epoch}"
        self.bar = enabled and sys.stdout.isatty()
        self._last = 0.0

    def update(self, step: int) -> None:
        if not self.bar or time.monotonic() - self._last < _REFRESH_S:
            return
        self._last = time.monotonic()
        done = int(_BAR_WIDTH * step / self.steps)
        sys.stdout.write(f"\r{self.label} [{'#' * done}{' ' * (_BAR_WIDTH - done)}] "
                         f"{step}/{self.steps}")
        sys.stdout.flush()

    def close(self, record: EpochRecord) -> None:
        if not self.enabled:
            return
        if self.bar:
            sys.stdout.write("\r" + " " * (_BAR_WIDTH + 40) + "\r")
        print(f"{self.label}  train loss {record.train_loss:.4f}  "
              f"val loss {record.val_loss:.4f}  energy MAE {record.val_energy_mae:.1f} meV/atom  "
              f"force MAE {record.val_force_mae:.1f} meV/Å  {record.seconds:.1f} s  "
              f"{record.graphs_per_second:.0f} graphs/s  lr {record.learning_rate:.2e}  step {record.steps}",
              flush=True)
