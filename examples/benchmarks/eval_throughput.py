"""TOFU evaluation throughput: the batched TOFUEvaluator vs a one-question-at-a-time loop on the same model.

Both compute the same things on the same questions of the bundled TOFU subset (teacher-forced mean-NLL of the answer,
the paraphrased answer and every perturbed answer; a greedy generation of up to --max-new-tokens tokens) with a
locally built tiny Llama (no download). The loop does one forward pass per (question, answer) and one `generate`
call per question; the evaluator flattens every (question, answer) pair of a split into length-sorted batches and
generates --batch-size questions at a time with left padding. One run of each; prints a markdown table.

    python examples/benchmarks/eval_throughput.py
    python examples/benchmarks/eval_throughput.py --threads 1 --max-questions 40 --max-new-tokens 64

Options for larger runs (defaults: the above): `--device`, `--dtype bfloat16` (the model is built on the device in
bfloat16), `--model-vocab`, `--intermediate`, `--heads`, `--kv-heads`, `--tie-embeddings` (model shape; the
tokenizer stays the small local one), `--splits`, `--forget-questions N` (a forget split of N questions cycled from
the bundled questions that have paraphrased and perturbed answers, forget01_perturbed then retain_perturbed; e.g. 400
for forget10's size), `--naive-max-questions N` (the loop runs only the first N questions of each split and its
questions per second is measured on those), `--atol` (the allowed avg_gt_loss difference, e.g. for bfloat16) and
`--json OUT`. A forget10-sized run of a Llama-3.2-1B-shaped model on a GPU:

    python examples/benchmarks/eval_throughput.py --device cuda --dtype bfloat16 --layers 16 --hidden 2048 \
        --intermediate 8192 --heads 32 --kv-heads 8 --model-vocab 128256 --tie-embeddings --splits forget \
        --forget-questions 400 --naive-max-questions 20 --batch-size 64 --atol 0.1
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time

import numpy as np
import torch

from hf_unlearn import load_tofu
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.demo.tiny import finetune_on_qa, llama_shape, tiny_llama, train_tokenizer
from hf_unlearn.evaluation import TOFUEvaluator, rouge_l_recall, tofu_split_config
from hf_unlearn.losses import mean_nll


@torch.no_grad()
def one_at_a_time(
    model, tokenizer, evaluator: TOFUEvaluator, max_new_tokens: int, datasets=None, max_questions=None
) -> dict[str, list[float]]:
    """The naive loop: every (prompt, answer) pair in its own forward pass, every question its own generate call."""
    encoder = PromptEncoder(tokenizer)
    device = next(model.parameters()).device
    avg_gt_loss: dict[str, list[float]] = {}
    for split in evaluator.splits:
        if datasets and split in datasets:
            rows = datasets[split]
        else:
            rows = load_tofu(tofu_split_config(split, evaluator.forget_split), data_dir="bundled")
        n = len(evaluator.questions[split])
        if max_questions:
            n = min(n, max_questions)
        losses = []
        for i in range(n):
            row = rows[i]
            prompt = [{"role": "user", "content": row["question"]}]
            answers = [row["answer"], row.get("paraphrased_answer") or row["answer"], *row["perturbed_answer"]]
            nlls = []
            for answer in answers:
                batch = pad_examples([encoder.encode(prompt, answer)], tokenizer.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                nlls.append(mean_nll(logits, batch["labels"]).item())
            losses.append(nlls[0])
            prompt_ids = torch.tensor([encoder.encode_prompt(prompt)], device=device)
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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--model-vocab", type=int, default=0, help="model vocabulary (0: the tokenizer's)")
    parser.add_argument("--intermediate", type=int, default=0, help="MLP width (0: 2 x hidden)")
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden // 32)")
    parser.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: hidden // 32)")
    parser.add_argument("--tie-embeddings", action="store_true")
    parser.add_argument("--splits", default="retain,real_authors,world_facts,forget", help="comma-separated")
    parser.add_argument("--forget-questions", type=int, default=0, help="forget split of N cycled questions")
    parser.add_argument("--naive-max-questions", type=int, default=0, help="questions per split for the loop")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed max avg_gt_loss difference")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = load_tofu("full", data_dir="bundled")
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], args.vocab)
    shape = llama_shape(args.heads, args.kv_heads, args.intermediate, args.tie_embeddings)
    dtype = getattr(torch, args.dtype)
    vocab = args.model_vocab or len(tokenizer)
    model = tiny_llama(vocab, args.layers, args.hidden, seed=0, dtype=dtype, device=args.device, **shape)
    if args.finetune_epochs:
        finetune_on_qa(model, tokenizer, full["question"], full["answer"], epochs=args.finetune_epochs)
    model.eval()
    datasets = None
    if args.forget_questions:
        if args.splits != "forget":
            parser.error("--forget-questions needs --splits forget")
        pool = list(load_tofu("forget01_perturbed", data_dir="bundled"))
        pool += list(load_tofu("retain_perturbed", data_dir="bundled"))
        datasets = {"forget": list(itertools.islice(itertools.cycle(pool), args.forget_questions))}

    evaluator = TOFUEvaluator(
        model,
        tokenizer,
        forget_split="forget01",
        data_dir="bundled",
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        max_questions=None if args.forget_questions else args.max_questions,
        progress=False,
        splits=args.splits.split(","),
        datasets=datasets,
    )
    n_questions = sum(len(q) for q in evaluator.questions.values())
    n_sequences = sum(
        2 + len(q.perturbed_ids) - (q.paraphrased_ids is None) for v in evaluator.questions.values() for q in v
    )

    start = time.perf_counter()
    evaluator.evaluate()
    batched_s = time.perf_counter() - start

    start = time.perf_counter()
    naive = one_at_a_time(model, tokenizer, evaluator, args.max_new_tokens, datasets, args.naive_max_questions)
    naive_s = time.perf_counter() - start
    n_naive = sum(len(losses) for losses in naive.values())

    diff = max(
        abs(a - b)
        for split, losses in naive.items()
        for a, b in zip(losses, evaluator.logs[split]["avg_gt_loss"].values())
    )
    params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    print(
        f"Model: Llama {args.layers} layers, hidden {args.hidden}, vocab {args.model_vocab or len(tokenizer)} "
        f"({params / 1e6:.1f}M params), "
        f"{args.dtype}, {where or platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}."
    )
    if args.forget_questions:
        source = f"a forget split of {args.forget_questions} questions cycled from the bundled TOFU subset"
    else:
        source = f"bundled TOFU subset, {args.max_questions} per split, {len(evaluator.splits)} splits"
    naive_note = f" (the loop ran the first {n_naive} of them)" if n_naive != n_questions else ""
    print(
        f"Work: {n_questions} questions ({source}){naive_note}, "
        f"{n_sequences} teacher-forced sequences, greedy generation up to {args.max_new_tokens} new tokens; "
        f"max |avg_gt_loss| difference between the two: {diff:.1e}."
    )
    naive_rate, batched_rate = n_naive / naive_s, n_questions / batched_s
    print()
    print("| method | seconds | questions / s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| one question at a time | {naive_s:.1f} | {naive_rate:.2f} | 1.0x |")
    print(
        f"| TOFUEvaluator (batch {args.batch_size}) | {batched_s:.1f} | {batched_rate:.2f} "
        f"| {batched_rate / naive_rate:.1f}x |"
    )
    if args.json:
        with open(args.json, "w") as f:
            result = {
                "args": vars(args),
                "questions": n_questions,
                "naive_questions": n_naive,
                "sequences": n_sequences,
                "naive_s": naive_s,
                "batched_s": batched_s,
                "naive_questions_per_s": naive_rate,
                "batched_questions_per_s": batched_rate,
                "speedup": batched_rate / naive_rate,
                "max_avg_gt_loss_diff": diff,
                "params": params,
            }
            json.dump(result, f, indent=1)
    np.testing.assert_allclose(diff, 0.0, atol=args.atol)


if __name__ == "__main__":
    main()
