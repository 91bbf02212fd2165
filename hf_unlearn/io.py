"""Writing files so that a crash never leaves half of one: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Write `text` to `path` atomically (POSIX and Windows): a crash leaves the previous complete file, or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0o600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as JSON (UTF-8, non-ASCII kept) to `path` atomically, see [`write_text_atomic`]."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def parse_json_object(name: str, value: Any) -> dict[str, Any]:
    """A dict given as a dict, a JSON object string (from a command line or recipe) or None (empty); anything else
    raises a ValueError that names the option."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"`{name}` must be a dict or a JSON object string, got {value!r}: {err.msg}.") from err
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a dict of hyperparameters, got {type(value).__name__}.")
    return dict(value)


def read_json_file(path: str | Path, what: str = "a JSON file") -> Any:
    """The JSON in `path`; an unreadable or malformed file raises a ValueError that names it and what it holds."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} ({what}) is not valid UTF-8 JSON ({err}). Restore or remove the file.") from err


def check_readable_files(folder: str | Path, what: str = "the folder") -> None:
    """Read every JSON file and every safetensors header of `folder` (not the tensors): a corrupt or truncated one
    raises a ValueError that names it, before a library deep inside fails with a message that does not."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.json")):
        read_json_file(path, what=f"a file of {what}")
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:  # checks that the header's offsets fit the file
                f.keys()
        except Exception as err:  # noqa: BLE001  (safetensors raises its own error types)
            raise ValueError(
                f"{path} (in {what}) is not a readable safetensors file ({err}): it is truncated or corrupt. "
                "Restore it, or use another checkpoint."
            ) from err


#: The key of an evaluation summary that records which weights were evaluated (see [`weights_fingerprint`]).
FINGERPRINT_KEY = "weights_fingerprint"


def weights_fingerprint(folder: str | Path) -> str | None:
    """sha256 over the names and bytes of the weight files of a saved model folder (its `*.safetensors`, without
    training state such as the GRU or loss state), or None when it has none. An evaluation records it, so that a
    card or a push can tell whether the results belong to the weights beside them."""
    from .constants import GRU_WEIGHTS_FILE, LOSS_STATE_FILE

    files = sorted(p for p in Path(folder).glob("*.safetensors") if p.name not in (GRU_WEIGHTS_FILE, LOSS_STATE_FILE))
    if not files:
        return None
    # A push gathers the card and the files to publish, and each checks the fingerprint: hash the weights once
    # while they are unchanged (same paths, sizes and modification times).
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
        _FINGERPRINTS.clear()  # one model at a time is enough
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


_FINGERPRINTS: dict[tuple, str] = {}


def record_weights_fingerprint(eval_dir: str | Path, model_folder: str | Path) -> str | None:
    """Add the fingerprint of `model_folder`'s weights to the evaluation summary in `eval_dir` (rewritten atomically);
    returns it (None: no weights or no summary)."""
    from .constants import EVAL_SUMMARY_FILE

    path = Path(eval_dir) / EVAL_SUMMARY_FILE
    fingerprint = weights_fingerprint(model_folder)
    if fingerprint is None or not path.is_file():
        return None
    summary = read_json_file(path, what="an evaluation summary")
    summary[FINGERPRINT_KEY] = fingerprint
    write_json_atomic(path, summary, indent=4)
    return fingerprint


#: A Hub repository id: `name` or `org/name` (letters, digits, `-`, `_`, `.`; not starting with `.` or `-`).
_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?$")


def looks_like_local_path(name: str) -> bool:
    """Whether a model name can only be a local path, not a Hub id: it starts with `.`, `/` or `~`, or it holds a
    path separator and is not of the Hub's `org/name` form (`runs/tofu/npo`, `model/`)."""
    if name.startswith((".", "/", "~")):
        return True
    separators = {os.sep, os.altsep or os.sep, "/"}
    return any(sep in name for sep in separators) and not _HUB_REPO_ID.match(name)


def check_model_path(name: str | None, option: str = "model_name_or_path") -> None:
    """Raise a FileNotFoundError that names `option` when `name` can only be a local path (see
    [`looks_like_local_path`]) and is not a folder, before anything asks the Hub for it (which would retry, then fail
    with a traceback about repository ids)."""
    if not name or not looks_like_local_path(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{option} {name} does not exist (a local path; a Hub id reads 'org/name').")
    if not path.is_dir():
        raise FileNotFoundError(f"{option} {name} is a file, not a model folder (a saved model is a directory).")
