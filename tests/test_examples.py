"""The runnable examples do what their docstrings say."""

from __future__ import annotations

import math
import runpy

from launch import REPO


def test_custom_loss_example_trains_with_a_user_registered_loss(tmp_path):
    example = runpy.run_path(str(REPO / "examples" / "custom_loss.py"))
    first, last = example["main"](steps=6, finetune_epochs=4, output_dir=str(tmp_path))
    # at theta = ref the loss is (2 / beta) ln 2 = 4 ln 2; unlearning lowers it
    assert math.isclose(first, 4 * math.log(2), rel_tol=1e-4)
    assert last < first
