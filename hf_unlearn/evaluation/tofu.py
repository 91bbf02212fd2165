"""TOFU evaluation of a model: batched teacher-forced scoring, batched greedy generation, per-question logs, summary.

The numbers are TOFU's (Maini et al. 2024, arXiv 2401.06121); the per-question logs follow the layout of
TOFU's published evaluation logs (see [`hf_unlearn.evaluation.logs`]), so that forget quality can be computed
against a retain model evaluated by us or by others.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..data.formatting import DEFAULT_DATE_STRING, PromptEncoder
from ..data.source import DataSource, data_source, rows_fingerprint
from ..data.tofu import load_tofu
from .logs import TOFU_SPLITS, load_retain_truth_ratio_stats, summarize_tofu_logs, write_tofu_logs
from .metrics import normalized_option_probability, rouge_l_recall
from .model_io import check_vocabulary, eos_token_ids, greedy_generate, model_device, resolve_pad_token_id
from .record import FULL_TOFU_MAX_NEW_TOKENS, RECORD_KEY, hf_unlearn_version, warn_if_incomparable
from .scoring import score_answers

__all__ = ["TOFUEvaluator", "tofu_split_config"]

# The splits whose "paraphrased" answer is the answer itself (TOFU scores the answer there).
_OPTION_SPLITS = ("real_authors", "world_facts")


def tofu_split_config(split: str, forget_split: str = "forget10") -> str:
    """The TOFU configuration an evaluation split reads (`"forget"` -> `"forget10_perturbed"`, ...)."""
    configs = {
        "retain": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
        "forget": f"{forget_split}_perturbed",
    }
    if split not in configs:
        raise ValueError(f"Unknown TOFU evaluation split {split!r}; expected one of {list(TOFU_SPLITS)}.")
    return configs[split]


def _required_fields(split: str) -> list[str]:
    fields = ["question", "answer", "perturbed_answer"]
    return fields if split in _OPTION_SPLITS else [*fields[:2], "paraphrased_answer", fields[2]]


@dataclass
class _Question:
    index: str
    prompt_ids: list[int]
    answer: str
    answer_ids: list[int]
    paraphrased_ids: list[int] | None  # None: the answer is the paraphrase (real authors / world facts)
    perturbed_ids: list[list[int]]


class TOFUEvaluator:
    """TOFU evaluation (probability, ROUGE-L recall, truth ratio on four splits; model utility; forget quality).

    Teacher-forced scoring flattens every (prompt, answer) pair of every split, the answer, the paraphrased answer
    and each perturbed answer of every question, sorts them by length and scores them `batch_size` sequences per
    forward pass. Greedy generation is batched too, with left padding built here (the tokenizer is never modified).
    Prompts are formatted by [`~hf_unlearn.data.PromptEncoder`], exactly as for training. Works with every model
    kind (full weights, peft, GRUN: scoring goes through [`~hf_unlearn.evaluation.scoring.score_answers`], which
    tells a GRUN model where each prompt ends) and anything with `forward(input_ids, attention_mask)` returning
    `logits` and a `generate` method.

    Args:
        model: the causal LM to evaluate (left in the train/eval mode it had).
        tokenizer: its tokenizer.
        forget_split: TOFU forget split name (`"forget01"`, `"forget05"`, `"forget10"`).
        data_dir: where TOFU is read from, as in [`~hf_unlearn.data.load_tofu`] (None: the Hub; `"bundled"`: the
            subset shipped with hf_unlearn; or a directory of the Hub's JSON Lines files).
        batch_size: sequences per teacher-forced forward pass.
        generation_batch_size: prompts per `generate` call (default: `batch_size`).
        max_new_tokens: greedy generation length (TOFU: 200).
        splits: which of `"retain"`, `"real_authors"`, `"world_facts"`, `"forget"` to evaluate. Model utility
            needs the first three, forget quality the last.
        max_questions: evaluate only the first N questions of each split; None evaluates all of them. TOFU's own
            script used `ds_size=300`, so its published logs hold the first 300 questions of forget10 and
            retain_perturbed: pass 300 to compare with them question for question.
        progress: show tqdm progress bars.
        use_chat_template: passed to [`~hf_unlearn.data.PromptEncoder`] (None: when the tokenizer has one).
        date_string: the date chat templates print (pinned by default, as in training: see `UnlearningConfig`).
        datasets: split -> dataset (or list of row dicts) to use instead of loading that split's configuration.

    After [`evaluate`], `self.logs` holds the per-question logs (split -> log).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        forget_split: str = "forget10",
        data_dir: str | Path | None = None,
        batch_size: int = 32,
        generation_batch_size: int | None = None,
        max_new_tokens: int = 200,
        splits: Sequence[str] = TOFU_SPLITS,
        max_questions: int | None = None,
        progress: bool = True,
        use_chat_template: bool | None = None,
        datasets: Mapping[str, Dataset | Sequence[Mapping[str, Any]]] | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
    ):
        if isinstance(splits, str):
            splits = [splits]
        unknown = [s for s in splits if s not in TOFU_SPLITS]
        if unknown or not splits:
            raise ValueError(f"Unknown TOFU split(s) {unknown or splits}; choose among {list(TOFU_SPLITS)}.")
        for name, value in (("batch_size", batch_size), ("generation_batch_size", generation_batch_size or 1)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if max_questions is not None and max_questions < 1:
            raise ValueError(f"max_questions must be >= 1 or None, got {max_questions}")
        self.model = model
        self.tokenizer = tokenizer
        self.forget_split = forget_split.removesuffix("_perturbed")
        self.batch_size = int(batch_size)
        self.generation_batch_size = int(generation_batch_size or batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.splits = [s for s in TOFU_SPLITS if s in splits]
        self.progress = progress
        self.logs: dict[str, dict[str, Any]] = {}

        self._check_vocabulary()
        self.pad_token_id = self._pad_token_id()
        self.encoder = PromptEncoder(tokenizer, use_chat_template, date_string)
        datasets = dict(datasets or {})
        self.questions: dict[str, list[_Question]] = {}
        #: Where each split's rows came from (the Hub's TOFU, the bundled subset, local files, rows given).
        self.sources: dict[str, DataSource] = {}
        self._fingerprints: dict[str, str] = {}
        self.max_questions = max_questions
        for split in self.splits:
            config = tofu_split_config(split, self.forget_split)
            data = datasets[split] if split in datasets else load_tofu(config, data_dir)
            self.sources[split] = data_source(data)
            self.questions[split] = self._encode_split(split, config, data, max_questions)

    # ------------------------------------------------------------------------------------------------------------
    # checks and data
    # ------------------------------------------------------------------------------------------------------------

    @property
    def record(self) -> dict[str, Any]:
        """How this evaluation is made: its settings, data and why it is partial, if it is (see
        [`hf_unlearn.evaluation.record`]); written into `summary.json` and the aggregated log."""
        data, partial = {}, []
        for split in self.splits:
            questions = self.questions[split]
            data[split] = {
                **self.sources[split].to_dict(),
                "questions": len(questions),
                "questions_fingerprint": self._questions_fingerprint(split),
            }
            if self.sources[split].num_rows is not None and len(questions) < self.sources[split].num_rows:
                partial.append(f"the first {len(questions)} of {self.sources[split].num_rows} {split} questions")
        if self.max_new_tokens < FULL_TOFU_MAX_NEW_TOKENS:
            partial.append(
                f"generations of at most {self.max_new_tokens} new tokens (TOFU generates {FULL_TOFU_MAX_NEW_TOKENS})"
            )
        missing = [split for split in TOFU_SPLITS if split not in self.splits]
        if missing:
            partial.append(f"without the {', '.join(missing)} split(s)")
        return {
            "benchmark": "TOFU",
            "forget_split": self.forget_split,
            "splits": list(self.splits),
            "max_new_tokens": self.max_new_tokens,
            "max_questions": self.max_questions,
            "use_chat_template": self.encoder.use_chat_template,
            "date_string": self.encoder.date_string,
            "hf_unlearn_version": hf_unlearn_version(),
            "data": data,
            "partial": partial,
        }

    def _questions_fingerprint(self, split: str) -> str:
        """[`rows_fingerprint`] of a split's encoded questions (prompt and answer ids), hashed once: the callback
        asks for the record at every evaluation."""
        if split not in self._fingerprints:
            questions = self.questions[split]
            self._fingerprints[split] = rows_fingerprint(
                {"prompt": q.prompt_ids, "answer": q.answer_ids} for q in questions
            )
        return self._fingerprints[split]

    def _check_vocabulary(self) -> None:
        check_vocabulary(self.model, self.tokenizer)

    def _pad_token_id(self) -> int:
        return resolve_pad_token_id(self.tokenizer, "TOFUEvaluator", stacklevel=5)

    def _encode_split(
        self, split: str, config: str, data: Dataset | Sequence[Mapping[str, Any]], max_questions: int | None
    ) -> list[_Question]:
        rows = list(data) if not isinstance(data, Dataset) else data
        columns = set(data.column_names) if isinstance(data, Dataset) else set().union(*(dict(r) for r in rows))
        required = _required_fields(split)
        if len(rows) == 0:
            raise ValueError(f"The TOFU {split} split ({config}) is empty: there is no question to evaluate.")
        missing = [f for f in required if f not in columns]
        if missing:
            raise ValueError(
                f"The TOFU {split} split ({config}) lacks the field(s) {missing}: expected {required}, "
                f"found {sorted(columns)}."
            )
        n = len(rows) if max_questions is None else min(max_questions, len(rows))
        questions = []
        for i in range(n):
            row = rows[i]
            where = f"Row {i} of the TOFU {split} split ({config})"
            for field in required:
                if row.get(field) is None:
                    raise ValueError(f"{where} has no value for {field!r}.")
            perturbed = row["perturbed_answer"]
            perturbed = [perturbed] if isinstance(perturbed, str) else list(perturbed)
            if not perturbed:
                raise ValueError(f"{where} has an empty 'perturbed_answer' list; the truth ratio needs at least one.")
            prompt = [{"role": "user", "content": str(row["question"])}]
            prompt_ids = self.encoder.encode_prompt(prompt)
            answer = str(row["answer"])

            def encode(text: str, prompt=prompt, prompt_ids=prompt_ids) -> list[int]:
                return self.encoder.encode_answer(prompt, str(text), prompt_ids)

            questions.append(
                _Question(
                    index=str(i),
                    prompt_ids=prompt_ids,
                    answer=answer,
                    answer_ids=encode(answer),
                    paraphrased_ids=None if split in _OPTION_SPLITS else encode(row["paraphrased_answer"]),
                    perturbed_ids=[encode(p) for p in perturbed],
                )
            )
        return questions

    # ------------------------------------------------------------------------------------------------------------
    # model calls
    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(
        self, pairs: Sequence[tuple[list[int], list[int]]], desc: str = "scoring"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Teacher-forced sum of answer-token NLLs and answer-token counts of `(prompt_ids, answer_ids)` pairs, in
        the order of `pairs`, by the one scoring path ([`~hf_unlearn.evaluation.scoring.score_answers`]: batched by
        length, and a GRUN model is told where each prompt ends)."""
        scores = score_answers(
            self.model,
            pairs,
            pad_token_id=self.pad_token_id,
            batch_size=self.batch_size,
            progress=self.progress,
            desc=desc,
        )
        return scores.sum_nll, scores.num_tokens

    def generate(self, prompts: Sequence[list[int]], desc: str = "generating") -> list[str]:
        """Greedy generations (decoded, special tokens skipped, stripped) for prompt token ids, batched with left
        padding, in the order of `prompts` (see [`~hf_unlearn.evaluation.model_io.greedy_generate`])."""
        texts = greedy_generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.generation_batch_size,
            pad_token_id=self.pad_token_id,
            eos_token_id=eos_token_ids(self.model, self.tokenizer),
            progress=self.progress,
            desc=desc,
        )
        return [text.strip() for text in texts]

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    # ------------------------------------------------------------------------------------------------------------
    # evaluation
    # ------------------------------------------------------------------------------------------------------------

    def evaluate(self, output_dir: str | Path | None = None, retain_logs: str | Path | None = None) -> dict[str, Any]:
        """Evaluate the model on every split and return the TOFU summary.

        Args:
            output_dir: where to write the per-question logs (TOFU's layout), `eval_log_aggregated.json` and
                `summary.json`; None writes nothing.
            retain_logs: the retain model's logs (a directory of TOFU logs holding `eval_log_forget.json`, ours or
                published, TOFU's `eval_log_aggregated.json` or open-unlearning's `TOFU_EVAL.json`), for forget
                quality. None leaves `forget_quality` None.

        Returns the dict of [`~hf_unlearn.evaluation.logs.summarize_tofu_logs`].
        """
        # Read the retain logs first: a bad path should fail before minutes of evaluation.
        retain_stats = load_retain_truth_ratio_stats(retain_logs) if retain_logs is not None else None
        if retain_stats is not None and "forget" not in self.splits:
            raise ValueError("Forget quality (retain_logs given) needs the 'forget' split among `splits`.")
        record = self.record
        if retain_logs is not None:
            warn_if_incomparable(record, retain_logs)
        self.logs = self.compute_logs()
        summary = summarize_tofu_logs(self.logs, retain_stats, split=self.forget_split)
        summary[RECORD_KEY] = record
        if output_dir is not None:
            write_tofu_logs(self.logs, output_dir, summary)
        return summary

    def compute_logs(self, shard: tuple[int, int] = (0, 1)) -> dict[str, dict[str, Any]]:
        """The per-question logs (split -> log, TOFU's layout) of one shard of the questions, without a summary.

        Args:
            shard: `(index, count)`: evaluate questions `index, index + count, index + 2 * count, ...` of each
                split (their log keys stay the original question indices). `(0, 1)`, the default, evaluates them
                all. Data-parallel evaluation runs shard `(rank, world_size)` on every rank and merges the logs
                ([`~hf_unlearn.evaluation.callback.merge_tofu_logs`]); a shard may be empty.
        """
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
        questions = {split: self.questions[split][index::count] for split in self.splits}
        was_training = self.model.training
        self.model.eval()
        try:
            # Every split's (prompt, answer) pairs in one length-sorted scoring pass, every prompt in one generation
            # pass: small splits share batches.
            pairs: list[tuple[list[int], list[int]]] = []
            slots = {split: self._add_pairs(questions[split], pairs) for split in self.splits}
            sums, counts = self.score(pairs, desc="TOFU: scoring")
            means = sums / np.maximum(counts, 1)
            generations = self.generate(
                [q.prompt_ids for split in self.splits for q in questions[split]], desc="TOFU: generating"
            )
        finally:
            self.model.train(was_training)
        logs = {}
        for split in self.splits:
            n = len(questions[split])
            logs[split] = self._split_log(split, questions[split], slots[split], sums, counts, means, generations[:n])
            generations = generations[n:]
        return logs

    @staticmethod
    def _add_pairs(
        questions: list[_Question], pairs: list[tuple[list[int], list[int]]]
    ) -> list[tuple[int, int, list[int]]]:
        """Append the questions' (prompt, answer) pairs; return per question (answer, paraphrase, perturbed) slots."""
        slots = []
        for q in questions:
            answer_slot = len(pairs)
            pairs.append((q.prompt_ids, q.answer_ids))
            para_slot = answer_slot  # real authors / world facts: the answer is the paraphrase
            if q.paraphrased_ids is not None:
                para_slot = len(pairs)
                pairs.append((q.prompt_ids, q.paraphrased_ids))
            pert_slots = list(range(len(pairs), len(pairs) + len(q.perturbed_ids)))
            pairs.extend((q.prompt_ids, p) for p in q.perturbed_ids)
            slots.append((answer_slot, para_slot, pert_slots))
        return slots

    def _split_log(
        self,
        split: str,
        questions: list[_Question],
        slots: list[tuple[int, int, list[int]]],
        sums: np.ndarray,
        counts: np.ndarray,
        means: np.ndarray,
        generations: list[str],
    ) -> dict[str, Any]:
        empty = sum(1 for g in generations if not g)
        if empty:
            warnings.warn(
                f"{empty} of {len(generations)} generations on the TOFU {split} split are empty; their ROUGE-L recall "
                "is 0.",
                stacklevel=3,
            )
        # An empty shard (data-parallel evaluation with more ranks than questions) gives an empty log.
        rouge = rouge_l_recall(generations, [q.answer for q in questions]) if questions else []

        log: dict[str, dict[str, Any]] = {
            name: {}
            for name in (
                "avg_gt_loss", "gt_loss", "num_token_gt", "generated_text", "rougeL_recall", "average_perturb_loss",
                "avg_paraphrased_loss", "truth_ratio", "paraphrased_loss", "perturb_loss", "num_token_paraphrased",
                "num_token_perturb",
            )
        }  # fmt: skip
        if split in _OPTION_SPLITS:
            log["normalized_gt_loss"] = {}
        for q, (a, p, perts), gen, r in zip(questions, slots, generations, rouge):
            i = q.index
            pert_means = [float(means[s]) for s in perts]
            log["avg_gt_loss"][i] = float(means[a])
            log["gt_loss"][i] = float(sums[a])
            log["num_token_gt"][i] = int(counts[a])
            log["generated_text"][i] = [self.tokenizer.decode(q.prompt_ids, skip_special_tokens=True), gen, q.answer]
            log["rougeL_recall"][i] = float(r)
            log["average_perturb_loss"][i] = pert_means
            log["avg_paraphrased_loss"][i] = float(means[p])
            # TOFU logs P_perturbed / P_paraphrased (the inverse of the truth-ratio statistic).
            log["truth_ratio"][i] = float(np.exp(float(means[p]) - np.mean(pert_means)))
            log["paraphrased_loss"][i] = float(sums[p])
            log["perturb_loss"][i] = [float(sums[s]) for s in perts]
            log["num_token_paraphrased"][i] = int(counts[p])
            log["num_token_perturb"][i] = [int(counts[s]) for s in perts]
            if split in _OPTION_SPLITS:
                log["normalized_gt_loss"][i] = -float(np.log(normalized_option_probability(means[a], pert_means)))
        return log
