"""Which adaptation method applies to which backbone family, and why not: ``ecg-adapt methods``.

The answer is computed, not written down: each method's ``check`` runs on every released architecture
(weightless, on the ``meta`` device), so the table always says what ``adapt`` would do.
"""

from __future__ import annotations

from typing import Any

from .config import METHODS, registered_methods
from .peft_methods import support_matrix, support_matrix_markdown

# Column -> AdaptationConfig kwargs: every method, LoRA's variants as their own columns.
ALL_COLUMNS: dict[str, dict[str, Any]] = {}
for _m in METHODS:
    ALL_COLUMNS[_m] = {"method": _m}
    if _m == "lora":
        ALL_COLUMNS["lora+dora"] = {"method": "lora", "use_dora": True}
        ALL_COLUMNS["lora+pissa"] = {"method": "lora", "init_lora_weights": "pissa"}
del _m


def methods_table() -> str:
    """Markdown table of the methods: kind, what is trained, whether it merges into the backbone."""
    lines = ["| method | kind | trains | merges into the backbone |", "|---|---|---|---|"]
    for name, spec in registered_methods().items():
        merge = "yes" if spec.mergeable else ("n/a (weights already in place)" if spec.kind == "native" else "no")
        lines.append(f"| `{name}` | {spec.kind} | {spec.trains} | {merge} |")
    return "\n".join(lines) + "\n"


def full_support_matrix() -> dict[str, dict[str, str]]:
    """``matrix[family][column]`` = ``"ok"`` or the reason, for every method (LoRA variants as columns)."""
    return support_matrix(columns=ALL_COLUMNS)


__all__ = ["ALL_COLUMNS", "full_support_matrix", "methods_table", "support_matrix_markdown"]
