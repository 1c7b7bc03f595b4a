"""Module entry point for launchers: ``accelerate launch -m ecg_adapt.train RECIPE.yaml [section.key=value ...]``.

Every rank parses the same recipe; accelerate's launcher decides devices and processes.
"""

from __future__ import annotations

import sys

from .cli import main


def run(argv: list[str] | None = None) -> int:
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(run())
