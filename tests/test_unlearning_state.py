"""`unlearning.json` through `UnlearningState`: exactly the JSON the trainer wrote before the dataclass, and a lossless
round trip of older or hand-written files (which model cards read)."""

from __future__ import annotations

import json

import pytest

from hf_unlearn.constants import UNLEARNING_STATE_FILE
from hf_unlearn.hub.folder import load_unlearning_state
from hf_unlearn.unlearning_state import UnlearningState

PLAIN = {
    "forget_loss": "npo",
    "forget_loss_kwargs": {"beta": 0.1},
    "retain_loss": "nll",
    "retain_loss_kwargs": {},
    "gamma": 1.0,
    "alpha": 1.0,
    "learning_rate": 1e-05,
    "seed": 42,
    "peft": False,
    "rectification": None,
    "trainable_parameters": None,
    "token_average": "batch",
}
GRU_RESUMED_GRUN = {
    **PLAIN,
    "rectification": "gru",
    "gru_ema": 0.8,
    "gru_retain_weight": 0.0,
    "gru_projected": "objective",
    "resumed_from": "checkpoint-1",
    "changed_on_resume": {"gamma": {"checkpoint": 1.0, "resumed": 2.0}},
    "method": "grun",
    "grun": [{"layers": [1], "forget_loss": "ga"}],
}


@pytest.mark.parametrize("data", [PLAIN, GRU_RESUMED_GRUN], ids=["plain", "gru-resumed-grun"])
def test_a_trainer_file_round_trips_key_by_key_and_in_order(data, tmp_path):
    state = UnlearningState.from_dict(data)
    assert list(state.to_dict().items()) == list(data.items())
    state.write(tmp_path)
    assert (tmp_path / UNLEARNING_STATE_FILE).read_text() == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    assert UnlearningState.read(tmp_path) == state


def test_the_trainer_writes_null_settings_and_leaves_out_optional_ones():
    written = UnlearningState(**PLAIN).to_dict()
    assert written == PLAIN and written["trainable_parameters"] is None and "gru_ema" not in written


def test_hand_written_files_keep_their_keys_only(tmp_path):
    data = {"forget_loss": "npo", "retain_loss": "nll", "notes": "by hand"}
    (tmp_path / UNLEARNING_STATE_FILE).write_text(json.dumps(data))
    state = UnlearningState.read(tmp_path)
    assert state.extra == {"notes": "by hand"} and "seed" in state.absent_keys
    assert state.to_dict() == data and load_unlearning_state(tmp_path) == data


def test_missing_and_malformed_files(tmp_path):
    assert UnlearningState.read(tmp_path) is None and load_unlearning_state(tmp_path) is None
    (tmp_path / UNLEARNING_STATE_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        UnlearningState.read(tmp_path)
    (tmp_path / UNLEARNING_STATE_FILE).write_text("{")
    with pytest.raises(ValueError, match="unlearning.json"):
        load_unlearning_state(tmp_path)
