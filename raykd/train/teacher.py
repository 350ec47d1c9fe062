"""The teacher stage: load the teacher, fine-tune it unless it is already fine-tuned, evaluate it against
its task's trivial baseline, and store model, tokenizer and tokenized splits once per study
(`raykd.teacher_folder`), so resumed or grown studies and every trial reuse the same artifacts; then,
optionally, the shared teacher cache (`prepare_cache`).

Every random draw of the stage (a new task head, from-config weights, data order, dropout) comes from
``teacher.seed``: two fresh runs of a study get the same teacher. Written to a temporary folder and
renamed, so a killed stage leaves no half-written folder.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from raykd import hooks
from raykd import tracking as tr
from raykd.config import StudyConfig
from raykd.console import ProgressFile
from raykd.devices import default_device, use_assigned_cpus
from raykd.families import FAMILIES, family_of
from raykd.models import load_teacher
from raykd.tasks import build_task
from raykd.tasks.data import column
from raykd.tasks.metrics import points_per_unit
from raykd.teacher_folder import TeacherFolder, teacher_gain, teacher_key
from raykd.train import teacher_cache as tc
from raykd.train.loop import autocast, finetune, resolve_precision
from raykd.train.optim import make_optimizer
from raykd.trial import TrialSpec, maps_by_epoch, student_depths, total_steps


def prepare_teacher(
    config: StudyConfig, directory: str, tracking=None, device: str | None = None, progress=None
) -> dict[str, float]:
    """Run the teacher stage into `directory` unless it is already there; return its metrics.

    `progress(stage, **fields)` (optional) hears where the stage is: fine-tuning steps (step, steps, loss,
    eta_s) and evaluation.
    """

    folder = TeacherFolder(directory)
    if folder.complete:
        if tracking is not None:
            _record_reused_teacher(tracking, config, folder)
        return folder.metrics
    device = device or default_device()
    use_assigned_cpus()
    torch.manual_seed(config.teacher.seed)  # the task head, from-config weights and dropout
    task = build_task(config.task)
    raw = task.load()
    model, tokenizer, family = _load_checked_teacher(config, task, raw)
    data = task.tokenize(raw, tokenizer)
    model.to(device)
    run_id = client = None
    if tracking is not None:
        client = tracking.client()
        run_id = tr.child_run(tracking, role="teacher", key=f"teacher-{teacher_key(config)}", run_name="teacher")
        tr.log_params(client, run_id, {f"teacher.{k}": v for k, v in config.teacher.model_dump(mode="json").items()})
    started = time.time()
    precision = resolve_precision(config.compute.precision, device)
    steps = (
        0
        if config.teacher.finetuned
        else _finetune(config, task, model, tokenizer, data, device, precision, client, run_id, progress)
    )
    if progress is not None:
        progress("teacher evaluation", what="validation and test splits")
    with autocast(precision, device):
        metrics = {f"validation/{k}": v for k, v in task.evaluate(model, tokenizer, data["validation"]).items()}
        metrics.update({f"test/{k}": v for k, v in task.evaluate(model, tokenizer, data["test"]).items()})
    baseline = task.trivial_baseline(data, tokenizer, "test")
    metrics.update({f"baseline/{k}": v for k, v in baseline.items() if k != "name"})
    info = {
        **task.info,
        "family": family.name,
        "depths": family.depths(model.config),
        "width": family.width(model.config),
        "metric": task.metric,
        "train_steps": steps,
        "precision": precision,
        "seed": config.teacher.seed,
        "inputs_at_max_length": inputs_at_limit(task, data),
        "baseline": baseline,
        "seconds": round(time.time() - started, 1),
    }
    _write(Path(directory), model, tokenizer, data, info, metrics)
    if client is not None:
        _finish_teacher_run(client, run_id, metrics, steps, {"raykd.baseline": baseline["name"]})
    return metrics


def _finish_teacher_run(client, run_id: str, metrics: dict[str, float], steps: int, tags: dict[str, str]) -> None:

    tr.log_metrics(client, run_id, {f"teacher/{k}": v for k, v in metrics.items()}, steps, int(time.time() * 1000))
    tr.set_tags(client, run_id, tags)
    tr.finish(client, run_id, "finished")


def _record_reused_teacher(tracking, config: StudyConfig, folder: TeacherFolder) -> None:
    """A teacher stage found complete (a resumed study, or a teacher folder copied from another study with the
    same teacher): give this study its teacher run, with the folder's metrics, if it has none yet (the analysis
    reads the teacher's metrics from it)."""

    client = tracking.client()
    wanted = {tr.STUDY_UID: tracking.study_uid, tr.ROLE: "teacher", tr.TRIAL_ID: f"teacher-{teacher_key(config)}"}
    if tr.find_run(client, tracking.experiment_id, wanted) is not None:
        return
    run_id = tr.child_run(tracking, role="teacher", key=wanted[tr.TRIAL_ID], run_name="teacher")
    tr.log_params(client, run_id, {f"teacher.{k}": v for k, v in config.teacher.model_dump(mode="json").items()})
    tags = {"raykd.teacher_folder": str(folder.path), "raykd.teacher_reused": "true"}
    tags["raykd.baseline"] = (folder.info.get("baseline") or {}).get("name", "")
    _finish_teacher_run(client, run_id, folder.metrics, int(folder.info.get("train_steps") or 0), tags)


def _load_checked_teacher(config: StudyConfig, task, raw):
    """The teacher model and tokenizer (a tokenizer trained on the training texts where the config says so) and
    its family; the family's depths must be what ``teacher.depths`` declared."""
    texts = [
        t
        for col in ("text", "text_pair", "source", "target")
        if col in raw["train"].column_names
        for t in column(raw["train"], col)
    ]
    model, tokenizer = load_teacher(config.teacher, task, texts)
    family = family_of(model)
    if config.teacher.depths and family.depths(model.config) != config.teacher.depths:
        raise ValueError(
            f"teacher.depths says {config.teacher.depths}, the loaded teacher has {family.depths(model.config)}"
        )
    return model, tokenizer, family


def _finetune(config, task, model, tokenizer, data, device, precision, client, run_id, progress) -> int:
    """Fine-tune the teacher on the task (CE only, the same loop as every trial); returns the steps taken."""

    train = config.teacher.train
    loader = task.dataloader(
        data["train"],
        tokenizer,
        batch_size=train.batch_size,
        shuffle=True,
        seed=config.teacher.seed,
        group_by_length=train.group_by_length,
    )
    steps = total_steps(train, len(loader))
    optimizer, scheduler = make_optimizer(model.parameters(), train, steps)
    done, started = [0], time.time()
    if progress is not None:
        progress("teacher fine-tuning", step=0, steps=steps)
    hooks.stage_started("teacher fine-tuning")

    def on_step(step) -> None:
        done[0] += 1
        if client is not None and done[0] % train.log_every == 0:
            tr.log_metrics(client, run_id, {"train/ce": step.terms["ce"]}, done[0], int(time.time() * 1000))
        if progress is not None and (done[0] % max(1, steps // 100) == 0 or done[0] == steps):
            eta = (time.time() - started) / done[0] * (steps - done[0])
            progress("teacher fine-tuning", step=done[0], steps=steps, loss=step.terms["ce"], eta_s=eta)

    result = finetune(
        model,
        loader,
        optimizer,
        scheduler=scheduler,
        epochs=math.ceil(train.epochs),
        max_steps=steps,
        grad_clip=train.grad_clip,
        device=device,
        on_step=on_step,
        precision=precision,
        keep_history=False,
    )
    if result.status != "finished":
        raise RuntimeError(f"teacher fine-tuning {result.status} after {result.steps} steps")
    return steps


def _write(directory: Path, model, tokenizer, data, info: dict[str, Any], metrics: dict[str, float]) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.cpu().save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    data.save_to_disk(str(tmp / "data"))
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def teacher_stage(
    config: StudyConfig, directory: str, trials: list[TrialSpec], tracking=None, progress_path: str | None = None
) -> dict[str, Any]:
    """Stages 1 and 1b in one process (one start-up, one import of torch and transformers): the teacher, then
    the shared cache, unless the teacher is too weak to go on (`teacher_gain` below ``min_gain_points``
    without ``allow_weak``) or the cache is off. Returns ``{"metrics", "cache"}`` (cache: `prepare_cache`'s
    answer or None)."""

    board = ProgressFile(progress_path) if progress_path else None

    def progress(stage: str, **fields: Any) -> None:
        if board is not None:
            board.write(stage, **fields)

    metrics = prepare_teacher(config, directory, tracking, progress=progress)
    folder = TeacherFolder(directory)
    gain = teacher_gain(folder.info, metrics, points_per_unit(folder.info["metric"]))
    weak = gain is not None and gain < config.teacher.min_gain_points and not config.teacher.allow_weak
    if weak or not config.compute.teacher_cache.enabled:
        return {"metrics": metrics, "cache": None}
    started = time.time()
    cache = prepare_cache(config, directory, trials, progress=progress)
    return {"metrics": metrics, "cache": {**cache, "seconds": round(time.time() - started, 1)}}


def _cache_plan(config: StudyConfig, folder: TeacherFolder, task, family, trials: list[TrialSpec], data, collate):
    """What the cache for `trials` holds (the union of their teacher layers, the logits when KD is on) and its
    size; None when no trial reads the teacher."""
    from transformers import AutoConfig

    depths = folder.depths
    students = student_depths(config, depths)
    epochs = math.ceil(config.distill.train.epochs)
    maps = [m for trial in trials for m in maps_by_epoch(config, trial, students, depths, family.kind, epochs).values()]
    layers = tc.needed_layers(maps)
    logits = config.distill.loss.kd > 0
    if not layers and not logits:
        return None
    sequence_level = task.sequence_level_logits
    logit_width = (
        len(folder.info["label_names"])
        if sequence_level
        else int(AutoConfig.from_pretrained(folder.path / "model").vocab_size)
    )
    return tc.plan(
        family,
        data,
        collate,
        layers,
        width=folder.info["width"],
        logits=logits,
        logit_width=logit_width,
        sequence_level=sequence_level,
        dtype=config.compute.teacher_cache.dtype,
        final_norm=config.distill.final_norm,
    )


def prepare_cache(config: StudyConfig, directory: str, trials: list[TrialSpec], progress=None) -> dict[str, Any]:
    """Stage 1b: size the shared teacher cache for `trials`, and build it when it fits the budget.

    Returns ``{"path": folder or None, "plan": description, "reason": why not built}``. A cache that
    is already built is reused; one over ``compute.teacher_cache.budget_gb`` is not built (trials then
    run the teacher live).
    """

    settings = config.compute.teacher_cache
    folder = TeacherFolder(directory)
    task = folder.task(config)
    family = FAMILIES.get(folder.info["family"])
    data, tokenizer = folder.data()["train"], folder.tokenizer()
    cache_plan = _cache_plan(config, folder, task, family, trials, data, task.collator(tokenizer))
    if cache_plan is None:
        return {"path": None, "plan": "nothing to cache", "reason": "no trial reads the teacher"}
    target = folder.path / "cache" / cache_plan.key(teacher_key(config))
    described = cache_plan.describe()
    if (target / "index.json").is_file():
        return {"path": str(target), "plan": described, "reason": "reused"}
    if cache_plan.bytes > settings.budget_gb * 2**30:
        return {
            "path": None,
            "plan": described,
            "reason": f"over compute.teacher_cache.budget_gb ({settings.budget_gb:g} GiB): trials run the teacher live",
        }
    device = default_device()
    use_assigned_cpus()
    started = time.time()

    def on_batch(done: int, total: int) -> None:
        if progress is not None:
            progress("teacher cache", what="examples", done=done, of=total)

    tc.build(
        folder.model(task, device),
        family,
        data,
        task.collator(tokenizer),
        cache_plan,
        target,
        device=device,
        fingerprint=getattr(data, "_fingerprint", ""),
        on_batch=on_batch,
    )
    for stale in (folder.path / "cache").iterdir():  # caches for an earlier grid (a grown study needs more layers)
        if stale != target and not stale.name.endswith(".tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    return {"path": str(target), "plan": described, "reason": f"built in {time.time() - started:.0f} s"}


def inputs_at_limit(task, data) -> dict[str, int]:
    """Per split, how many inputs reached the task's input length limit (truncated, or exactly that long):
    longer texts are truncated to the limit, as usual, and counted here so it is never silent."""
    limit = task.input_length_limit()
    return {split: sum(len(ids) >= limit for ids in column(data[split], "input_ids")) for split in data}
