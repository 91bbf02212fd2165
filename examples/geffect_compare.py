"""Compare unlearning objectives by their G-effect (Wang et al., ICLR 2025) on a tiny TOFU model, offline.

    python examples/geffect_compare.py                    # GA, NPO, WGA, TNPO; writes examples/geffect_compare.png
    python examples/geffect_compare.py --steps 20 --objectives ga,wga

A tiny Llama first learns the two bundled forget authors and some retain authors. Each objective then unlearns them
for a few steps (UnlearningTrainer, no retain term, so that only the objective acts) with a GEffectCallback that
records, every few steps on a fixed sample, the G-effect on the forget risk (negative: it rises, removal works) and
on the retain risk (negative: retention harmed), per layer. The figure puts the runs side by side; the table gives
the accumulated G-effects and the measured change of the two risks.

The paper's claim to check: GA's 1/p_t token weighting harms retention more than WGA / TNPO for a similar forget
effect, so the retain-to-forget ratio of GA should be the largest.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from hf_unlearn import UnlearningConfig, UnlearningTrainer, load_tofu
from hf_unlearn.analysis import GEffectCallback, accumulated, plot_geffect_comparison
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.losses import mean_nll
from hf_unlearn.tiny import finetune_on_qa, tiny_llama, train_tokenizer

HERE = Path(__file__).resolve().parent
#: objective -> forget_loss_kwargs (the library's defaults; the G-effect code runs WGA at beta 5)
OBJECTIVES = {"ga": {}, "npo": {"beta": 0.1}, "wga": {"beta": 1.0}, "tnpo": {"beta": 4.0}}


@torch.no_grad()
def mean_risk(model, tokenizer, dataset, batch_size: int = 32) -> float:
    """Mean-NLL of the answers (the risk R whose G-effect is measured)."""
    encoder = PromptEncoder(tokenizer)
    pairs = [
        encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(dataset["question"], dataset["answer"])
    ]
    model.eval()
    values = []
    for start in range(0, len(pairs), batch_size):
        batch = pad_examples(pairs[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        values.append(mean_nll(logits, batch["labels"]))
    return torch.cat(values).mean().item()


def target_model(output_dir: Path, forget, retain, epochs: int, seed: int):
    """The model that knows the forget and retain answers (built once, then reloaded from output_dir/target)."""
    path = output_dir / "target"
    if (path / "model.safetensors").is_file():
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    full = load_tofu("full", "bundled")
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=1024)
    model = tiny_llama(len(tokenizer), num_layers=4, hidden_size=64, seed=seed)
    questions = list(forget["question"]) + list(retain["question"])
    answers = list(forget["answer"]) + list(retain["answer"])
    finetune_on_qa(model, tokenizer, questions, answers, epochs=epochs, learning_rate=3e-3, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def main(
    objectives: list[str] | None = None,
    steps: int = 12,
    every: int = 2,
    num_samples: int = 8,
    learning_rate: float = 1e-3,
    finetune_epochs: int = 30,
    output_dir: str | Path = "geffect_compare_output",
    figure: str | Path = HERE / "geffect_compare.png",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    objectives = objectives or list(OBJECTIVES)
    unknown = sorted(set(objectives) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"Unknown objective(s) {unknown}; choose from {sorted(OBJECTIVES)}.")
    hf_logging.set_verbosity_error()
    output_dir = Path(output_dir)
    forget = load_tofu("forget01", "bundled")
    retain = load_tofu("retain99", "bundled").select(range(60))
    target, tokenizer = target_model(output_dir, forget, retain, finetune_epochs, seed)
    before = {"forget": mean_risk(target, tokenizer, forget), "retain": mean_risk(target, tokenizer, retain)}
    print(f"Target model: forget risk {before['forget']:.3f}, retain risk {before['retain']:.3f} (mean-NLL)")

    runs, summary = {}, {}
    for name in objectives:
        print(f"Unlearning with {name} for {steps} steps (G-effect every {every} steps)")
        model = copy.deepcopy(target)
        callback = GEffectCallback(forget, retain, every_n_steps=every, num_samples=num_samples, seed=seed)
        args = UnlearningConfig(
            output_dir=str(output_dir / name),
            forget_loss=name,
            forget_loss_kwargs=OBJECTIVES[name],
            retain_loss="none",
            per_device_train_batch_size=8,
            max_steps=steps,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            bf16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            seed=seed,
        )
        trainer = UnlearningTrainer(
            model=model,
            args=args,
            forget_dataset=forget,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        trainer.train()
        runs[name] = callback.history
        after = {"forget": mean_risk(model, tokenizer, forget), "retain": mean_risk(model, tokenizer, retain)}
        acc_f, acc_r = accumulated(callback.history, "forget")[1][-1], accumulated(callback.history, "retain")[1][-1]
        summary[name] = {
            "first_forget_geffect": callback.history[0].forget,
            "first_retain_geffect": callback.history[0].retain,
            "accumulated_forget": float(acc_f),
            "accumulated_retain": float(acc_r),
            "retain_per_forget": float(acc_r / acc_f),
            "forget_risk_rise": after["forget"] - before["forget"],
            "retain_risk_rise": after["retain"] - before["retain"],
            "measured_retain_per_forget": (after["retain"] - before["retain"]) / (after["forget"] - before["forget"]),
        }

    plot_geffect_comparison(
        runs,
        figure,
        title=f"G-effect on a tiny TOFU Llama: {', '.join(objectives)} ({steps} steps, lr {learning_rate:g}, no "
        "retain term)",
    )
    print()
    print(format_table(summary))
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nFigure: {figure}\nSummary: {output_dir / 'summary.json'}")
    return summary


def format_table(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| objective | G-effect at step 0 (forget / retain) | accumulated forget | accumulated retain | "
        "retain / forget | forget risk rise | retain risk rise | measured retain / forget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['first_forget_geffect']:+.3g} / {s['first_retain_geffect']:+.3g} | "
            f"{s['accumulated_forget']:+.4g} | {s['accumulated_retain']:+.4g} | {s['retain_per_forget']:.3f} | "
            f"{s['forget_risk_rise']:+.3f} | {s['retain_risk_rise']:+.3f} | {s['measured_retain_per_forget']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="Comma-separated: ga, npo, wga, tnpo.")
    parser.add_argument("--steps", type=int, default=12, help="Unlearning steps per objective.")
    parser.add_argument("--every", type=int, default=2, help="Steps between G-effect computations.")
    parser.add_argument("--num-samples", type=int, default=8, help="Forget and retain examples of the G-effect.")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--output-dir", default="geffect_compare_output")
    parser.add_argument("--figure", default=str(HERE / "geffect_compare.png"))
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    main(
        objectives=[o.strip() for o in cli.objectives.split(",") if o.strip()],
        steps=cli.steps,
        every=cli.every,
        num_samples=cli.num_samples,
        learning_rate=cli.learning_rate,
        finetune_epochs=cli.finetune_epochs,
        output_dir=cli.output_dir,
        figure=cli.figure,
        seed=cli.seed,
    )
