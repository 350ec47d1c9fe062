"""The Ray Train worker function of one trial: it wraps the plain loop (`raykd.train.loop`).

Every rank: build the student from the cached teacher (trial init and seed), resolve the layer
maps (strategy + seed, re-drawn per epoch for RAIL), train with CE + KD + weighted hidden loss over a
`DistributedSampler` seeded by the trial seed (same seed = same data order across arms), validate
every `eval_every` steps and at each epoch end, checkpoint, and report through `ray.train.report`.
At the end the best-on-validation weights are evaluated on the test split. Rank 0 logs to MLflow.

A checkpoint holds ``student/`` (config + safetensors, projections included), ``best.safetensors``,
``optimizer.pt``, ``scheduler.pt``, ``state.json`` (epoch, step, step in epoch, best) and ``rng.pt``;
a restarted worker resumes mid-epoch by skipping the batches it already trained on.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import datasets
import torch
from safetensors.torch import load_file, load_model, save_file
from torch.utils.data import DataLoader, DistributedSampler
from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

from raykd import tracking as tr
from raykd.config import StudyConfig, flatten
from raykd.families import family_of
from raykd.losses import LossConfig, attach_projections, projection_keys
from raykd.models import auto_class
from raykd.strategies import is_per_epoch, layer_maps
from raykd.student import build_student, save_student, student_metadata
from raykd.tasks import build_task
from raykd.train.loop import autocast, distill_steps, resolve_precision, unwrap
from raykd.train.teacher_cache import INDEX, CachedTeacher, with_index
from raykd.train.optim import make_optimizer, total_steps

# Test-only fault injection: "<trial_id>:<step>" makes rank 0's process die at that step, once per
# study (a marker file in the study folder remembers it fired), so retries and resumes can be tested;
# "<trial_id>:<step>:always" makes it die there on every attempt (marker files <trial_id>.1, .2, ...).
# Several, comma-separated, for several trials.
# It waits a few seconds first: Ray Train registers a reported checkpoint when its controller polls
# the workers, and a death within a second of the report (tiny models take ~30 ms a step) would test
# that race rather than recovery from the last checkpoint.
FAULT_DELAY_S = 3.0
FAULT_ENV = "RAYKD_TEST_FAIL_AT_STEP"


def trial_layer_maps(config: StudyConfig, trial: dict, student_depths, teacher_depths, kind: str, epoch: int = 0):
    """The layer maps of a trial at an epoch (fixed for every strategy but the per-epoch ones)."""
    match = config.distill.match_embeddings
    if match is None:
        match = kind != "decoder"
    options = dict(config.sweep.strategy_options.get(trial["strategy"], {}))
    if is_per_epoch(trial["strategy"]):
        options["epoch"] = epoch
    return layer_maps(trial["strategy"], student_depths, teacher_depths, seed=trial["seed"], match_embeddings=match,
                      **options)


def train_trial(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    entered = time.perf_counter()
    config = StudyConfig.model_validate(loop_config["config"])
    trial, teacher_path = loop_config["trial"], Path(loop_config["teacher_dir"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config.compute.cpus_per_worker)))
    info = json.loads((teacher_path / "info.json").read_text())

    task = build_task(config.task)
    task.restore(info)
    tokenizer = _tokenizer(teacher_path)
    teacher = auto_class(task).from_pretrained(teacher_path / "model").to(device).eval()
    data = datasets.load_from_disk(str(teacher_path / "data"))
    family = family_of(teacher)
    student = build_student(teacher, depth=config.student.depth, width=config.student.width, init=trial["init"],
                            copy_rule=config.student.copy_rule, seed=trial["seed"])
    teacher_depths, student_depths = family.depths(teacher.config), family.depths(student.config)
    train = config.distill.train
    epochs = math.ceil(train.epochs)
    maps_by_epoch = {e: trial_layer_maps(config, trial, student_depths, teacher_depths, family.kind, e)
                     for e in range(epochs if is_per_epoch(trial["strategy"]) else 1)}
    attach_projections(student, projection_keys(maps_by_epoch.values()), family.width(teacher.config))
    student.to(device)
    model = student if world == 1 else ray.train.torch.prepare_model(
        student, parallel_strategy_kwargs={"find_unused_parameters": True})

    precision = resolve_precision(config.compute.precision, device)
    cached = _cached_teacher(loop_config.get("teacher_cache"), family, teacher_depths, maps_by_epoch, config, trial,
                             data["train"])
    train_data, collate = data["train"], task.collator(tokenizer)
    if cached is not None:  # trials read the teacher's outputs by example index instead of running it
        teacher = cached
        train_data = train_data.add_column(INDEX, list(range(len(train_data))))
        collate = with_index(collate)
    if train.group_by_length:
        sampler = DistributedLengthGroupedSampler(train.batch_size, num_replicas=world, rank=rank, seed=trial["seed"],
                                                  lengths=[len(ids) for ids in train_data["input_ids"]])
    else:
        sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=trial["seed"])
    loader = DataLoader(train_data, batch_size=max(1, train.batch_size // world), sampler=sampler, collate_fn=collate)
    steps = total_steps(train, len(loader))
    optimizer, scheduler = make_optimizer(model.parameters(), train, steps)
    loss = LossConfig(hidden=trial["weight"], **config.distill.loss.model_dump())
    state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "best": None, "best_step": None, "evaluated_at": None}
    best_weights: dict[str, torch.Tensor] | None = None
    checkpoint = ray.train.get_checkpoint()
    discarded = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            restored = _restore(Path(folder), student, optimizer, scheduler)
        if isinstance(restored, str):  # unreadable: the trial starts over rather than crash the study
            discarded, checkpoint = restored, None
        else:
            state, best_weights = restored

    client = run_id = None
    if rank == 0 and loop_config.get("tracking"):
        tracking = tr.Tracking(**loop_config["tracking"])
        client, run_id = tracking.client(), loop_config["run_id"]
        maps0 = maps_by_epoch[0]
        tr.log_params(client, run_id, {
            **flatten(config), "trial.strategy": trial["strategy"], "trial.init": trial["init"],
            "trial.weight": trial["weight"], "trial.seed": trial["seed"], "trial.layer_map": maps0,
            "trial.copied_layers": student_metadata(student).get("copied_layers", {}),
            "teacher.depths_loaded": teacher_depths, "world_size": world, **loop_config.get("versions", {}),
            "trial.precision": precision, "trial.teacher": "cache" if cached is not None else "live",
        })
        if discarded is not None:
            tr.set_tags(client, run_id, {"raykd.checkpoint_discarded": discarded[:5000]})
        if checkpoint is not None:
            tr.set_tags(client, run_id, {"raykd.resumed_from_step": str(state["step"])})
        else:
            client.log_dict(run_id, {"layer_maps": {str(e): m for e, m in maps_by_epoch.items()},
                                     "student": student_metadata(student), "trial": trial}, "layer_map.json")

    metric, higher = task.metric, task.higher_is_better
    eval_every = train.eval_every
    fail_at = os.environ.get(FAULT_ENV, "")
    fault_marker = Path(loop_config["study_dir"]) / "faults" / trial["trial_id"]
    started, examples = time.perf_counter(), 0
    setup_s = started - entered  # process start excluded: imports, model and data loading, restore

    def better(value: float) -> bool:
        return state["best"] is None or (value > state["best"] if higher else value < state["best"])

    def validate_and_report(final: bool = False, status: str = "running") -> None:
        nonlocal best_weights, started, examples
        report = {"epoch": state["epoch"], "step": state["step"], "status": status}
        if status != "diverged" and state["evaluated_at"] != state["step"]:
            state["evaluated_at"] = state["step"]
            with autocast(precision, device):
                scores = task.evaluate(unwrap(model), tokenizer, data["validation"], device=device)
            report.update({f"validation/{k}": v for k, v in scores.items()})
            if better(scores[metric]):
                state["best"], state["best_step"] = scores[metric], state["step"]
                best_weights = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
        if final and status == "finished" and best_weights is not None:
            unwrap(model).load_state_dict(best_weights)
            with autocast(precision, device):
                scores = task.evaluate(unwrap(model), tokenizer, data["test"], device=device)
            report.update({f"test/{k}": v for k, v in scores.items()})
        report.update({"best_validation": state["best"], "best_step": state["best_step"], "final": final})
        if final:  # where the worker's time went (orchestration overhead = trial wall time - worker_s)
            report.update({"time/worker_s": time.perf_counter() - entered, "time/setup_s": setup_s})
        if client is not None:
            numbers = {k: v for k, v in report.items() if isinstance(v, (int, float)) and v is not None
                       and not isinstance(v, bool) and k not in ("epoch", "step")}
            tr.log_metrics(client, run_id, numbers, state["step"], int(time.time() * 1000))
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                _save(Path(folder), unwrap(model), best_weights, optimizer, scheduler, {**state, "final": final})
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(report, checkpoint=saved)

    for epoch in range(state["epoch"], epochs):
        if state["step"] >= steps:  # restored from a trial's final checkpoint: nothing left to train
            break
        sampler.set_epoch(epoch)
        maps = maps_by_epoch.get(epoch, maps_by_epoch[0])
        remaining = itertools.islice(loader, state["step_in_epoch"], None)
        for result in distill_steps(teacher, model, remaining, optimizer, layer_maps=maps, loss=loss, epoch=epoch,
                                    scheduler=scheduler, grad_clip=train.grad_clip,
                                    final_norm=config.distill.final_norm, device=device, precision=precision):
            if rank == 0 and _fault_fires(fail_at, trial["trial_id"], state["step"], fault_marker):
                time.sleep(FAULT_DELAY_S)
                os._exit(1)  # fault injection (tests): the worker process dies mid-trial
            state["step"] += 1
            state["step_in_epoch"] += 1
            examples += result.examples * world
            if not result.finite:
                validate_and_report(final=True, status="diverged")
                return
            if client is not None and state["step"] % train.log_every == 0:
                elapsed = time.perf_counter() - started
                tr.log_metrics(client, run_id, {
                    **{f"train/{k}": v for k, v in result.terms.items()},
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/examples_per_s": examples / max(elapsed, 1e-9),
                }, state["step"], int(time.time() * 1000))
                started, examples = time.perf_counter(), 0
            if state["step"] >= steps:
                break
            if eval_every and state["step"] % eval_every == 0:
                validate_and_report()
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        if state["step"] >= steps:
            break
        validate_and_report()
    validate_and_report(final=True, status="finished")


def _fault_fires(setting: str, trial_id: str, step: int, marker: Path) -> bool:
    """Whether the test-only fault (`FAULT_ENV`) fires now; records each firing in a marker file."""
    wanted = {f"{trial_id}:{step}", f"{trial_id}:{step}:always"} & set(setting.split(","))
    if not wanted:
        return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    if wanted.pop().endswith(":always"):
        n = len(list(marker.parent.glob(f"{trial_id}.*"))) + 1
        (marker.parent / f"{trial_id}.{n}").touch()
        return True
    if marker.exists():
        return False
    marker.touch()
    return True


def _cached_teacher(folder, family, teacher_depths, maps_by_epoch, config: StudyConfig, trial,
                    train_data) -> CachedTeacher | None:
    """The study's teacher cache when it was built from this training split and holds everything this
    trial reads from the teacher, else None (the trial runs the teacher live)."""
    if not folder:
        return None
    cache = CachedTeacher(folder, family, teacher_depths)
    built_from = cache.index.get("fingerprint")
    if built_from and built_from != getattr(train_data, "_fingerprint", built_from):
        warnings.warn(f"teacher cache {folder} was built from other training data; running the teacher live",
                      stacklevel=2)
        return None
    need_logits = config.distill.loss.kd > 0
    if all(cache.covers(maps if trial["weight"] > 0 else {}, need_logits) for maps in maps_by_epoch.values()):
        return cache
    warnings.warn(f"teacher cache {folder} lacks layers or logits trial {trial['trial_id']} needs; "
                  "running the teacher live", stacklevel=2)
    return None


def _tokenizer(teacher_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(teacher_path / "model")


def _save(folder: Path, student, best_weights, optimizer, scheduler, state: dict) -> None:
    save_student(student, folder / "student")
    if best_weights is not None:
        save_file({k: v.contiguous() for k, v in best_weights.items()}, str(folder / "best.safetensors"))
    if not state.get("final"):  # a final checkpoint resumes nothing: no optimiser state to write and copy
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, folder / "rng.pt")
    (folder / "state.json").write_text(json.dumps(state))


def _restore(folder: Path, student, optimizer, scheduler):
    """Load a checkpoint into the freshly built student and optimiser (weights-only loading).

    Every file is read and checked before anything is applied, so a truncated or corrupt checkpoint
    leaves the student untouched: it returns the reason (a string, also warned) and the trial starts over.
    Otherwise it returns (state, best weights).
    """
    try:
        load_file(str(folder / "student" / "model.safetensors"))  # readable and complete
        state = json.loads((folder / "state.json").read_text())
        optimizer_state = scheduler_state = rng = None
        if not state.get("final"):  # a final checkpoint (trial ended) holds weights only
            optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True)
            scheduler_state = torch.load(folder / "scheduler.pt", weights_only=True)
            rng = torch.load(folder / "rng.pt", weights_only=True)["torch"]
        best = None
        if (folder / "best.safetensors").is_file():
            loaded = load_file(str(folder / "best.safetensors"))
            best = {k: loaded[k] for k in student.state_dict()}
    except Exception as error:  # noqa: BLE001 - any unreadable file means the same: do not use this checkpoint
        reason = f"checkpoint {folder.name} is unreadable ({type(error).__name__}: {str(error)[:300]}); starting over"
        warnings.warn(reason, stacklevel=2)
        return reason
    load_model(student, str(folder / "student" / "model.safetensors"), strict=True)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(rng)
    return state, best
