"""TOFU evaluation throughput: the batched TOFUEvaluator vs a one-question-at-a-time loop on the same model.

Both compute the same things on the same questions of the bundled TOFU subset (teacher-forced mean-NLL of the answer,
the paraphrased answer and every perturbed answer; a greedy generation of up to --max-new-tokens tokens) with a
locally built tiny Llama (no download). The loop does one forward pass per (question, answer) and one `generate`
call per question; the evaluator flattens every (question, answer) pair of a split into length-sorted batches and
generates --batch-size questions at a time with left padding. One run of each; prints a markdown table.

    python examples/benchmarks/eval_throughput.py
    python examples/benchmarks/eval_throughput.py --threads 1 --max-questions 40 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hf_unlearn import load_tofu
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer
from hf_unlearn.evaluation import TOFUEvaluator, rouge_l_recall, tofu_split_config
from hf_unlearn.losses import mean_nll


@torch.no_grad()
def one_at_a_time(model, tokenizer, evaluator: TOFUEvaluator, max_new_tokens: int) -> dict[str, list[float]]:
    """The naive loop: every (prompt, answer) pair in its own forward pass, every question its own generate call."""
    encoder = PromptEncoder(tokenizer)
    avg_gt_loss: dict[str, list[float]] = {}
    for split in evaluator.splits:
        rows = load_tofu(tofu_split_config(split, evaluator.forget_split), data_dir="bundled")
        n = len(evaluator.questions[split])
        losses = []
        for i in range(n):
            row = rows[i]
            prompt = [{"role": "user", "content": row["question"]}]
            answers = [row["answer"], row.get("paraphrased_answer") or row["answer"], *row["perturbed_answer"]]
            nlls = []
            for answer in answers:
                batch = pad_examples([encoder.encode(prompt, answer)], tokenizer.pad_token_id)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                nlls.append(mean_nll(logits, batch["labels"]).item())
            losses.append(nlls[0])
            prompt_ids = torch.tensor([encoder.encode_prompt(prompt)])
            out = model.generate(
                input_ids=prompt_ids,
                attention_mask=torch.ones_like(prompt_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            text = tokenizer.decode(out[0, prompt_ids.shape[1] :], skip_special_tokens=True).strip()
            rouge_l_recall([text], [row["answer"]])
        avg_gt_loss[split] = losses
    return avg_gt_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--max-questions", type=int, default=20, help="questions per split (bundled: 40, retain 160)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="TOFU generates up to 200")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--finetune-epochs", type=int, default=0, help="teach the model the bundled QA first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = load_tofu("full", data_dir="bundled")
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], args.vocab)
    model = tiny_llama(len(tokenizer), num_layers=args.layers, hidden_size=args.hidden, seed=0)
    if args.finetune_epochs:
        finetune_on_qa(model, tokenizer, full["question"], full["answer"], epochs=args.finetune_epochs)
    model.eval()

    evaluator = TOFUEvaluator(
        model,
        tokenizer,
        forget_split="forget01",
        data_dir="bundled",
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        max_questions=args.max_questions,
        progress=False,
    )
    n_questions = sum(len(q) for q in evaluator.questions.values())
    n_sequences = sum(
        2 + len(q.perturbed_ids) - (q.paraphrased_ids is None) for v in evaluator.questions.values() for q in v
    )

    start = time.perf_counter()
    evaluator.evaluate()
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    naive = one_at_a_time(model, tokenizer, evaluator, args.max_new_tokens)
    naive_s = time.perf_counter() - start

    diff = max(
        abs(a - b)
        for split, losses in naive.items()
        for a, b in zip(losses, evaluator.logs[split]["avg_gt_loss"].values())
    )
    params = sum(p.numel() for p in model.parameters())
    print(
        f"Model: Llama {args.layers} layers, hidden {args.hidden}, vocab {len(tokenizer)} "
        f"({params / 1e6:.1f}M params), "
        f"float32, {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}."
    )
    print(
        f"Work: {n_questions} questions (bundled TOFU subset, {args.max_questions} per split, 4 splits), "
        f"{n_sequences} teacher-forced sequences, greedy generation up to {args.max_new_tokens} new tokens; "
        f"max |avg_gt_loss| difference between the two: {diff:.1e}."
    )
    print()
    print("| method | seconds | questions / s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| one question at a time | {naive_s:.1f} | {n_questions / naive_s:.2f} | 1.0x |")
    print(
        f"| TOFUEvaluator (batch {args.batch_size}) | {batched_s:.1f} | {n_questions / batched_s:.2f} "
        f"| {naive_s / batched_s:.1f}x |"
    )
    np.testing.assert_allclose(diff, 0.0, atol=1e-4)


if __name__ == "__main__":
    main()
