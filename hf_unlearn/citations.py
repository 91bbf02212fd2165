"""Papers that methods, metrics and benchmarks cite; model cards list those of what a model went through."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    """A paper to cite: its title, authors as usually cited, year and arXiv id (None when it has none we know of)."""

    title: str
    cited_as: str
    arxiv_id: str | None = None

    def markdown(self) -> str:
        link = f" [arXiv:{self.arxiv_id}](https://arxiv.org/abs/{self.arxiv_id})" if self.arxiv_id else ""
        return f"- {self.cited_as}, *{self.title}*.{link}"


#: Benchmarks and methods cited outside the losses (each loss class lists its own papers).
TOFU_PAPER = Paper("TOFU: A Task of Fictitious Unlearning for LLMs", "Maini et al. 2024", "2401.06121")
MUSE_PAPER = Paper("MUSE: Machine Unlearning Six-Way Evaluation for Language Models", "Shi et al. 2024", "2407.06460")
GRU_PAPER = Paper(
    "GRU: Mitigating the Trade-off between Unlearning and Retention for LLMs", "Wang et al. 2025", "2503.09117"
)
GRUN_PAPER = Paper("A General Framework to Enhance Fine-tuning-based LLM Unlearning", "Ren et al. 2025", "2502.17823")
SMOOTHING_PAPER = Paper(
    "Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective and Beyond",
    "Fan et al. 2025",
    "2502.05374",
)
