"""What model cards cite: the papers of benchmarks and methods, and those each loss declares (`papers`)."""

from __future__ import annotations

from ..citations import GRU_PAPER, GRUN_PAPER, MUSE_PAPER, SMOOTHING_PAPER, TOFU_PAPER, Paper
from ..losses import get_loss

__all__ = ["GRU_PAPER", "GRUN_PAPER", "MUSE_PAPER", "PAPERS", "SMOOTHING_PAPER", "TOFU_PAPER", "loss_papers"]


def loss_papers(name: object) -> tuple[Paper, ...]:
    """The papers a registered loss declares (`UnlearningLoss.papers`); none for a name that is not registered in
    this process (e.g. a user loss whose module was not imported) or for no loss at all."""
    if not name:
        return ()
    try:
        return tuple(get_loss(str(name)).papers)
    except ValueError:
        return ()


#: Every paper by a short key: benchmarks and methods, and the first paper of each built-in loss family.
PAPERS: dict[str, Paper] = {
    "tofu": TOFU_PAPER,
    "muse": MUSE_PAPER,
    "gru": GRU_PAPER,
    "grun": GRUN_PAPER,
    "smoothing": SMOOTHING_PAPER,
    **{
        key: loss_papers(loss)[0]
        for key, loss in (
            ("npo", "npo"),
            ("simnpo", "simnpo"),
            ("wmdp", "rmu"),
            ("ga", "ga"),
            ("dpo", "dpo"),
            ("ceu", "ceu"),
            ("undial", "undial"),
            ("g_effect", "wga"),
            ("satimp", "satimp"),
        )
    },
}
