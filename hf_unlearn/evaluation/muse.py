"""MUSE evaluation of a model (Shi et al. 2024, arXiv 2407.06460): KnowMem, VerbMem and PrivLeak.

As MUSE's own scripts compute them (swj0419/muse_bench `eval.py`, `metrics/knowmem.py`, `metrics/verbmem.py`,
`metrics/privleak.py`, `metrics/logger.py`; golden tests in tests/test_golden_muse_mia.py):

* **KnowMem** (forget and retain): few-shot question answering about the forget / retain corpus. The prompt is the
  split's in-context examples, each `"Question: {q}\\nAnswer: {a}\\n\\n"`, followed by
  `"Question: {q}\\nAnswer: "`, encoded with the tokenizer's special tokens (BOS); the greedy answer (up to 32 new
  tokens) is cut at the first blank line or `Question` and scored with ROUGE-L F1 against the answer.
* **VerbMem** (forget): the greedy continuation (up to 128 new tokens) of a prefix of a forget text (encoded with
  special tokens), scored with ROUGE-L F1 against the true continuation cut as MUSE cuts it: the first 128 ids of
  `tokenizer(gt, add_special_tokens=True)`, decoded without special tokens; with a BOS-adding tokenizer (Llama's)
  that is 127 text tokens.
* **PrivLeak**: the Min-K% membership-inference score (k = 0.4) of every token after the first of every forget text
  (members) and holdout text (non-members), their AUC ([`~hf_unlearn.evaluation.metrics.mia_auc`]: 1 = members
  recognised, 0.5 = chance; MUSE's tables report `1 - ` that, our `privleak_auc_muse`) and PrivLeak relative to the
  retain model's AUC ([`~hf_unlearn.evaluation.metrics.privleak`]; 0 is ideal, a model that still remembers the
  forget set is near -100). The retain model's AUC is given by name (`"news"`, `"books"`: MUSE's published
  `AUC_RETRAIN`), as a result file, or as a number with its convention (see [`load_muse_retain_auc`]).

ROUGE-L is [`~hf_unlearn.evaluation.metrics.rouge_l_f1`] WITHOUT the Porter stemmer, as MUSE's `RougeEvalLogger`
scores; generations and references are decoded with `clean_up_tokenization_spaces=True`, as there.
`rouge_stemmer=True` gives the stemmed variant open-unlearning's MUSE evaluation reports (slightly higher scores).

Data: the `knowmem` (`forget_qa`, `retain_qa`, `forget_qa_icl`, `retain_qa_icl`; fields `question`,
`answer`), `verbmem` (`forget`; `prompt`, `gt`) and `privleak` (`forget`, `holdout`; `text`)
configurations of `muse-bench/MUSE-News` (or `MUSE-Books`), read with `datasets.load_dataset`, or offline from a
directory laid out the same way: `<dir>/<config>/<split>.json` (a list of rows, or of strings for `text` splits)
or `<dir>/<config>/<split>.jsonl` (one row per line).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..constants import EVAL_SUMMARY_FILE
from ..data.source import DataSource, rows_fingerprint
from ..io import write_json_atomic
from .metrics import mia_auc, mia_loss, mia_min_k, privleak, rouge_l_f1
from .model_io import check_vocabulary, eos_token_ids, greedy_generate, resolve_pad_token_id
from .record import RECORD_KEY, hf_unlearn_version
from .scoring import score_answers

__all__ = [
    "MUSE_METRICS",
    "MUSE_RETRAIN_AUC",
    "RETAIN_AUC_CONVENTIONS",
    "MUSEEvaluator",
    "load_muse",
    "load_muse_retain_auc",
]

#: The MUSE metrics [`MUSEEvaluator`] computes.
MUSE_METRICS: tuple[str, ...] = ("knowmem", "verbmem", "privleak")

#: MUSE's published Min-K% (k = 0.4) AUC of its retrained models (swj0419/muse_bench `constants.py`,
#: `AUC_RETRAIN[corpus]['forget_holdout_Min-40%']`), in MUSE's convention (`privleak_auc_muse`, i.e. 1 - ours).
MUSE_RETRAIN_AUC: dict[str, float] = {"news": 0.4772, "books": 0.5393}

#: How a retain AUC given as a bare number is to be read: `"muse"` = MUSE's tables, its `AUC_RETRAIN` and our
#: `privleak_auc_muse` (0 = members recognised); `"hf_unlearn"` = our `privleak_auc` and open-unlearning's
#: `mia_min_k` (1 = members recognised). One is 1 minus the other.
RETAIN_AUC_CONVENTIONS: tuple[str, ...] = ("muse", "hf_unlearn")

DEFAULT_MUSE_DATASET = "muse-bench/MUSE-News"
# The fields each (config, split) must provide.
_FIELDS: dict[str, tuple[str, ...]] = {
    "knowmem": ("question", "answer"),
    "verbmem": ("prompt", "gt"),
    "privleak": ("text",),
}
# A KnowMem answer ends where the model starts a new few-shot block.
_ANSWER_STOPS = ("\n\n", "\nQuestion", "Question:")


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------


def load_muse(
    config: str, split: str, data_dir: str | Path | None = None, dataset: str = DEFAULT_MUSE_DATASET
) -> list[dict[str, Any]]:
    """Rows of one MUSE configuration split, as a list of dicts.

    Args:
        config: `"knowmem"`, `"verbmem"` or `"privleak"` (any configuration when reading from the Hub).
        split: e.g. `"forget_qa"`, `"retain_qa_icl"`, `"forget"`, `"holdout"`.
        data_dir: None reads `dataset` with `datasets.load_dataset`; a directory reads
            `<data_dir>/<config>/<split>.json` or `.jsonl`.
        dataset: the Hub dataset (`"muse-bench/MUSE-News"` or `"muse-bench/MUSE-Books"`).
    """
    if data_dir is None:
        from datasets import load_dataset

        return [dict(row) for row in load_dataset(dataset, config, split=split)]
    base = Path(data_dir) / config
    for suffix in (".json", ".jsonl"):
        path = base / f"{split}{suffix}"
        if path.is_file():
            return _read_rows(path, config)
    found = f"{base} holds {sorted(p.name for p in base.iterdir())}" if base.is_dir() else f"{base} does not exist"
    raise FileNotFoundError(
        f"No MUSE data for {config}/{split} in {data_dir}: expected {base / (split + '.json')} or "
        f"{base / (split + '.jsonl')}; {found}."
    )


def _read_rows(path: Path, config: str) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                data = [json.loads(line) for line in f if line.strip()]
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a list of rows (JSON) or one row per line (JSON Lines).")
    rows = []
    for i, row in enumerate(data):
        if isinstance(row, str) and _FIELDS.get(config) == ("text",):
            row = {"text": row}  # MUSE's privleak files may be plain lists of texts
        if not isinstance(row, Mapping):
            raise ValueError(f"Row {i} of {path} is a {type(row).__name__}, expected an object with fields.")
        rows.append(dict(row))
    return rows


def _check_rows(rows: Sequence[Mapping[str, Any]], config: str, split: str) -> None:
    if len(rows) == 0:
        raise ValueError(f"The MUSE {config}/{split} split is empty: there is nothing to evaluate.")
    fields = _FIELDS[config]
    for i, row in enumerate(rows):
        missing = [f for f in fields if row.get(f) is None]
        if missing:
            raise ValueError(
                f"Row {i} of the MUSE {config}/{split} split lacks the field(s) {missing}: expected {list(fields)}, "
                f"found {sorted(row)}."
            )


def load_muse_retain_auc(retain: float | str | Path, convention: str | None = None) -> float:
    """The retain model's Min-K% AUC for PrivLeak, returned in hf_unlearn's convention (`privleak_auc`,
    [`~hf_unlearn.evaluation.metrics.mia_auc`]: 1 = members recognised).

    MUSE publishes its retrained models' AUC in the opposite convention (News 0.4772, Books 0.5393, which are
    0.5228 and 0.4607 in ours): a bare number is therefore ambiguous, and must come with its convention, so that
    passing MUSE's number cannot silently give a wrong PrivLeak.

    Args:
        retain: one of
            - `"news"` or `"books"` (any case): MUSE's published retrain AUC ([`MUSE_RETRAIN_AUC`]), converted;
            - a number, with `convention`;
            - a `summary.json` written by [`MUSEEvaluator`] for the retain model (its `privleak_auc`) or the
              directory holding it, or open-unlearning's `MUSE_EVAL.json` (its `mia_min_k` `agg_value`, our
              convention) or a directory holding that (a folder named `news` or `books`: pass `./news`).
        convention: for a number only: `"muse"` (MUSE's tables and `AUC_RETRAIN`, our `privleak_auc_muse`;
            converted with `1 - value`) or `"hf_unlearn"` (our `privleak_auc`, open-unlearning's `mia_min_k`).

    Raises a ValueError for a number without a convention, a convention with a name or a file, or an AUC outside
    [0, 1].
    """
    if convention is not None and convention not in RETAIN_AUC_CONVENTIONS:
        raise ValueError(f"convention must be one of {list(RETAIN_AUC_CONVENTIONS)} or None, got {convention!r}.")
    is_number = isinstance(retain, (int, float)) and not isinstance(retain, bool)
    if convention is not None and not is_number:
        raise ValueError(
            f"A retain-AUC convention ({convention!r}) is only for a bare number; {retain!r} says its own "
            "(a MUSE corpus name: MUSE's convention; a result file: its keys)."
        )
    if is_number:
        if convention is None:
            raise ValueError(
                f"The retain model's AUC {retain} is ambiguous: MUSE reports 1 - the AUC hf_unlearn and "
                "open-unlearning report. Pass its convention: retain_auc_convention='muse' (MUSE's tables and "
                "AUC_RETRAIN, our privleak_auc_muse) or 'hf_unlearn' (our privleak_auc, open-unlearning's "
                "mia_min_k); or retain_auc='news' / 'books' for MUSE's published retrain models."
            )
        value = float(retain)
        _check_auc(value)
        return 1.0 - value if convention == "muse" else value
    if isinstance(retain, str) and retain.lower() in MUSE_RETRAIN_AUC:
        return 1.0 - MUSE_RETRAIN_AUC[retain.lower()]
    path = Path(retain)
    if path.is_dir():
        candidates = [path / EVAL_SUMMARY_FILE, path / "MUSE_EVAL.json"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"No retain-model MUSE results at {retain} (expected {EVAL_SUMMARY_FILE}).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    entry = data.get("privleak_auc") if isinstance(data, Mapping) else None
    if entry is None and isinstance(data, Mapping) and isinstance(data.get("mia_min_k"), Mapping):
        entry = data["mia_min_k"].get("agg_value")
    if entry is None:
        raise ValueError(
            f"{path} holds no retain-model AUC: expected 'privleak_auc' (hf_unlearn) or 'mia_min_k.agg_value' "
            "(open-unlearning); evaluate the retain model with the privleak metric first."
        )
    value = float(entry)
    _check_auc(value)
    return value


def _check_auc(value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"The retain model's AUC must be in [0, 1], got {value}.")


# ----------------------------------------------------------------------------------------------------------------
# evaluator
# ----------------------------------------------------------------------------------------------------------------


class MUSEEvaluator:
    """MUSE evaluation: KnowMem (forget / retain ROUGE-L F1), VerbMem (forget ROUGE-L F1), PrivLeak (Min-K% AUC).

    Generation is greedy and batched with left padding built here; PrivLeak's teacher-forced scoring is batched with
    right padding. Prompts are raw text (MUSE evaluates base models: no chat template). Works with transformers
    models, peft models and modules with a transformers-style `forward` / `generate`.

    Args:
        model: the causal LM to evaluate (left in the train/eval mode it had).
        tokenizer: its tokenizer.
        metrics: which of `"knowmem"`, `"verbmem"`, `"privleak"` to compute.
        dataset: the Hub dataset to read when neither `data_dir` nor `datasets` provides a split.
        data_dir: a local directory in the Hub's layout (see [`load_muse`]); None reads the Hub.
        datasets: `"config/split"` (e.g. `"knowmem/forget_qa"`) -> dataset or list of rows, used instead of
            loading that split.
        batch_size: sequences per teacher-forced forward pass (PrivLeak).
        generation_batch_size: prompts per `generate` call (default: `batch_size`).
        knowmem_max_new_tokens: KnowMem answer length (MUSE: 32).
        verbmem_max_new_tokens: VerbMem continuation length (MUSE: 128); the reference continuation is truncated
            to as many tokens.
        num_icl_examples: how many in-context examples KnowMem prompts hold (None: all of the `*_qa_icl` split).
        min_k: the fraction k of lowest-probability tokens Min-K% averages (MUSE: 0.4).
        max_length: texts are truncated to this many tokens for PrivLeak scoring (None: no truncation, as MUSE's
            script, which scores whole texts).
        max_items: evaluate only the first N items of each split (None: all).
        rouge_stemmer: False (default): KnowMem and VerbMem ROUGE-L without the Porter stemmer, as MUSE's scripts
            score; True: with it, as open-unlearning's MUSE evaluation (and TOFU) score, which reads inflected
            words as matches and gives slightly higher scores.
        progress: show tqdm progress bars.

    After [`evaluate`], `self.logs` holds the per-item logs (name -> list of dicts).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        metrics: Sequence[str] = MUSE_METRICS,
        dataset: str = DEFAULT_MUSE_DATASET,
        data_dir: str | Path | None = None,
        datasets: Mapping[str, Dataset | Sequence[Mapping[str, Any]]] | None = None,
        batch_size: int = 8,
        generation_batch_size: int | None = None,
        knowmem_max_new_tokens: int = 32,
        verbmem_max_new_tokens: int = 128,
        num_icl_examples: int | None = None,
        min_k: float = 0.4,
        max_length: int | None = 2048,
        max_items: int | None = None,
        rouge_stemmer: bool = False,
        progress: bool = True,
    ):
        if isinstance(metrics, str):
            metrics = [metrics]
        unknown = [m for m in metrics if m not in MUSE_METRICS]
        if unknown or not metrics:
            raise ValueError(f"Unknown MUSE metric(s) {unknown or list(metrics)}; choose among {list(MUSE_METRICS)}.")
        for name, value in (
            ("batch_size", batch_size),
            ("generation_batch_size", generation_batch_size or 1),
            ("knowmem_max_new_tokens", knowmem_max_new_tokens),
            ("verbmem_max_new_tokens", verbmem_max_new_tokens),
            ("max_length", max_length or 2),
            ("max_items", max_items or 1),
        ):
            if int(value) < 1 or (name == "max_length" and int(value) < 2):
                raise ValueError(f"{name} must be >= {2 if name == 'max_length' else 1}, got {value}")
        if not 0.0 < min_k <= 1.0:
            raise ValueError(f"min_k must be in (0, 1], got {min_k}")
        if num_icl_examples is not None and num_icl_examples < 0:
            raise ValueError(f"num_icl_examples must be >= 0 or None, got {num_icl_examples}")
        check_vocabulary(model, tokenizer)
        self.model = model
        self.tokenizer = tokenizer
        self.metrics = [m for m in MUSE_METRICS if m in metrics]
        self.batch_size = int(batch_size)
        self.generation_batch_size = int(generation_batch_size or batch_size)
        self.knowmem_max_new_tokens = int(knowmem_max_new_tokens)
        self.verbmem_max_new_tokens = int(verbmem_max_new_tokens)
        self.min_k = float(min_k)
        self.max_length = max_length
        self.rouge_stemmer = bool(rouge_stemmer)
        self.progress = progress
        self.pad_token_id = resolve_pad_token_id(tokenizer, "MUSEEvaluator")
        #: where the data came from (the Hub id, or the local directory), recorded in the summary
        self.dataset_name = str(data_dir) if data_dir is not None else "in-memory data" if datasets else dataset
        self.logs: dict[str, list[dict[str, Any]]] = {}

        supplied = dict(datasets or {})
        self.max_items = max_items
        #: Where each `config/split` came from and how many of its rows are evaluated (the summary's record).
        self.sources: dict[str, dict[str, Any]] = {}

        def rows(config: str, split: str, limit: int | None = max_items) -> list[dict[str, Any]]:
            key = f"{config}/{split}"
            data = supplied[key] if key in supplied else load_muse(config, split, data_dir, dataset)
            data = [dict(r) for r in data]
            if config in _FIELDS:
                _check_rows(data, config, split)
            used = data if limit is None else data[:limit]
            if key in supplied:
                source = DataSource("in_memory")
            elif data_dir is None:
                source = DataSource("hub", dataset=dataset, config=key)
            else:
                source = DataSource("local", config=key, path=str(Path(data_dir).resolve()))
            self.sources[key] = {**source.to_dict(), "num_rows": len(data), "items": len(used)}
            self.sources[key]["fingerprint"] = rows_fingerprint(used)
            return used

        # Load (and check) everything up front: bad data should fail before minutes of generation.
        self.knowmem: dict[str, tuple[list[dict[str, Any]], str]] = {}
        if "knowmem" in self.metrics:
            for part in ("forget", "retain"):
                shots = rows("knowmem", f"{part}_qa_icl", limit=num_icl_examples) if num_icl_examples != 0 else []
                prefix = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
                self.knowmem[part] = (rows("knowmem", f"{part}_qa"), prefix)
        self.verbmem = rows("verbmem", "forget") if "verbmem" in self.metrics else []
        self.privleak = (
            {part: rows("privleak", part) for part in ("forget", "holdout")} if "privleak" in self.metrics else {}
        )

    # ------------------------------------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _generate(self, prompts: list[list[int]], max_new_tokens: int, desc: str) -> list[str]:
        return greedy_generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=self.generation_batch_size,
            pad_token_id=self.pad_token_id,
            eos_token_id=eos_token_ids(self.model, self.tokenizer),
            progress=self.progress,
            desc=desc,
            clean_up_tokenization_spaces=True,  # as MUSE decodes
        )

    def _warn_empty(self, name: str, generations: Sequence[str]) -> None:
        empty = sum(1 for g in generations if not g.strip())
        if empty:
            warnings.warn(
                f"{empty} of {len(generations)} MUSE {name} generations are empty; their ROUGE-L F1 is 0.",
                stacklevel=4,
            )

    def _knowmem(self, part: str) -> list[dict[str, Any]]:
        qa, prefix = self.knowmem[part]
        prompts = [f"{prefix}Question: {row['question']}\nAnswer: " for row in qa]
        raw = self._generate([self._encode(p) for p in prompts], self.knowmem_max_new_tokens, f"MUSE: KnowMem {part}")
        answers = []
        for text in raw:
            for stop in _ANSWER_STOPS:
                text = text.split(stop)[0]
            answers.append(text.strip())
        self._warn_empty(f"KnowMem {part}", answers)
        scores = rouge_l_f1(answers, [str(row["answer"]) for row in qa], use_stemmer=self.rouge_stemmer)
        return [
            {"index": i, "question": row["question"], "answer": row["answer"], "generation": gen, "rougeL_f1": s}
            for i, (row, gen, s) in enumerate(zip(qa, answers, scores))
        ]

    def _verbmem(self) -> list[dict[str, Any]]:
        n = self.verbmem_max_new_tokens
        references = []
        for row in self.verbmem:
            # MUSE cuts the reference to the first n ids WITH special tokens: a BOS-adding tokenizer keeps n - 1 words
            gt_ids = self._encode(str(row["gt"]))[:n]
            references.append(
                self.tokenizer.decode(gt_ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
            )
        raw = self._generate([self._encode(str(row["prompt"])) for row in self.verbmem], n, "MUSE: VerbMem")
        generations = [g.strip() for g in raw]
        self._warn_empty("VerbMem", generations)
        scores = rouge_l_f1(generations, references, use_stemmer=self.rouge_stemmer)
        return [
            {"index": i, "prompt": row["prompt"], "gt": ref, "generation": gen, "rougeL_f1": s}
            for i, (row, ref, gen, s) in enumerate(zip(self.verbmem, references, generations, scores))
        ]

    def _privleak(self, part: str) -> list[dict[str, Any]]:
        texts = [str(row["text"]) for row in self.privleak[part]]
        pairs = []
        for i, text in enumerate(texts):
            ids = self._encode(text)[: self.max_length] if self.max_length else self._encode(text)
            if len(ids) < 2:
                raise ValueError(
                    f"Text {i} of the MUSE privleak/{part} split encodes to {len(ids)} token(s); Min-K% needs at "
                    "least one predicted token."
                )
            pairs.append((ids[:1], ids[1:]))  # every token after the first is scored
        logprobs = score_answers(
            self.model,
            pairs,
            pad_token_id=self.pad_token_id,
            batch_size=self.batch_size,
            progress=self.progress,
            desc=f"MUSE: PrivLeak {part}",
        ).logprobs
        return [
            {"index": i, "num_tokens": int(lp.size), "min_k": mia_min_k(lp, self.min_k), "loss": mia_loss(lp)}
            for i, lp in enumerate(logprobs)
        ]

    def evaluate(
        self,
        output_dir: str | Path | None = None,
        retain_auc: float | str | Path | None = None,
        retain_auc_convention: str | None = None,
    ) -> dict[str, Any]:
        """Compute the metrics and return the summary.

        Args:
            output_dir: where to write the per-item logs (`knowmem_forget.json`, `knowmem_retain.json`,
                `verbmem_forget.json`, `privleak_forget.json`, `privleak_holdout.json`) and `summary.json`;
                None writes nothing.
            retain_auc: the retain model's Min-K% AUC for PrivLeak: `"news"` / `"books"` (MUSE's published
                retrain AUC, [`MUSE_RETRAIN_AUC`]), a retain model's result file / directory, or a number with
                `retain_auc_convention` (see [`load_muse_retain_auc`]). None leaves `privleak` None.
            retain_auc_convention: required with a number, else an error: `"muse"` (MUSE's tables, e.g. its
                published 0.4772; our `privleak_auc_muse`) or `"hf_unlearn"` (our `privleak_auc`).

        Returns a dict with, for the metrics computed: `knowmem_forget_rougeL_f1`, `knowmem_retain_rougeL_f1`,
        `verbmem_forget_rougeL_f1` (means over items), `privleak_auc` ([`mia_auc`] of the forget vs holdout
        Min-K% scores), `privleak_auc_muse` (`1 - privleak_auc`, the AUC as MUSE's tables report it),
        `privleak_retain_auc` and `privleak_retain_auc_muse` (the retain model's, in the two conventions) and
        `privleak` (MUSE's `(auc_muse - retain_auc_muse) / retain_auc_muse * 100`), None without `retain_auc`;
        `rouge_stemmer`; and `num_items` (log -> count).
        """
        if retain_auc is None and retain_auc_convention is not None:
            raise ValueError("retain_auc_convention says how to read retain_auc, which is missing.")
        reference = load_muse_retain_auc(retain_auc, retain_auc_convention) if retain_auc is not None else None
        if reference is not None and "privleak" not in self.metrics:
            raise ValueError("PrivLeak (retain_auc given) needs 'privleak' among `metrics`.")
        was_training = self.model.training
        self.model.eval()
        self.logs = {}
        try:
            if "knowmem" in self.metrics:
                for part in ("forget", "retain"):
                    self.logs[f"knowmem_{part}"] = self._knowmem(part)
            if "verbmem" in self.metrics:
                self.logs["verbmem_forget"] = self._verbmem()
            if "privleak" in self.metrics:
                for part in ("forget", "holdout"):
                    self.logs[f"privleak_{part}"] = self._privleak(part)
        finally:
            self.model.train(was_training)

        summary: dict[str, Any] = {}
        for name in ("knowmem_forget", "knowmem_retain", "verbmem_forget"):
            if name in self.logs:
                summary[f"{name}_rougeL_f1"] = float(np.mean([item["rougeL_f1"] for item in self.logs[name]]))
        if {"knowmem", "verbmem"} & set(self.metrics):
            summary["rouge_stemmer"] = self.rouge_stemmer
        if "privleak" in self.metrics:
            auc = mia_auc(
                [item["min_k"] for item in self.logs["privleak_forget"]],
                [item["min_k"] for item in self.logs["privleak_holdout"]],
            )
            summary["privleak_auc"] = auc
            summary["privleak_auc_muse"] = 1.0 - auc
            summary["privleak_retain_auc"] = reference
            summary["privleak_retain_auc_muse"] = 1.0 - reference if reference is not None else None
            summary["privleak"] = privleak(auc, reference, from_mia_auc=True) if reference is not None else None
            summary["min_k"] = self.min_k
        summary["num_items"] = {name: len(items) for name, items in self.logs.items()}
        summary["dataset"] = self.dataset_name
        summary[RECORD_KEY] = self.record
        if output_dir is not None:
            self.write(output_dir, summary)
        return summary

    @property
    def record(self) -> dict[str, Any]:
        """How this evaluation is made: settings, data, and why it is not MUSE's own (see
        [`hf_unlearn.evaluation.record`])."""
        partial = [
            f"the first {source['items']} of {source['num_rows']} rows of {key}"
            for key, source in self.sources.items()
            if source["items"] < source["num_rows"]
        ]
        missing = [metric for metric in MUSE_METRICS if metric not in self.metrics]
        if missing:
            partial.append(f"without {', '.join(missing)}")
        for name, value, muse in (
            ("knowmem_max_new_tokens", self.knowmem_max_new_tokens, 32),
            ("verbmem_max_new_tokens", self.verbmem_max_new_tokens, 128),
        ):
            if value != muse and name.split("_")[0] in self.metrics:
                partial.append(f"{name}={value} (MUSE: {muse})")
        if self.rouge_stemmer and {"knowmem", "verbmem"} & set(self.metrics):
            partial.append("ROUGE-L with the Porter stemmer (MUSE scores without)")
        return {
            "benchmark": "MUSE",
            "metrics": list(self.metrics),
            "knowmem_max_new_tokens": self.knowmem_max_new_tokens,
            "verbmem_max_new_tokens": self.verbmem_max_new_tokens,
            "max_items": self.max_items,
            "min_k": self.min_k,
            "max_length": self.max_length,
            "rouge_stemmer": self.rouge_stemmer,
            "hf_unlearn_version": hf_unlearn_version(),
            "data": dict(self.sources),
            "partial": partial,
        }

    def write(self, output_dir: str | Path, summary: Mapping[str, Any]) -> Path:
        """Write `self.logs` (one JSON file per log) and `summary.json` to `output_dir`."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, items in self.logs.items():
            _dump(items, out / f"{name}.json")
        _dump(dict(summary), out / EVAL_SUMMARY_FILE)
        return out


def _dump(obj: Any, path: Path) -> None:
    write_json_atomic(path, obj, indent=2)
