"""Input types shared by the boundary models: what PostgreSQL can store, and nothing else."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import StringConstraints

# PostgreSQL text cannot hold NUL; refusing it at the boundary keeps it a 422, not a 500.
NO_NUL = r"^[^\x00]*$"


def text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[
        str, StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL)
    ]


def check_json_value(value: Any, *, depth: int = 0, where: str = "value") -> None:
    """Free-form JSON a client may attach: bounded, and storable as jsonb."""
    if depth > 5:
        raise ValueError(f"{where} is nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where} contains a NUL character")
        if len(value) > 2000:
            raise ValueError(f"{where} is longer than 2000 characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is not a finite number")
    elif isinstance(value, dict):
        if len(value) > 50:
            raise ValueError(f"{where} has more than 50 keys")
        for key, item in value.items():
            check_json_value(str(key), depth=depth + 1, where=f"{where} key")
            check_json_value(item, depth=depth + 1, where=f"{where}.{key}")
    elif isinstance(value, list):
        if len(value) > 100:
            raise ValueError(f"{where} has more than 100 items")
        for item in value:
            check_json_value(item, depth=depth + 1, where=f"{where}[]")
