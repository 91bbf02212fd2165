"""Turning dataset rows into token ids: prompt tokens masked, answer tokens as labels.

Four input layouts are accepted (trl's conventions plus TOFU's):

- question/answer columns (names configurable), e.g. TOFU;
- `prompt`/`completion` columns, as strings or as conversational lists of messages;
- a conversational `messages` column whose last message is the assistant's answer;
- a `text` column (name configurable, trl's language-modeling layout), e.g. MUSE's news and books corpora or WMDP's:
  every token is trained on (see `hf_unlearn.data.prepare_dataset` for how long texts are chunked).

A tokenizer with a chat template formats the conversation with it; otherwise prompts read
`Question: {question}\\nAnswer:` and the answer follows after a space, ending with the EOS token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

PLAIN_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"

#: The date given to chat templates that print one (Llama 3.x: "Today Date: ..."), so that prompts do not depend on
#: the day a model is trained or evaluated; locuslab/open-unlearning pins the same date in its Llama-3 model configs.
DEFAULT_DATE_STRING = "10 Apr 2025"

Messages = list[dict[str, str]]

#: The prompt refusal answers are encoded after: only the answer's tokens are kept, to follow any forget prompt.
REFUSAL_PROBE_PROMPT: Messages = [{"role": "user", "content": "?"}]


@dataclass(frozen=True)
class ColumnLayout:
    """Which columns hold the prompt and the answer."""

    kind: str  # "qa", "prompt_completion", "messages" or "text"
    prompt_key: str
    answer_key: str | None

    @classmethod
    def detect(
        cls,
        columns: Sequence[str],
        question_key: str = "question",
        answer_key: str = "answer",
        dataset_name: str = "dataset",
        text_key: str = "text",
    ) -> ColumnLayout:
        cols = set(columns)
        if {question_key, answer_key} <= cols:
            return cls("qa", question_key, answer_key)
        if {"prompt", "completion"} <= cols:
            return cls("prompt_completion", "prompt", "completion")
        if "messages" in cols:
            return cls("messages", "messages", None)
        if text_key in cols:
            return cls("text", text_key, None)
        raise ValueError(
            f"The {dataset_name} has columns {sorted(cols)}, but one of these layouts is expected: "
            f"question/answer columns ({question_key!r}, {answer_key!r}; set `question_key`/`answer_key` in "
            "UnlearningConfig for other names), 'prompt' and 'completion', a conversational 'messages' column, or "
            f"raw text in a {text_key!r} column (`dataset_text_field`)."
        )

    @classmethod
    def of(cls, dataset: Any, args: Any, dataset_name: str = "dataset") -> ColumnLayout:
        """The layout of a dataset under an `UnlearningConfig`'s column names (`question_key`, `answer_key`,
        `dataset_text_field`)."""
        return cls.detect(
            dataset.column_names, args.question_key, args.answer_key, dataset_name, args.dataset_text_field
        )

    def split(self, row: Mapping[str, Any]) -> tuple[Messages | str, str]:
        """Return `(prompt, answer)`: the prompt as messages (or a raw string for string prompt/completion rows;
        an empty one for text rows, whose whole text is the answer). A value that is not text (None, NaN, a missing
        key, bytes, a list) or an empty answer raises an [`InvalidRowError`] naming the column."""
        if self.kind == "text":
            return "", text_value(row.get(self.prompt_key), self.prompt_key)
        if self.kind == "qa":
            question = text_value(row.get(self.prompt_key), self.prompt_key)
            return [{"role": "user", "content": question}], text_value(row.get(self.answer_key), self.answer_key)
        if self.kind == "prompt_completion":
            prompt, completion = row.get("prompt"), row.get("completion")
            if isinstance(prompt, str) and isinstance(completion, str):
                return text_value(prompt, "prompt"), text_value(completion, "completion")
            if not isinstance(prompt, (list, tuple)):
                raise InvalidRowError("prompt", f"is {_describe(prompt)}, not a string or a list of messages")
            messages = [_checked_message(m, "prompt") for m in prompt]
            return messages, _assistant_content(completion)
        messages = row.get("messages")
        if not isinstance(messages, (list, tuple)):
            raise InvalidRowError("messages", f"is {_describe(messages)}, not a list of messages")
        messages = [_checked_message(m, "messages") for m in messages]
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("A 'messages' row must end with the assistant's answer (role 'assistant').")
        return messages[:-1], messages[-1]["content"]


class InvalidRowError(ValueError):
    """A row whose prompt or answer is missing or not text (the caller adds which row and dataset)."""

    def __init__(self, column: str, problem: str):
        self.column = column
        super().__init__(f"column {column!r} {problem}")


def _describe(value: Any) -> str:
    if value is None:
        return "missing (None)"
    if isinstance(value, float) and math.isnan(value):
        return "missing (NaN)"
    return f"a {type(value).__name__} ({value!r:.40})"


def text_value(value: Any, column: str) -> str:
    """`value` if it is a non-blank string; otherwise an [`InvalidRowError`]: a missing value (None, NaN, a missing
    key or an empty CSV cell) must not be trained on as the text "None" or "nan", nor bytes or a list as its repr."""
    if not isinstance(value, str):
        raise InvalidRowError(column, f"is {_describe(value)}, not text")
    if not value.strip():
        raise InvalidRowError(column, "is empty")
    return value


def _checked_message(message: Any, column: str) -> dict[str, str]:
    if not isinstance(message, Mapping) or "role" not in message:
        raise InvalidRowError(column, f"holds {_describe(message)}, not a message with 'role' and 'content'")
    return {**message, "content": text_value(message.get("content"), f"{column}.content")}


def _assistant_content(completion: Any) -> str:
    if isinstance(completion, str):
        return text_value(completion, "completion")
    if not isinstance(completion, (list, tuple)) or len(completion) != 1 or completion[0].get("role") != "assistant":
        raise ValueError("A conversational 'completion' must be exactly one assistant message.")
    return _checked_message(completion[0], "completion")["content"]


class PromptEncoder:
    """Encodes prompts and answers the same way for training, evaluation and generation.

    Args:
        tokenizer: the model's tokenizer.
        use_chat_template: None uses the tokenizer's chat template when it has one.
        date_string: passed to the chat template as `date_string` (templates without a date ignore it); pinned by
            default so that training and evaluation on different days see the same prompts. None lets the template
            decide (Llama 3.x then prints today's date).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        use_chat_template: bool | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
    ):
        self.tokenizer = tokenizer
        self.date_string = date_string
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ValueError("use_chat_template=True but the tokenizer has no chat template.")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template

    def _ids(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def _template(self, messages: Messages, add_generation_prompt: bool) -> list[int]:
        template_kwargs = {} if self.date_string is None else {"date_string": self.date_string}
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **template_kwargs
        )
        return self._ids(text, add_special_tokens=False)

    def encode_prompt(self, prompt: Messages | str) -> list[int]:
        """Token ids of a prompt, ready for generation (ends where the answer starts)."""
        if isinstance(prompt, str):
            return self._ids(prompt, add_special_tokens=True)
        if self.use_chat_template:
            return self._template(prompt, add_generation_prompt=True)
        user_turns = [m for m in prompt if m.get("role") != "system"]
        if len(user_turns) != 1:
            raise ValueError(
                "Multi-turn conversations need a tokenizer with a chat template; this tokenizer has none "
                "(set `tokenizer.chat_template`)."
            )
        return self._ids(PLAIN_PROMPT_TEMPLATE.format(question=user_turns[0]["content"]), add_special_tokens=True)

    def encode_answer(self, prompt: Messages | str, answer: str, prompt_ids: list[int] | None = None) -> list[int]:
        """Token ids of the answer that follow `prompt` (with the end-of-turn / EOS tokens the model must learn)."""
        if isinstance(prompt, str) or not self.use_chat_template:
            ids = self._ids(answer if isinstance(prompt, str) else " " + answer, add_special_tokens=False)
            eos = self.tokenizer.eos_token_id
            return ids + ([eos] if eos is not None else [])
        prompt_ids = self.encode_prompt(prompt) if prompt_ids is None else prompt_ids
        full_ids = self._template([*prompt, {"role": "assistant", "content": answer}], add_generation_prompt=False)
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError(
                "The chat template renders the prompt differently with and without the answer, so the answer tokens "
                "cannot be located. Use a template whose generation prompt is a prefix of the full conversation."
            )
        return full_ids[len(prompt_ids) :]

    def encode_refusals(self, answers: Sequence[str]) -> list[list[int]]:
        """Token ids of refusal answers as they follow a forget prompt (a neutral probe prompt locates them)."""
        return [self.encode_answer(REFUSAL_PROBE_PROMPT, text) for text in answers]

    def encode(self, prompt: Messages | str, answer: str) -> tuple[list[int], list[int]]:
        prompt_ids = self.encode_prompt(prompt)
        return prompt_ids, self.encode_answer(prompt, answer, prompt_ids)
