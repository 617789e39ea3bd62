"""`sam local invoke` without Docker: load a function's handler by path and call it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from tally.local.context import FakeLambdaContext
from tally.local.template import Function, Template

_modules: dict[Path, ModuleType] = {}


def load_module(fn: Function) -> ModuleType:
    """Every function's file is app.py: load each under its own module name, once."""
    path = fn.module_path.resolve()
    if path in _modules:
        return _modules[path]
    name = f"tally_function_{fn.logical_id}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _modules[path] = module
    return module


def invoke(template: Template, logical_id: str, event: dict[str, Any]) -> Any:
    try:
        fn = template.functions[logical_id]
    except KeyError:
        known = ", ".join(sorted(template.functions))
        raise KeyError(f"No function {logical_id} in template.yaml (known: {known})") from None
    handler = getattr(load_module(fn), fn.handler_name)
    context = FakeLambdaContext(function_name=logical_id, timeout_s=fn.timeout_s)
    return handler(event, context)


def load_event(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data
