"""Stage cache keys, derived from the built objects a stage receives, never assembled by hand.

:func:`identity` turns a typed node (a dataclass, an objective, a task, a partial, plain values)
into plain data: its type and its public fields. :func:`stage_key` hashes a stage's name, its code
version and the identity of everything it receives, so changing any setting a stage reads changes
its key, and a setting it does not receive cannot.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any


def _name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', type(cls).__name__)}"


def identity(obj: Any) -> Any:
    """Plain, JSON-able data that determines what ``obj`` computes (private attributes are left out)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): identity(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [identity(v) for v in obj]
    if hasattr(obj, "identity") and callable(obj.identity):
        return identity(obj.identity())
    if is_dataclass(obj) and not isinstance(obj, type):
        # A field marked ``metadata={"identity": "omit_if_none"}`` (one added later, null by default) is
        # left out while null, so the keys made before it existed stay the same.
        return {"type": _name(type(obj)),
                **{f.name: identity(getattr(obj, f.name)) for f in fields(obj) if f.init and not f.name.startswith("_")
                   and not (f.metadata.get("identity") == "omit_if_none" and getattr(obj, f.name) is None)}}
    if isinstance(obj, functools.partial):
        return {"type": _name(obj.func), "args": identity(list(obj.args)), **identity(obj.keywords)}
    if hasattr(obj, "__dict__"):
        return {"type": _name(type(obj)),
                **{k: identity(v) for k, v in vars(obj).items() if not k.startswith("_")}}
    return repr(obj)


def stage_key(stage: str, version: str, **inputs: Any) -> str:
    """12 hex digits naming ``<cache_dir>/<stage>/<key>``."""
    text = json.dumps({"stage": stage, "version": version, "inputs": identity(inputs)}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
