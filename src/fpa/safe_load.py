"""Load checkpoints and caches without running code hidden in them.

A pickle can call any function while it is read. Everything this project reads back is either
JSON/Parquet/safetensors (inert) or a torch file, which is read with ``weights_only=True``
(tensors, numbers, strings and plain containers only). Two places need more:

- a Lightning checkpoint is checked with :func:`check_checkpoint` before Lightning opens it, so a
  bad file fails with one clear line instead of deep inside the trainer;
- a sharded (distributed) checkpoint's ``.metadata`` is read by ``torch.distributed.checkpoint``
  with plain ``pickle.load``; :func:`check_checkpoint` first reads it with an unpickler that only
  knows the checkpoint-metadata classes, and refuses anything else.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from fpa.guards import CheckpointError, UnsafeFileError

# Lightning's own name for the non-tensor part of a sharded checkpoint (lightning.fabric.utilities.load).
SHARDED_META = "meta.pt"

_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray", "tuple", "list", "dict"}
# Plain values the metadata of torch.distributed.checkpoint pickles (a path, a layout by name).
_SAFE_GLOBALS = {("collections", "OrderedDict"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
                 ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"), ("torch.serialization", "_get_layout")}


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only classes of ``torch.distributed.checkpoint``, torch dtypes/sizes and plain containers."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and name in ("Size",) or (module == "torch" and isinstance(
                getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))):
            return getattr(torch, name)
        if module.startswith("torch.distributed.checkpoint.") or module == "torch.distributed.checkpoint":
            obj = super().find_class(module, name)
            if isinstance(obj, type):  # dataclasses / enums describing the storage layout; never functions
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")


def torch_load(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors and plain containers; :class:`UnsafeFileError` otherwise.

    ``mmap`` applies to the zip format only; a legacy-format file or a bare pickle is read without
    it (torch would raise instead), through the same restricted unpickler.
    """
    if mmap and not zipfile.is_zipfile(path):
        mmap = False
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first
                      else "")
        raise UnsafeFileError(f"refusing to load {path}: it holds objects other than tensors and plain "
                              f"containers, which could run code when unpickled ({reason.strip()[:200]})") from e


def check_checkpoint(path: str | Path) -> Any:
    """Refuse (:class:`UnsafeFileError`) a checkpoint that needs arbitrary unpickling; cheap (mmap).

    ``path`` is a Lightning ``.ckpt`` file or a sharded checkpoint directory. Returns what was read
    (the checkpoint, tensors memory-mapped; a sharded one's ``meta.pt``, or None). An empty,
    truncated or foreign file is a :class:`CheckpointError` naming it.
    """
    try:
        return _check_checkpoint(Path(path))
    except (UnsafeFileError, FileNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 - torch's message for a truncated file is about mmap / zip internals
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first}); it may have "
                              "been cut short: delete it, or set train.resume=never to start over") from e


def _check_checkpoint(p: Path) -> Any:
    if p.is_dir():
        meta = p / ".metadata"
        if meta.exists():
            try:
                _MetadataUnpickler(io.BytesIO(meta.read_bytes())).load()
            except (pickle.UnpicklingError, AttributeError, ImportError, EOFError, TypeError) as e:
                raise UnsafeFileError(f"refusing to load {meta}: not plain checkpoint metadata ({e})") from e
        if (p / SHARDED_META).exists():
            return torch_load(p / SHARDED_META)
        return None
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: an empty file, not a checkpoint (the run was killed while writing it?); "
                              "delete it, or set train.resume=never to start over")
    return torch_load(p, mmap=True)
