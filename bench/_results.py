"""What every benchmark here does with its figures: append the raw runs, write the markdown, print it."""

from __future__ import annotations

import os


def save(path: str, lines: list[str], runs: dict[str, list[float]]) -> None:
    """Writes ``lines`` plus every run's raw rows/s to ``path`` (markdown) and prints the result."""
    lines = [*lines, "", "Raw runs (rows/s):", ""]
    lines += [f"- {key}: " + ", ".join(f"{v:,.0f}" for v in values) for key, values in runs.items()]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
