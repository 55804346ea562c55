"""A small rich progress bar for training loops (disabled in tests and when asked)."""

from __future__ import annotations

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
