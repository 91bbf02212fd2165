"""What model cards cite: the papers of benchmarks and methods, and those each loss declares (`papers`)."""

from __future__ import annotations

from ..citations import TOFU_PAPER, Paper
from ..losses import get_loss

__all__ = ["GRU_PAPER", "GRUN_PAPER", "MUSE_PAPER", "PAPERS", "TOFU_PAPER", "loss_papers"]

MUSE_PAPER = Paper("MUSE: Machine Unlearning Six-Way Evaluation for Language Models", "Shi et al. 2024", "2407.06460")
GRU_PAPER = Paper(
    "GRU: Mitigating the Trade-off between Unlearning and Retention for LLMs", "Wang et al. 2025", "2503.09117"
)
GRUN_PAPER = Paper("A General Framework to Enhance Fine-tuning-based LLM Unlearning", "Ren et al. 2025", "2502.17823")


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
