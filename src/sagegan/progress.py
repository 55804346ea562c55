"""How training loops report: a rich progress bar, the CSV log, and the callbacks callers pass in."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StepBar:
    """Progress over ``total`` steps, showing the latest loss and a free-text description."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True, description: str = ""):
        self.enabled = enabled
        self.description = description
        if not enabled:
            return
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), transient=False)
        self.task = self.progress.add_task(description, total=total, completed=done, loss=float("nan"))
        self.progress.start()

    def update(self, steps: int = 1, loss: float | None = None) -> None:
        if self.enabled:
            fields = {} if loss is None else {"loss": loss}
            self.progress.update(self.task, advance=steps, **fields)

    def set_description(self, text: str) -> None:
        if self.enabled:
            self.progress.update(self.task, description=f"{self.description}: {text}")

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


@dataclass
class TrainingCallbacks:
    """Hooks a caller (a benchmark, a GUI) passes to the trainers to watch them without patching.

    ``on_step(step, info)`` runs after every optimisation step with ``info`` holding at least
    ``elapsed_s`` (wall-clock seconds of the run so far, resumed sittings included) and ``loss``;
    ``on_validation(step, metrics)`` runs after every validation with the logged numbers.
    Either may be None.
    """

    on_step: Callable[[int, dict], None] | None = None
    on_validation: Callable[[int, dict], None] | None = None

    def step(self, step: int, **info: float) -> None:
        if self.on_step is not None:
            self.on_step(step, info)

    def validation(self, step: int, **metrics: float) -> None:
        if self.on_validation is not None:
            self.on_validation(step, metrics)


class TrainingLog:
    """``train_log.csv`` of a run: one row per validation, appended (a resumed run continues it)."""

    def __init__(self, path, columns):
        self.path = path
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        if self.path.stat().st_size == 0:
            self.writer.writerow(columns)

    def write(self, row) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "TrainingLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
