"""Shared fixtures: a tokenizer trained on the bundled TOFU text and a tiny Llama that memorised the bundled subset
(the trainer factory and its CPU config are in helpers.py).

Nothing is downloaded: the models are built locally, as transformers' own tests do with tiny random models.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_unlearn import load_tofu
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the tiny models are small enough that thread hand-offs dominate a step on a
    shared CPU (use with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tofu():
    names = ["full", "forget01", "retain99", "forget01_perturbed", "retain_perturbed"]
    return {name: load_tofu(name, data_dir="bundled") for name in names}


@pytest.fixture(scope="session")
def tokenizer(tofu):
    full = tofu["full"]
    return train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=1024)


@pytest.fixture(scope="session")
def target_model_dir(tmp_path_factory, tofu, tokenizer):
    """A tiny Llama fine-tuned on all bundled questions (it 'knows' the forget authors), saved once per session."""
    full = tofu["full"]
    model = tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=0)
    finetune_on_qa(model, tokenizer, full["question"], full["answer"], epochs=12, progress=False)
    path = tmp_path_factory.mktemp("target_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def target_model(target_model_dir):
    return AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def small_forget(tofu):
    return tofu["forget01"].select(range(16))


@pytest.fixture(scope="session")
def small_retain(tofu):
    return tofu["retain99"].select(range(64))
