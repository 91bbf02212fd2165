"""Pushing unlearned models to the Hub with a model card and loading them back, against a local Hub stand-in.

No test reaches the real Hub: `hub_server.HubStandIn` serves the Hub's endpoints on 127.0.0.1 and huggingface_hub's
endpoint is pointed at it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import sys
import traceback
import types
from pathlib import Path

import huggingface_hub
import pytest
import torch
import transformers
from helpers import make_trainer
from hub_server import HubStandIn
from huggingface_hub import ModelCard, constants
from peft import LoraConfig
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from hf_unlearn.cli import main as cli_main
from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.hub import (
    HubAuthenticationError,
    HubNetworkError,
    HubServerError,
    build_model_card,
    files_to_push,
    load_unlearned,
    push_unlearned,
    resolve_model_folder,
)
from hf_unlearn.hub.eval_summary import MUSE_SUMMARY_METRICS

FAKE_TOKEN = "hf_SECRETtoken123"
USER = "stand-in-user"

# Shaped like the TOFU evaluator's summary.json (hf_unlearn.evaluation.logs.summarize_tofu_logs).
TOFU_SUMMARY = {
    "retain_probability": 0.81,
    "retain_rougeL_recall": 0.74,
    "retain_truth_ratio": 0.47,
    "real_authors_probability": 0.42,
    "real_authors_rougeL_recall": 0.88,
    "real_authors_truth_ratio": 0.55,
    "world_facts_probability": 0.44,
    "world_facts_rougeL_recall": 0.85,
    "world_facts_truth_ratio": 0.58,
    "model_utility": 0.5712,
    "forget_probability": 0.12,
    "forget_rougeL_recall": 0.3141,
    "forget_truth_ratio": 0.66,
    "forget_quality": 1.2345678e-09,  # a p-value: often tiny
    "split": "forget01",
    "num_questions": {"retain": 16, "forget": 16},
    # a complete evaluation on the Hub's TOFU (hf_unlearn.evaluation.record): its results go into model-index
    "evaluation": {
        "partial": [],
        "data": {
            s: {"kind": "hub", "dataset": "locuslab/TOFU"} for s in ("retain", "real_authors", "world_facts", "forget")
        },
    },
}


# ----------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    """The Hub stand-in, with huggingface_hub pointed at it, a fake token in HF_TOKEN and a fresh cache."""
    server = HubStandIn(tokens={FAKE_TOKEN: USER}).serve()
    home = tmp_path_factory.mktemp("hf_home")
    remote_lookups = []
    resolve = socket.getaddrinfo

    def local_only_getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            remote_lookups.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"the Hub tests never leave 127.0.0.1 (asked for {host})")
        return resolve(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", local_only_getaddrinfo)
        mp.setenv("HF_ENDPOINT", server.url)
        mp.setenv("HF_TOKEN", FAKE_TOKEN)
        mp.setenv("HF_HOME", str(home))
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        mp.delenv("HF_OIDC_RESOURCE", raising=False)
        mp.setattr(constants, "ENDPOINT", server.url)
        mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        mp.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        mp.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
        # HfApi objects made at import time keep the endpoint of that time: huggingface_hub's module-level
        # functions (peft calls `file_exists`) and transformers' shared instance.
        mp.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)
        mp.setattr(transformers.utils.hub, "_hf_api", None)
        yield server
    server.shutdown()
    assert not remote_lookups, f"a Hub test tried to reach {sorted(set(remote_lookups))}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama (one layer) and the shared test tokenizer, saved once: round trips need no training."""
    path = tmp_path_factory.mktemp("tiny_model")
    tiny_llama(len(tokenizer), num_layers=1, hidden_size=32, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def hub(hub_server):
    """The module's Hub stand-in, with no injected failure and an empty request log."""
    hub_server.fail.clear()
    hub_server.requests.clear()
    hub_server.bodies.clear()
    yield hub_server
    hub_server.fail.clear()


@pytest.fixture
def captured_logs():
    """Every log record (any level) of hf_unlearn, huggingface_hub, transformers and the HTTP client."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("", "hf_unlearn", "huggingface_hub", "transformers", "httpx2")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield records
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _log_text(records) -> str:
    return "\n".join(record.getMessage() for record in records)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to check that a folder was left exactly as it was)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _full_model_folder(model_dir: Path, folder: Path) -> Path:
    """The target model saved as full weights, with unlearning.json, an eval summary and files never to publish."""
    shutil.copytree(model_dir, folder)
    state = {"forget_loss": "simnpo", "forget_loss_kwargs": {"beta": 4.5}, "retain_loss": "nll"}
    state |= {"retain_loss_kwargs": None, "gamma": 0.125, "alpha": 1.0, "learning_rate": 1e-5, "seed": 0}
    state |= {"peft": False, "rectification": "gru", "gru_ema": 0.9, "gru_retain_weight": 0.0}
    state |= {"gru_projected": "objective"}
    state |= {"forget_data": {"kind": "hub", "dataset": "locuslab/TOFU", "config": "forget01", "num_rows": 40}}
    (folder / "unlearning.json").write_text(json.dumps(state))
    (folder / "eval").mkdir()
    (folder / "eval" / "summary.json").write_text(json.dumps(TOFU_SUMMARY))
    (folder / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (folder / "README.md").write_text("local notes, not the card\n")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"\x80\x04pickle")
    (folder / "checkpoint-2" / "model.safetensors").write_bytes(b"old")
    (folder / "helper.py").write_text("raise SystemExit('remote code must never run')\n")
    return folder


def _logits(model, tokenizer, text="Who is the author of the book?") -> torch.Tensor:
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def _card(hub: HubStandIn, repo_id: str) -> ModelCard:
    return ModelCard(hub.files(repo_id)["README.md"].decode())


# ----------------------------------------------------------------------------------------------------------------
# full weights
# ----------------------------------------------------------------------------------------------------------------


def test_push_full_weights_and_pull_back(hub, model_dir, tokenizer, tmp_path):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    before = _snapshot(folder)

    commit = push_unlearned(folder, "tiny-unlearned", base_model="stand-in-org/tiny-llama")

    repo_id = f"{USER}/tiny-unlearned"
    assert commit.repo_url.repo_id == repo_id
    assert _snapshot(folder) == before  # the local folder is never written to
    published = hub.files(repo_id)
    assert "model.safetensors" in published and "config.json" in published and "unlearning.json" in published
    assert "eval/summary.json" in published and "tokenizer.json" in published
    assert published["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert not [name for name in published if name.endswith((".bin", ".pt"))]  # never a pickle
    assert not [name for name in published if name.startswith("checkpoint-")]
    # the endpoints of a push: create the repo, validate the card's metadata, upload modes, one commit
    called = [name for name in hub.endpoints_called() if name != "agent_harnesses"]  # fetched once per process
    assert called == ["create_repo", "validate_yaml", "preupload", "commit"]
    assert b'"key": "lfsFile"' not in b"".join(hub.bodies)  # regular (inline base64) uploads only

    card = _card(hub, repo_id)
    assert published["README.md"].decode() != "local notes, not the card\n"
    assert card.data.base_model == "stand-in-org/tiny-llama"
    assert card.data.library_name == "transformers"
    assert {"hf-unlearn", "unlearning", "simnpo", "gru"} <= set(card.data.tags)
    assert card.data.datasets == ["locuslab/TOFU"]  # the forget data unlearning.json records
    assert "| Forget loss | `simnpo` (beta=4.5) |" in card.text
    assert "| gamma (forget weight) | 0.125 |" in card.text
    assert (
        "GRU (projects the whole objective's gradient against the retain NLL's moving-average gradient; ema=0.9, "
        "retain weight=0)" in card.text
    )
    for arxiv_id in ("2410.07163", "2503.09117", "2401.06121"):  # SimNPO, GRU, TOFU (the evaluation)
        assert f"arxiv.org/abs/{arxiv_id}" in card.text
    assert "2404.05868" not in card.text  # NPO was not used
    assert f'load_unlearned("{repo_id}")' in card.text
    # evaluation results: one model-index entry per metric that has a value
    results = {result.metric_type: result for result in card.data.eval_results}
    assert results["forget_quality"].metric_value == pytest.approx(1.23457e-09, rel=1e-9)
    assert results["model_utility"].metric_value == pytest.approx(0.5712)
    assert results["forget_rougeL_recall"].metric_value == pytest.approx(0.3141)
    assert results["forget_quality"].dataset_type == "locuslab/TOFU"
    assert results["forget_quality"].dataset_config == "forget01"
    assert "split" not in results and "num_questions" not in results

    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model, pulled_tokenizer = load_unlearned(repo_id)
    torch.testing.assert_close(_logits(model, pulled_tokenizer), _logits(reference, tokenizer), rtol=0, atol=0)
    assert pulled_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert "resolve" in hub.endpoints_called() and "model_info" in hub.endpoints_called()
    downloaded = Path(constants.HF_HUB_CACHE)
    assert not list(downloaded.rglob("helper.py"))  # code is never downloaded


def test_push_again_uploads_only_changed_files(hub, model_dir, tmp_path):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    first = push_unlearned(folder, f"{USER}/twice")
    hub.bodies.clear()
    (folder / "unlearning.json").write_text(json.dumps({"forget_loss": "npo", "retain_loss": "nll"}))

    push_unlearned(folder, f"{USER}/twice")

    commit_body = hub.bodies[-1].decode()
    assert '"path": "unlearning.json"' in commit_body and '"path": "README.md"' in commit_body
    assert '"path": "model.safetensors"' not in commit_body  # unchanged on the Hub: skipped
    assert len(hub.repos[f"{USER}/twice"].commits) == 2
    assert "| Forget loss | `npo` |" in _card(hub, f"{USER}/twice").text
    # an older revision can still be pulled
    older = resolve_model_folder(f"{USER}/twice", revision=first.oid)
    assert json.loads((older / "unlearning.json").read_text())["forget_loss"] == "simnpo"
    assert json.loads((resolve_model_folder(f"{USER}/twice") / "unlearning.json").read_text())["forget_loss"] == "npo"


def test_files_to_push_never_includes_pickles_or_checkpoints(model_dir, tmp_path):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    names = files_to_push(folder)
    assert "model.safetensors" in names and "eval/summary.json" in names
    assert "README.md" not in names and "training_args.bin" not in names
    assert not [n for n in names if n.startswith("checkpoint-")]


def test_weights_only_in_pickles_are_refused(hub, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="no safetensors weights.*pytorch_model.bin"):
        push_unlearned(folder, f"{USER}/pickled")
    assert hub.requests == []


# ----------------------------------------------------------------------------------------------------------------
# peft adapter through trainer.push_to_hub, base model from the (stand-in) Hub
# ----------------------------------------------------------------------------------------------------------------


def test_trainer_push_to_hub_lora_adapter_round_trip(hub, model_dir, tokenizer, small_forget, small_retain, tmp_path):
    base_repo = f"{USER}/tiny-target"
    push_unlearned(_full_model_folder(model_dir, tmp_path / "base"), base_repo)

    output_dir = tmp_path / "npo-lora"
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = make_trainer(
        base_repo,  # downloaded from the stand-in: the adapter records the Hub id as its base model
        tokenizer,
        small_forget,
        small_retain,
        output_dir,
        peft_config=peft_config,
        forget_loss="npo",
        forget_loss_kwargs={"beta": 0.1},
        max_steps=2,
        hub_model_id="npo-lora",
    )
    trainer.train()
    commit = trainer.push_to_hub(forget_data="locuslab/TOFU:forget01")

    repo_id = f"{USER}/npo-lora"
    assert commit.repo_url.repo_id == repo_id and trainer.hub_model_id == repo_id
    published = hub.files(repo_id)
    assert {"adapter_model.safetensors", "adapter_config.json", "unlearning.json", "README.md"} <= set(published)
    assert "training_args.bin" in {p.name for p in output_dir.iterdir()}
    assert not [name for name in published if name.endswith((".bin", ".pt"))]
    card = _card(hub, repo_id)
    assert card.data.base_model == base_repo
    assert card.data.library_name == "peft"
    assert card.data.datasets == ["locuslab/TOFU"]
    assert "| Forget loss | `npo` (beta=0.1) |" in card.text and "| Retain loss | `nll` |" in card.text
    assert "arxiv.org/abs/2404.05868" in card.text  # NPO
    assert card.data.eval_results is None  # no evaluation ran

    model, pulled_tokenizer = load_unlearned(repo_id)  # one call: base model from the Hub, adapter on top
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    expected = _logits(trained, tokenizer)
    torch.testing.assert_close(_logits(model, pulled_tokenizer), expected, rtol=0, atol=0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert not torch.allclose(_logits(base, tokenizer), expected)  # the adapter changes the model


# GA + GRU on the tiny full model (given by its path), saving (and pushing, per `hub_strategy`) after every step.
PUSHING = dict(
    forget_loss="ga", rectification="gru", max_steps=2, save_strategy="steps", save_steps=1, push_to_hub=True
)


def test_every_save_pushes_the_checkpoint_model_without_training_state(
    hub, model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    output_dir = tmp_path / "ga-every-save"
    trainer = make_trainer(
        str(model_dir),
        tokenizer,
        small_forget,
        small_retain,
        output_dir,
        **(PUSHING | dict(hub_model_id="ga-every-save", max_steps=4)),
    )
    trainer.train()  # waits for the pushes at its end

    repo = hub.repos[f"{USER}/ga-every-save"]
    # A save made while a push runs waits, replacing any older waiting one: the first and the newest always go up.
    steps = [int(summary.removeprefix("Training in progress, step ")) for summary in repo.summaries]
    assert steps[0] == 1 and steps[-1] == 4 and steps == sorted(set(steps)), repo.summaries
    published = hub.files(repo.repo_id)
    assert {"model.safetensors", "config.json", "unlearning.json", "README.md"} <= set(published)
    # What only resuming needs, and pickles, stay local (they are in the checkpoint).
    assert {"trainer_state.json", "gru_state.safetensors", "training_args.bin"} <= {
        p.name for p in (output_dir / "checkpoint-4").iterdir()
    }
    assert not [n for n in published if n.endswith((".bin", ".pt", ".pth")) or "state" in n], sorted(published)
    newest = AutoModelForCausalLM.from_pretrained(output_dir / "checkpoint-4").state_dict()
    pulled, _ = load_unlearned(repo.repo_id)
    assert all(torch.equal(pulled.state_dict()[k], v) for k, v in newest.items())
    assert "| Forget loss | `ga` |" in _card(hub, repo.repo_id).text
    assert not list(output_dir.glob(".hub-push-*"))  # staging folders are removed


def test_hub_strategy_checkpoint_uploads_what_resuming_needs(
    hub, model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    trainer = make_trainer(
        str(model_dir),
        tokenizer,
        small_forget,
        small_retain,
        tmp_path / "ga-ckpt",
        **(PUSHING | dict(hub_model_id="ga-ckpt", hub_strategy="checkpoint")),
    )
    trainer.train()
    published = hub.files(f"{USER}/ga-ckpt")
    checkpoint = {n.split("/", 1)[1]: content for n, content in published.items() if n.startswith("last-checkpoint/")}
    # GRU's state is written after the Trainer's own files: the push waits for it.
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "gru_state.safetensors"} <= set(checkpoint)
    assert json.loads(checkpoint["trainer_state.json"])["global_step"] == 2
    assert not [n for n in published if "/" not in n and n.endswith((".bin", ".pt", ".pth"))]

    # Resume from the pulled checkpoint, as from a local one.
    pulled = tmp_path / "pulled"
    for name, content in checkpoint.items():
        (pulled / name).parent.mkdir(parents=True, exist_ok=True)
        (pulled / name).write_bytes(content)
    resumed = make_trainer(
        str(model_dir),
        tokenizer,
        small_forget,
        small_retain,
        tmp_path / "resumed",
        **(PUSHING | dict(max_steps=3, push_to_hub=False)),
    )
    resumed.train(resume_from_checkpoint=str(pulled))
    losses = [entry for entry in resumed.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in losses] == [1, 2, 3]
    assert losses[:2] == [entry for entry in trainer.state.log_history if "loss" in entry]  # steps 1-2 restored


def test_a_failed_push_during_training_is_logged_and_training_goes_on(
    hub, model_dir, tokenizer, small_forget, small_retain, tmp_path, captured_logs
):
    output_dir = tmp_path / "ga-fails"
    trainer = make_trainer(
        str(model_dir), tokenizer, small_forget, small_retain, output_dir, **(PUSHING | dict(hub_model_id="ga-fails"))
    )
    hub.fail["commit"] = 500
    trainer.train()
    assert trainer.state.global_step == 2
    assert (output_dir / "checkpoint-2" / "model.safetensors").is_file()
    warnings = [r.getMessage() for r in captured_logs if r.levelno >= logging.WARNING and "Pushing" in r.getMessage()]
    assert warnings and all("HTTP 500" in w for w in warnings), warnings
    assert FAKE_TOKEN not in _log_text(captured_logs)
    assert hub.files(f"{USER}/ga-fails") == {}


@pytest.mark.slow  # the failing push waits out huggingface_hub's retries on HTTP 500 (about 23 s)
def test_push_to_hub_without_blocking_returns_a_future(
    hub, model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    output_dir = tmp_path / "ga-future"
    trainer = make_trainer(
        str(model_dir),
        tokenizer,
        small_forget,
        small_retain,
        output_dir,
        **(PUSHING | dict(push_to_hub=False, save_strategy="no")),
    )
    trainer.train()
    future = trainer.push_to_hub(blocking=False)
    expected = (output_dir / "model.safetensors").read_bytes()
    (output_dir / "model.safetensors").write_bytes(b"changed after the call")  # the call froze the files
    commit = future.result(timeout=120)
    assert commit.repo_url.repo_id == f"{USER}/ga-future"
    assert hub.files(f"{USER}/ga-future")["model.safetensors"] == expected

    hub.fail["preupload"] = 500
    with pytest.raises(HubServerError, match="HTTP 500"):
        trainer.push_to_hub(blocking=False).result(timeout=120)
    assert not list(output_dir.glob(".hub-push-*"))


def test_push_to_hub_at_construction_without_a_token_is_a_clear_error(
    hub, model_dir, tokenizer, small_forget, small_retain, tmp_path, monkeypatch
):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthenticationError, match="create the Hub repo ga-no-token"):
        make_trainer(
            str(model_dir),
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / "out",
            **(PUSHING | dict(hub_model_id="ga-no-token")),
        )


def test_trainer_create_model_card_writes_our_card(model_dir, tokenizer, small_forget, small_retain, tmp_path):
    output_dir = tmp_path / "out"
    trainer = make_trainer(
        str(model_dir),
        tokenizer,
        small_forget,
        small_retain,
        output_dir,
        forget_loss="ga",
        max_steps=1,
        rectification="gru",
    )
    trainer.create_model_card(model_name="tiny-ga", tags=["demo"])
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.model_name == "tiny-ga" and "demo" in card.data.tags
    assert card.data.base_model is None  # a local path never goes into the metadata
    assert "| Forget loss | `ga` |" in card.text and "arxiv.org/abs/2503.09117" in card.text
    assert not list(output_dir.glob(".README.*"))  # no temporary file left behind


def test_grun_trainer_card_describes_grun(model_dir, tokenizer, small_forget, small_retain, tmp_path):
    pytest.importorskip("pyreft")
    from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model

    grun = get_grun_model(AutoModelForCausalLM.from_pretrained(model_dir), GRUNConfig(layers=[0], forget_loss="npo"))
    output_dir = tmp_path / "grun"
    trainer = make_trainer(
        grun, tokenizer, small_forget, small_retain, output_dir, trainer_cls=GRUNTrainer, max_steps=1
    )
    trainer.create_model_card(model_name="tiny-grun")
    card = ModelCard.load(output_dir / "README.md")
    assert "grun" in card.data.tags and "GRUN modules" in card.text
    assert "arxiv.org/abs/2502.17823" in card.text and "arxiv.org/abs/2404.05868" in card.text  # GRUN, NPO


# ----------------------------------------------------------------------------------------------------------------
# GRUN modules
# ----------------------------------------------------------------------------------------------------------------


def test_grun_modules_card_and_loader_dispatch(hub, model_dir, tokenizer, tmp_path, monkeypatch):
    folder = tmp_path / "grun"
    folder.mkdir()
    request = {"layers": [-1], "resolved_layers": [0], "rank": 4, "gate": "linear", "forget_loss": "npo"}
    request |= {"forget_loss_kwargs": {"beta": 0.1}, "gate_weight": 10.0, "retain_weight": None, "request_id": "r1"}
    grun_config = {"base_model_name_or_path": str(model_dir), "format_version": 1, "requests": [request]}
    (folder / "grun_config.json").write_text(json.dumps(grun_config))
    save_file({"gate.weight": torch.ones(2, 2)}, folder / "grun_modules.safetensors")
    state = {"forget_loss": "ga", "retain_loss": "nll", "learning_rate": 4e-3, "method": "grun", "grun": [request]}
    (folder / "unlearning.json").write_text(json.dumps(state))
    push_unlearned(folder, f"{USER}/grun")
    card = _card(hub, f"{USER}/grun")
    assert "grun" in card.data.tags and "arxiv.org/abs/2502.17823" in card.text
    assert "| GRUN | layers=[0], rank=4, gate=linear, forget loss `npo` (beta=0.1), gate weight=10 |" in card.text
    assert "| Forget loss |" not in card.text  # the trainer's loss settings do not apply to GRUN's requests
    assert "npo" in card.data.tags and "arxiv.org/abs/2404.05868" in card.text
    assert 'base_model="<the base model' in card.text  # the recorded base is a local path

    calls = []

    def load_grun_model(base_model, local_dir):
        calls.append((base_model, Path(local_dir)))
        return base_model

    monkeypatch.setitem(sys.modules, "hf_unlearn.grun", types.SimpleNamespace(load_grun_model=load_grun_model))
    model, pulled_tokenizer = load_unlearned(f"{USER}/grun")
    ((base, local_dir),) = calls
    assert model is base and isinstance(base, torch.nn.Module)
    assert json.loads((local_dir / "grun_config.json").read_text()) == grun_config
    assert (local_dir / "grun_modules.safetensors").is_file()
    assert pulled_tokenizer.get_vocab() == tokenizer.get_vocab()  # no tokenizer in the repo: the base model's


def test_grun_modules_round_trip(hub, model_dir, tokenizer, tmp_path):
    pytest.importorskip("pyreft", reason="GRUN needs pyreft (pip install 'hf-unlearn[grun]')")
    grun = pytest.importorskip("hf_unlearn.grun")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    grun_model = grun.get_grun_model(base, grun.GRUNConfig(layers=[0], rank=2, forget_loss="npo")).eval()
    folder = tmp_path / "grun"
    grun.save_grun_model(grun_model, folder)
    expected = _logits(grun_model, tokenizer)

    push_unlearned(folder, f"{USER}/grun-real")
    assert set(hub.files(f"{USER}/grun-real")) == {"grun_config.json", "grun_interventions.safetensors", "README.md"}
    model, pulled_tokenizer = load_unlearned(f"{USER}/grun-real")

    assert isinstance(model, grun.GRUNModel)
    torch.testing.assert_close(_logits(model, pulled_tokenizer), expected, rtol=0, atol=0)
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert not torch.allclose(_logits(plain, tokenizer), expected)  # the GRUN edit is attached


# ----------------------------------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------------------------------


def test_cli_push_end_to_end(hub, model_dir, tmp_path, capsys):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    shutil.rmtree(folder / "eval")
    summary_file = tmp_path / "summary.json"
    summary_file.write_text(json.dumps(TOFU_SUMMARY | {"forget_quality": 0.5, "split": "forget05"}))

    status = cli_main(
        [
            "push",
            str(folder),
            "stand-in-org/cli-model",
            "--eval-results",
            str(summary_file),
            "--base-model",
            "stand-in-org/tiny-llama",
            "--license",
            "apache-2.0",
            "--private",
        ]
    )

    assert status == 0
    out = capsys.readouterr().out
    assert "stand-in-org/cli-model" in out and "/commit/" in out
    assert hub.repos["stand-in-org/cli-model"].private
    card = _card(hub, "stand-in-org/cli-model")
    assert card.data.license == "apache-2.0" and card.data.base_model == "stand-in-org/tiny-llama"
    results = {result.metric_type: result for result in card.data.eval_results}
    assert results["forget_quality"].metric_value == 0.5 and results["forget_quality"].dataset_config == "forget05"

    assert cli_main(["push", str(folder), "stand-in-org/cli-model", "--print-card"]) == 0
    assert "# cli-model" in capsys.readouterr().out


def test_cli_push_reports_errors_without_the_token(hub, model_dir, tmp_path, capsys):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    hub.fail["commit"] = 503
    assert cli_main(["push", str(folder), f"{USER}/cli-fails", "--token", FAKE_TOKEN]) == 1
    err = capsys.readouterr().err
    assert "hf-unlearn push: error:" in err and "503" in err and FAKE_TOKEN not in err

    assert cli_main(["push", str(tmp_path / "missing"), f"{USER}/x"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# failures: clear errors, local files intact, the token never shown
# ----------------------------------------------------------------------------------------------------------------


def test_push_without_token_is_a_clear_error(hub, model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    folder = _full_model_folder(model_dir, tmp_path / "full")
    with pytest.raises(HubAuthenticationError, match="no Hugging Face token.*hf auth login.*HF_TOKEN"):
        push_unlearned(folder, f"{USER}/no-token")
    assert hub.requests == []  # failed before any request


def test_push_with_a_refused_token_never_shows_it(hub, model_dir, tmp_path, captured_logs):
    wrong_token = "hf_SECRETwrongtoken456"
    folder = _full_model_folder(model_dir, tmp_path / "full")
    with pytest.raises(HubAuthenticationError, match="refused the token.*401") as info:
        push_unlearned(folder, f"{USER}/refused", token=wrong_token)
    shown = "".join(traceback.format_exception(info.value))  # with the chained huggingface_hub error
    assert wrong_token not in shown and wrong_token not in _log_text(captured_logs)


def test_server_error_leaves_local_folder_unchanged(hub, model_dir, tmp_path, captured_logs):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    before = _snapshot(folder)
    hub.fail["commit"] = 500

    with pytest.raises(HubServerError, match="HTTP 500.*retry later") as info:
        push_unlearned(folder, f"{USER}/server-error", token=FAKE_TOKEN)

    assert _snapshot(folder) == before  # byte for byte, no README.md or temporary file added
    assert hub.files(f"{USER}/server-error") == {}  # nothing committed
    shown = "".join(traceback.format_exception(info.value))
    assert FAKE_TOKEN not in shown and FAKE_TOKEN not in _log_text(captured_logs)


def test_hub_down_is_a_clear_network_error(hub, model_dir, tmp_path, captured_logs):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    before = _snapshot(folder)
    down = _closed_port_url()

    with pytest.raises(HubNetworkError, match="could not be reached.*HF_ENDPOINT") as info:
        push_unlearned(folder, f"{USER}/down", endpoint=down)
    assert down in str(info.value)
    assert _snapshot(folder) == before
    with pytest.raises(HubNetworkError, match="could not be reached"):
        load_unlearned(f"{USER}/never-pushed", endpoint=down, token=FAKE_TOKEN)
    assert FAKE_TOKEN not in "".join(traceback.format_exception(info.value)) + _log_text(captured_logs)


def test_the_token_never_appears_in_the_card(hub, model_dir, tmp_path):
    folder = _full_model_folder(model_dir, tmp_path / "full")
    push_unlearned(folder, f"{USER}/card-token", token=FAKE_TOKEN)
    card_text = hub.files(f"{USER}/card-token")["README.md"].decode()
    assert FAKE_TOKEN not in card_text and FAKE_TOKEN not in str(build_model_card(folder))


def test_pull_unknown_repo_is_a_clear_error(hub):
    with pytest.raises(HubServerError, match="not found.*repo id"):
        load_unlearned(f"{USER}/does-not-exist")


def test_load_unlearned_refuses_trust_remote_code(hub, model_dir):
    with pytest.raises(ValueError, match="trust_remote_code=True is refused"):
        load_unlearned(str(model_dir), trust_remote_code=True)
    assert hub.requests == []


def test_load_unlearned_from_a_local_folder(model_dir, tokenizer):
    model, pulled_tokenizer = load_unlearned(str(model_dir), dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.testing.assert_close(_logits(model, pulled_tokenizer), _logits(reference, tokenizer), rtol=0, atol=0)
    assert not model.training


def test_card_reads_the_eval_summary_written_by_the_evaluator(tmp_path):
    """The card's metrics are keys of the evaluator's summary (the same dict `summarize_tofu_logs` returns)."""
    from hf_unlearn.constants import EVAL_SUMMARY_FILE
    from hf_unlearn.evaluation.logs import write_tofu_logs

    write_tofu_logs({}, tmp_path / "eval", TOFU_SUMMARY)
    card = build_model_card(kind="full", eval_results=tmp_path / "eval" / EVAL_SUMMARY_FILE, model_name="m")
    assert {r.metric_type for r in card.data.eval_results} >= {"forget_quality", "model_utility"}
    assert str(card) == str(build_model_card(kind="full", eval_results=TOFU_SUMMARY, model_name="m"))


def test_muse_results_reach_the_card_and_the_push(hub, model_dir, tokenizer, tmp_path):
    """A model evaluated with `hf-unlearn eval --benchmark muse` (its summary in eval/) pushes with MUSE's metrics."""
    from hf_unlearn.evaluation import MUSEEvaluator

    folder = tmp_path / "muse-model"
    shutil.copytree(model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    rows = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(3)]
    texts = [{"text": f"Some text number {i}."} for i in range(6)]
    data = {"knowmem/forget_qa": rows, "knowmem/forget_qa_icl": rows[:1], "knowmem/retain_qa": rows,
            "knowmem/retain_qa_icl": rows[:1], "verbmem/forget": [{"prompt": "Once", "gt": " upon a time"}],
            "privleak/forget": texts[:3], "privleak/holdout": texts[3:]}  # fmt: skip
    evaluator = MUSEEvaluator(model, tokenizer, datasets=data, knowmem_max_new_tokens=4, verbmem_max_new_tokens=4,
                              progress=False)  # fmt: skip
    summary = evaluator.evaluate(folder / "eval", retain_auc=0.5, retain_auc_convention="hf_unlearn")
    assert summary["dataset"] == "in-memory data"

    push_unlearned(folder, "muse-model")
    card = _card(hub, f"{USER}/muse-model")
    # rows given in memory are not MUSE's benchmark: the card shows the results, its metadata does not claim them
    assert card.data.eval_results is None and "Not a benchmark result" in card.text
    table = card.text.split("## Evaluation")[1]
    results = {name.strip(): float(value) for name, value in re.findall(r"\| ([^|]+) \| ([0-9.e+-]+) \|", table)}
    assert set(results) == {MUSE_SUMMARY_METRICS[key] for key in MUSE_SUMMARY_METRICS if summary.get(key) is not None}
    assert results[MUSE_SUMMARY_METRICS["privleak"]] == pytest.approx(summary["privleak"], rel=1e-3)
    assert "MUSE evaluation" in card.text and "arxiv.org/abs/2407.06460" in card.text
    assert card.data.datasets is None and "arxiv.org/abs/2401.06121" not in card.text  # not TOFU
    with pytest.raises(ValueError, match="not a TOFU or MUSE evaluation summary"):
        build_model_card(kind="full", eval_results=_write_json(tmp_path / "other.json", {"accuracy": 1.0}))


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


# ----------------------------------------------------------------------------------------------------------------
# the method registry (saved kinds) and the papers losses declare
# ----------------------------------------------------------------------------------------------------------------


def test_the_method_registry_decides_every_saved_kind_in_one_place(tmp_path):
    from hf_unlearn.methods import get_method, list_methods, method_of_folder, method_of_state

    assert list_methods() == ["grun", "peft", "full"]  # recognised in this order
    markers = {"grun": "grun_config.json", "peft": "adapter_config.json", "full": "config.json"}
    for kind, marker in markers.items():
        folder = tmp_path / kind
        folder.mkdir()
        (folder / marker).write_text(json.dumps({"base_model_name_or_path": "org/base"}))
        (folder / "config.json").write_text("{}")  # an adapter folder may hold the model's config too
        assert method_of_folder(folder) is get_method(kind)
        assert get_method(kind).read_base_model(folder) == (None if kind == "full" else "org/base")
    assert get_method("peft").library_name == "peft" and get_method("full").library_name == "transformers"
    assert [get_method(kind).needs_base_model for kind in list_methods()] == [True, True, False]
    assert method_of_state({"method": "grun", "peft": False}).kind == "grun"
    assert method_of_state({"peft": True}).kind == "peft"
    assert method_of_state({}).kind == method_of_state(None).kind == "full"
    with pytest.raises(FileNotFoundError, match="grun_config.json.*adapter_config.json.*config.json"):
        method_of_folder(tmp_path)
    with pytest.raises(ValueError, match="Unknown model kind 'onnx'"):
        get_method("onnx")


def test_card_cites_the_papers_each_loss_declares():
    from hf_unlearn import ForgetLoss, register_loss
    from hf_unlearn.citations import Paper

    paper = Paper("A Loss of One's Own", "Doe et al. 2031", "3101.00001")

    @register_loss("cited_user_loss_test", override=True)
    class CitedLoss(ForgetLoss):
        papers = (paper,)

        def __call__(self, ctx):
            return -ctx.nll("forget")

    def card(loss: str) -> str:
        return build_model_card(kind="full", state={"forget_loss": loss, "retain_loss": "kl"}).text

    assert paper.markdown() in card("cited_user_loss_test")
    dpo = card("dpo")
    assert "arxiv.org/abs/2305.18290" in dpo and "arxiv.org/abs/2401.06121" in dpo  # DPO, TOFU (IDK refusals)
    assert "2404.05868" not in dpo
    for loss in ("wga", "tnpo", "wtnpo"):
        assert "arxiv.org/abs/2502.19301" in card(loss)  # the G-effect paper
    assert "## Citations" not in card("a_loss_not_registered_here")
