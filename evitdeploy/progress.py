"""Progress reporting: library code names each long step; the CLI decides how (and whether) to show it."""

from __future__ import annotations

from typing import Callable, Optional

Progress = Optional[Callable[[str], None]]  # called with a step's name as the step starts


def report_step(progress: Progress, name: str) -> None:
    if progress:
        progress(name)
