"""How stages report progress without knowing about terminals.

Library code calls a `Reporter`; the CLI passes one that draws rich progress bars on stderr, tests and
library users pass nothing (a `NullReporter`).
"""

from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    def start(self, description: str, total: float | None = None, unit: str = "") -> None:
        """Begin a phase of work with a known (or unknown) total."""

    def update(self, completed: float, **fields: Any) -> None:
        """Set the completed amount of the current phase; fields are shown beside the bar."""

    def log(self, message: str) -> None:
        """A line of information for the user."""

    def finish(self) -> None:
        """End the current phase."""


class NullReporter:
    def start(self, description: str, total: float | None = None, unit: str = "") -> None:
        pass

    def update(self, completed: float, **fields: Any) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass
