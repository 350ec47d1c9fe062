"""The teacher stage: load the teacher, fine-tune it unless it is already fine-tuned, evaluate it,
and store model, tokenizer and the tokenized splits once per study, keyed by a hash of the task
and teacher config, so resumed or repeated studies and every trial reuse the same artifacts.

Layout of ``<study dir>/teacher/<key>/``: ``model/`` (save_pretrained, tokenizer included),
``data/`` (tokenized splits, `datasets.save_to_disk`), ``info.json`` (task facts, depths, widths),
``metrics.json``. Written to a temporary folder and renamed, so a killed stage leaves no half cache.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from raykd.config import StudyConfig, config_hash
from raykd.families import FAMILIES, family_of
from raykd.models import load_teacher
from raykd.tasks import build_task
from raykd.train.loop import autocast, finetune, resolve_precision
from raykd.train.optim import make_optimizer, total_steps


def teacher_key(config: StudyConfig) -> str:
    return config_hash({"task": config.task.model_dump(mode="json"), "teacher": config.teacher.model_dump(mode="json"),
                        "precision": config.compute.precision})


def teacher_dir(study_dir: Path, config: StudyConfig) -> Path:
    return study_dir / "teacher" / teacher_key(config)


def load_artifacts(directory: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """(info, metrics) of a finished teacher stage."""
    return json.loads((directory / "info.json").read_text()), json.loads((directory / "metrics.json").read_text())


def prepare_teacher(config: StudyConfig, directory: str, tracking=None, device: str | None = None) -> dict[str, float]:
    """Run the teacher stage into `directory` unless it is already there; return its metrics."""
    from raykd import tracking as tr

    directory = Path(directory)
    if (directory / "metrics.json").is_file():
        return load_artifacts(directory)[1]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(_assigned_cpus())
    task = build_task(config.task)
    raw = task.load()
    texts = [t for col in ("text", "text_pair", "source", "target") if col in raw["train"].column_names
             for t in raw["train"][col]]
    model, tokenizer = load_teacher(config.teacher, task, texts)
    family = family_of(model)
    if config.teacher.depths and family.depths(model.config) != config.teacher.depths:
        raise ValueError(f"teacher.depths says {config.teacher.depths}, the loaded teacher has {family.depths(model.config)}")
    data = task.tokenize(raw, tokenizer)
    at_limit = inputs_at_limit(config, data)
    model.to(device)
    run_id = client = None
    if tracking is not None:
        client = tracking.client()
        run_id = tr.child_run(tracking, role="teacher", key=f"teacher-{teacher_key(config)}", run_name="teacher")
        tr.log_params(client, run_id, {f"teacher.{k}": v for k, v in config.teacher.model_dump(mode="json").items()})
    started = time.time()
    train = config.teacher.train
    steps = 0
    precision = resolve_precision(config.compute.precision, device)
    if not config.teacher.finetuned:
        torch.manual_seed(0)
        loader = task.dataloader(data["train"], tokenizer, batch_size=train.batch_size, shuffle=True, seed=0,
                                 group_by_length=train.group_by_length)
        steps = total_steps(train, len(loader))
        optimizer, scheduler = make_optimizer(model.parameters(), train, steps)

        def log(step):
            if client is not None and (step.step + 1) % train.log_every == 0:
                tr.log_metrics(client, run_id, {f"train/{k}": v for k, v in step.terms.items() if k == "ce"},
                               step.step + step.epoch * len(loader), int(time.time() * 1000))

        result = finetune(model, loader, optimizer, scheduler=scheduler, epochs=math.ceil(train.epochs),
                          max_steps=steps, grad_clip=train.grad_clip, device=device, on_step=log, precision=precision)
        if result.status != "finished":
            raise RuntimeError(f"teacher fine-tuning {result.status} after {result.steps} steps")
    with autocast(precision, device):
        metrics = {f"validation/{k}": v for k, v in task.evaluate(model, tokenizer, data["validation"]).items()}
        metrics.update({f"test/{k}": v for k, v in task.evaluate(model, tokenizer, data["test"]).items()})
    info = {
        **task.info,
        "family": family.name,
        "depths": family.depths(model.config),
        "width": family.width(model.config),
        "metric": task.metric,
        "train_steps": steps,
        "inputs_at_max_length": at_limit,
        "precision": precision,
        "seconds": round(time.time() - started, 1),
    }
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.cpu().save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    data.save_to_disk(str(tmp / "data"))
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    if client is not None:
        tr.log_metrics(client, run_id, {f"teacher/{k}": v for k, v in metrics.items()}, steps, int(time.time() * 1000))
        tr.finish(client, run_id, "finished")
    return metrics


def _assigned_cpus() -> int:
    """CPUs Ray gave this task (the whole machine outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # not inside a Ray task
        pass
    return torch.get_num_threads()


def prepare_cache(config: StudyConfig, directory: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Stage 1b: size the shared teacher cache for `trials`, and build it when it fits the budget.

    Returns ``{"path": folder or None, "plan": description, "reason": why not built}``. A cache that
    is already built is reused; one over ``compute.teacher_cache.budget_gb`` is not built (trials then
    run the teacher live).
    """
    import datasets
    from transformers import AutoConfig, AutoTokenizer

    from raykd.models import auto_class
    from raykd.strategies import is_per_epoch
    from raykd.train import teacher_cache as tc
    from raykd.train.worker import trial_layer_maps

    settings = config.compute.teacher_cache
    directory = Path(directory)
    info = json.loads((directory / "info.json").read_text())
    task = build_task(config.task)
    task.restore(info)
    depths = info["depths"]
    family = FAMILIES.get(info["family"])
    students = student_depths(config, depths)
    epochs = math.ceil(config.distill.train.epochs)
    maps = [trial_layer_maps(config, trial, students, depths, family.kind, epoch)
            for trial in trials
            for epoch in range(epochs if is_per_epoch(trial["strategy"]) else 1)]
    layers = tc.needed_layers(maps)
    logits = config.distill.loss.kd > 0
    if not layers and not logits:
        return {"path": None, "plan": "nothing to cache", "reason": "no trial reads the teacher"}
    data = datasets.load_from_disk(str(directory / "data"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(directory / "model")
    collate = task.collator(tokenizer)
    sequence_level = config.task.type == "classification"
    logit_width = (len(info["label_names"]) if sequence_level
                   else int(AutoConfig.from_pretrained(directory / "model").vocab_size))
    cache_plan = tc.plan(family, data, collate, layers, width=info["width"], logits=logits, logit_width=logit_width,
                         sequence_level=sequence_level, dtype=settings.dtype, final_norm=config.distill.final_norm)
    folder = directory / "cache" / cache_plan.key(teacher_key(config))
    described = cache_plan.describe()
    if (folder / "index.json").is_file():
        return {"path": str(folder), "plan": described, "reason": "reused"}
    if cache_plan.bytes > settings.budget_gb * 2**30:
        return {"path": None, "plan": described,
                "reason": f"over compute.teacher_cache.budget_gb ({settings.budget_gb:g} GiB): trials run the teacher live"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(_assigned_cpus())
    model = auto_class(task).from_pretrained(directory / "model").to(device).eval()
    started = time.time()
    tc.build(model, family, data, collate, cache_plan, folder, device=device,
             fingerprint=getattr(data, "_fingerprint", ""))
    return {"path": str(folder), "plan": described, "reason": f"built in {time.time() - started:.0f} s"}


def inputs_at_max_length_line(info: dict[str, Any]) -> str:
    counts = info.get("inputs_at_max_length") or {}
    return ", ".join(f"{split} {n}" for split, n in counts.items())


def inputs_at_limit(config: StudyConfig, data) -> dict[str, int]:
    """Per split, how many inputs reached the input length limit (truncated, or exactly that long): longer
    texts are truncated to the limit, as usual, and counted here so it is never silent."""
    task = config.task
    limit = task.max_length if task.type == "classification" else task.max_source_length
    if task.type == "causal_lm":
        limit = task.max_source_length + task.max_target_length
    return {split: sum(len(ids) >= limit for ids in data[split]["input_ids"]) for split in data}


def student_depths(config: StudyConfig, teacher_depths: dict[str, int]) -> dict[str, int]:
    """Student blocks per stack: `student.depth` as given per stack, or the one number for every stack."""
    depth = config.student.depth
    return dict(depth) if isinstance(depth, dict) else {stack: depth for stack in teacher_depths}
