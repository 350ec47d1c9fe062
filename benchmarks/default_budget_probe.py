"""Does a random-init student learn the default task under the default study's budget, per strategy?

Runs the plain loop in-process (no Ray) on the default study's cached teacher stage, one
configuration per line, and prints test accuracy. For choosing the default study's budget.

    python benchmarks/default_budget_probe.py --teacher-dir outputs/minilm6_to_3l_tweets/teacher/<key> \\
        --run forward:3:1e-4 --run none:0:1e-4 --run forward:3:5e-4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import torch
from torch.utils.data import DataLoader

from raykd.config import load_config
from raykd.losses import LossConfig
from raykd.models import auto_class
from raykd.strategies import layer_maps
from raykd.student import build_student
from raykd.tasks import build_task
from raykd.train.loop import distill
from raykd.train.optim import make_optimizer, total_steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="studies/configs/default.yaml")
    parser.add_argument("--teacher-dir", required=True)
    parser.add_argument("--run", action="append", required=True, help="strategy:weight:lr[:init]")
    parser.add_argument("--epochs", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    config = load_config(args.config)
    tdir = Path(args.teacher_dir)
    task = build_task(config.task)
    task.restore(json.loads((tdir / "info.json").read_text()))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tdir / "model")
    teacher = auto_class(task).from_pretrained(tdir / "model").eval()
    data = datasets.load_from_disk(str(tdir / "data"))
    for spec in args.run:
        strategy, weight, lr, *init = spec.split(":")
        init = init[0] if init else "random"
        student = build_student(teacher, depth=3, init=init, seed=0)
        maps = layer_maps(strategy, {"encoder": 3}, {"encoder": 6}, seed=0)
        train = config.distill.train.model_copy(update={"lr": float(lr), "epochs": args.epochs})
        loader = DataLoader(
            data["train"],
            batch_size=train.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            collate_fn=task.collator(tok),
        )
        steps = total_steps(train, len(loader))
        optimizer, scheduler = make_optimizer(student.parameters(), train, steps)
        loss = LossConfig(hidden=float(weight), **config.distill.loss.model_dump())
        started = time.time()
        result = distill(
            teacher,
            student,
            loader,
            optimizer,
            layer_maps=maps,
            loss=loss,
            scheduler=scheduler,
            epochs=int(-(-args.epochs // 1)),
            max_steps=steps,
            grad_clip=train.grad_clip,
        )
        test = task.evaluate(student, tok, data["test"])
        last = result.history[-1]
        print(
            json.dumps(
                {
                    "run": spec,
                    "init": init,
                    "steps": result.steps,
                    "seconds": round(time.time() - started),
                    "test_accuracy": round(test["accuracy"], 4),
                    "final_ce": round(last["ce"], 3),
                    "final_hidden": round(last["hidden"], 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
