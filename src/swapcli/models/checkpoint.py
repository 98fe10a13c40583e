"""Safe loading of torch checkpoints (.pth) into modules.

A .pth file is a pickle, and unpickling can run arbitrary code. Files are read
with ``torch.load(weights_only=True)`` only, so a file that needs anything
beyond tensors and plain containers is refused before any of it runs. Every
failure (missing, unreadable, truncated, refused, wrong layout) becomes a
one-line ModelError, never a traceback.

torch is imported inside the functions: this module may be imported by the CLI
without paying torch's start-up cost.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from swapcli.core.errors import ModelError

if TYPE_CHECKING:
    import torch

# Keys under which training scripts commonly nest the weights.
_WRAPPER_KEYS = ("state_dict", "model", "params")
_DP_PREFIX = "module."  # added to every key by DataParallel / DDP saves
_SHOW = 3  # keys named per category in a layout error


class LoadResult(NamedTuple):
    """Keys ignored by a non-strict load."""

    missing: list[str]
    unexpected: list[str]


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """The exception's first line, with its type when that alone says little (KeyError: 101)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else ""  # torch appends advice sentences
    if not isinstance(exc, (OSError, RuntimeError)) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refusal(path: Path, exc: BaseException) -> ModelError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"; it references {found.group(1)}" if found else ""
    return ModelError(f"checkpoint {path} refused: it is not a plain tensor file (pickled code is never run){what}")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    for _ in range(3):  # e.g. {'model': {'state_dict': {...}}}
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ModelError(f"checkpoint {path} holds no weights (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"checkpoint {path} is not a state dict: {len(bad)} entries are not named tensors "
            f"(e.g. {bad[0]!r})"
        )
    if all(k.startswith(_DP_PREFIX) for k in obj):
        obj = {k[len(_DP_PREFIX):]: v for k, v in obj.items()}
    return dict(obj)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors on the CPU without running pickled code.

    Accepts a bare state dict or one nested under 'state_dict' / 'model' /
    'params'; a DataParallel 'module.' prefix is stripped.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found" if not path.exists() else f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": noise for a user
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("Weights only load failed"):
            raise _refusal(path, exc) from exc
        raise ModelError(f"checkpoint {path} cannot be read (truncated or corrupt?): {_first_line(exc)}") from exc
    except EOFError as exc:
        raise ModelError(f"checkpoint {path} cannot be read: it is empty or truncated") from exc
    except MemoryError as exc:
        raise ModelError(f"checkpoint {path} cannot be read: out of memory") from exc
    except Exception as exc:  # zip/stream errors, OSError, garbage bytes: all one line
        raise ModelError(f"checkpoint {path} cannot be read (truncated or corrupt?): {_first_line(exc)}") from exc
    return _unwrap(obj, path)


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(map(str, t.shape)) + "]"


def load_into(module: torch.nn.Module, path: str | Path | dict, *, strict: bool = True) -> LoadResult:
    """Load a checkpoint into ``module``, refusing it unless the layouts agree.

    strict: every key must be present on both sides (bar BatchNorm's
    num_batches_tracked counter, which torch fills in itself). Shapes must always match
    (a mismatched tensor cannot be loaded at all). The check runs before any
    weight is copied, so a refused file leaves ``module`` untouched. Values are
    cast to the module's dtype (an fp16 checkpoint loads into an fp32 module).
    """
    state = path if isinstance(path, dict) else load_state_dict(path)  # a dict: already loaded safely
    label = "checkpoint" if isinstance(path, dict) else f"checkpoint {path}"
    own = module.state_dict()
    # BatchNorm fills in an absent num_batches_tracked itself (pre-0.4 saves lack it); it is
    # a training counter that inference never reads.
    missing = [k for k in own if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {_shape(state[k])} vs {_shape(own[k])}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if wrong or (strict and (missing or unexpected)):
        parts = [
            f"{len(keys)} {label} ({', '.join(keys[:_SHOW])}{', ...' if len(keys) > _SHOW else ''})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        name = type(module).__name__
        raise ModelError(f"{label} does not fit {name}: " + "; ".join(parts))
    if not strict:
        state = {k: v for k, v in state.items() if k in own}
    try:
        module.load_state_dict(state, strict=strict)
    except Exception as exc:  # e.g. a dtype that cannot be cast; keep it to one line
        name = type(module).__name__
        raise ModelError(f"{label} cannot be loaded into {name}: {_first_line(exc)}") from exc
    return LoadResult(missing, unexpected)
