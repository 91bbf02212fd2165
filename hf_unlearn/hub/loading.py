"""Load an unlearned model back, from the Hub or a local folder, in one call."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..constants import PICKLE_SUFFIXES
from ..io import check_readable_files
from ..methods import method_of_folder
from .errors import hub_errors

__all__ = ["load_unlearned", "resolve_model_folder"]

logger = logging.get_logger(__name__)

# Never downloaded: pickles (weights are read from safetensors only) and code (remote code never runs).
_IGNORED_DOWNLOADS = [f"*{suffix}" for suffix in PICKLE_SUFFIXES] + ["*.msgpack", "*.h5", "*.py"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_folder(
    repo_id_or_path: str | Path,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """A local folder holding the model: `repo_id_or_path` itself when it is a folder, else a snapshot of the Hub
    repo (safetensors, JSON and tokenizer files; no pickles, no code) in the Hugging Face cache."""
    path = Path(repo_id_or_path)
    if path.is_dir():
        if revision is not None:
            logger.warning(f"revision={revision!r} is ignored: {path} is a local folder.")
        check_readable_files(path, what=f"the model folder {path}")
        return path
    repo_id = str(repo_id_or_path)
    if path.exists() or not _looks_like_repo_id(repo_id):
        raise FileNotFoundError(
            f"{repo_id} is not a model folder{' (it is a file)' if path.exists() else ' (it does not exist)'} nor a "
            "Hub repo id (namespace/name): give the folder a model was saved in, or a Hub id."
        )
    secret = token if isinstance(token, str) else None
    with hub_errors(f"download {repo_id}", endpoint or _default_endpoint(), secret):
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                endpoint=endpoint,
                ignore_patterns=_IGNORED_DOWNLOADS,
                library_name="hf_unlearn",
            )
        )


def _looks_like_repo_id(name: str) -> bool:
    """'name' or 'namespace/name' of letters, digits, '-', '_', '.' (not a path such as /x, ./x, ~/x or a/b/c)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?", name) is not None and ".." not in name


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def load_unlearned(
    repo_id_or_path: str | Path,
    base_model: str | Path | None = None,
    revision: str | None = None,
    *,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an unlearned model and its tokenizer: a peft adapter or GRUN modules on their base model, or full weights.

    ```python
    from hf_unlearn.hub import load_unlearned
    model, tokenizer = load_unlearned("me/llama-tofu-npo")
    ```

    What is loaded depends on the files, as each registered method declares (`hf_unlearn.methods`):
    `grun_config.json` attaches GRUN
    modules to the base model (`hf_unlearn.grun.load_grun_model`), `adapter_config.json` loads a peft adapter onto
    it, otherwise `config.json` and safetensors weights are loaded as a full model. The base model is `base_model`
    when given, else the one the adapter or GRUN config records (`base_model_name_or_path`). The tokenizer comes from
    the model's folder when it has one, else from the base model.

    Remote code is never run (`trust_remote_code=False` is always passed; asking for it is an error) and weights are
    read from safetensors only (`use_safetensors=True` unless given otherwise for the base model).

    Args:
        repo_id_or_path: a Hub model id or a local folder.
        base_model: the base model (a Hub id or a folder), for an adapter or GRUN modules; for full weights, only
            where to load the tokenizer from when the repo has none.
        revision: the Hub revision (branch, tag or commit) of `repo_id_or_path`.
        token: a Hub token for private repos (default: the saved one).
        cache_dir, endpoint: as in `huggingface_hub.snapshot_download`.
        **from_pretrained_kwargs: passed to `AutoModelForCausalLM.from_pretrained` (e.g. `dtype`, `device_map`).

    Returns:
        `(model, tokenizer)`, the model in eval mode.
    """
    if from_pretrained_kwargs.pop("trust_remote_code", False):
        raise ValueError(
            "load_unlearned never runs code from a model repo: trust_remote_code=True is refused. Models saved by "
            "hf_unlearn need no remote code; for a model that does, load it yourself after reviewing its code."
        )
    from_pretrained_kwargs["trust_remote_code"] = False
    from_pretrained_kwargs.setdefault("use_safetensors", True)

    folder = resolve_model_folder(
        repo_id_or_path, revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint
    )
    model_format = method_of_folder(folder)
    base_source: str | None = None
    if model_format.needs_base_model:
        base_source = str(base_model) if base_model is not None else model_format.read_base_model(folder)
        if not base_source:
            raise ValueError(
                f"{repo_id_or_path} holds {model_format.noun} but its {model_format.marker_file} records no base "
                "model (base_model_name_or_path): pass `base_model=`."
            )
    if _has_tokenizer(folder):
        tokenizer_source: str | Path = folder
    elif base_source is not None or base_model is not None:
        tokenizer_source = base_source or str(base_model)
    else:
        raise ValueError(
            f"{repo_id_or_path} holds no tokenizer: pass `base_model=` (a Hub id or folder) to load it from, or save "
            "the tokenizer beside the model (`tokenizer.save_pretrained(folder)`) before pushing."
        )
    # For the base model and a tokenizer from the Hub: never remote code, the caller's token.
    hub_kwargs: dict[str, Any] = {"trust_remote_code": False}
    if token is not None:
        hub_kwargs["token"] = token
        from_pretrained_kwargs.setdefault("token", token)

    model = model_format.load(folder, base_source, source=str(repo_id_or_path), **from_pretrained_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **hub_kwargs)
    model.eval()
    return model, tokenizer
