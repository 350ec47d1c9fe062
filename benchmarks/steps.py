"""Benchmarks 1-3: the distillation step, against its baselines, on the default study's teacher and data.

1. ``worker_vs_loop``: examples/s of the step as a study runs it (a Tune trial running
   `raykd.train.worker.train_trial` through Ray Train's local mode, MLflow logging on) vs the plain loop
   (`distill_steps`, no Ray, no MLflow) on the same batches, threads and precision.
2. ``vs_hf_trainer``: the idiomatic Hugging Face `Trainer` subclass (CE + KD + hidden MSE from
   ``output_hidden_states=True``) vs raykd's loop on the same models, data, batch, steps and precision.
3. ``teacher_cache``: per-step time of the loop with the shared teacher cache vs the live teacher, and
   what the cache changes in the numbers (loss terms at the same weights; validation accuracy after training).

All three train the default study's student (3 blocks of the fine-tuned MiniLM-L6, strategy forward,
w=3, KD on) at ``--threads`` torch threads (1 = what one default-study worker gets). Means over the steps
after ``--warmup`` (the same batches on both sides where the baseline allows); the JSON holds every number. The teacher stage and cache are built on first use
(or reused) under ``--workdir``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch

from raykd.config import StudyConfig, load_config
from raykd.teacher_folder import TeacherFolder
from raykd.train.loop import autocast, distill_steps
from raykd.train.run import TeacherArtifacts, TrialRun
from raykd.train.teacher import prepare_cache, prepare_teacher
from raykd.train.teacher_cache import CachedTeacher
from raykd.trial import StudyContext, TrialSpec, trial_grid

TRIAL = TrialSpec.of("forward", "random", 3.0, 0)


class Setup:
    """The default study's teacher stage, cache, data and one trial (the real `TrialRun`, built as a study does)."""

    def __init__(
        self, config_path: str, workdir: str, steps: int, threads: int, compact_vocabulary: bool = True
    ) -> None:
        self.compact_vocabulary = compact_vocabulary  # see raykd.train.vocab
        config = load_config(config_path)
        train = config.distill.train.model_copy(update={"max_steps": steps, "log_every": 10, "eval_every": None})
        compute = config.compute.model_copy(update={"cpus_per_worker": float(threads)})
        self.config: StudyConfig = config.model_copy(
            update={"distill": config.distill.model_copy(update={"train": train}), "compute": compute}
        )
        self.root = Path(workdir) / config.name
        folder = TeacherFolder.of(self.root, config)
        torch.set_num_threads(os.cpu_count() or 1)
        prepare_teacher(config, str(folder.path))
        self.cache_path = prepare_cache(config, str(folder.path), trial_grid(config))["path"]
        torch.set_num_threads(threads)
        self.threads, self.steps = threads, steps
        self.context = StudyContext(
            config=self.config,
            study_dir=str(self.root),
            teacher_dir=str(folder.path),
            checkpoints=tempfile.mkdtemp(prefix="raykd-bench-ckpt-"),
            teacher_cache=self.cache_path,
        )
        self.artifacts = TeacherArtifacts.load(self.context, "cpu")
        run = self.trial()
        self.embedding_rows = run.embedding_rows  # None: every row trains
        self.task, self.tokenizer, self.teacher = run.task, run.artifacts.tokenizer, run.artifacts.model
        self.family, self.depths, self.maps = run.artifacts.folder.family, run.teacher_depths, run.maps[0]
        self.loss, self.precision, self.data = run.loss, run.precision, self.artifacts.data

    def trial(self, cached: bool = False) -> TrialRun:
        context = self.context if cached else StudyContext(**{**self.context.__dict__, "teacher_cache": None})
        if self.compact_vocabulary:
            return TrialRun(context, TRIAL, self.artifacts).setup()
        with mock.patch("raykd.train.run.compact_word_embeddings", return_value=False):  # baseline: all rows train
            return TrialRun(context, TRIAL, self.artifacts).setup()

    def batches(self, indexed: bool = False) -> list[dict]:
        """The trial's first `steps` batches, in the order the trial draws them (its own loader)."""
        loader = self.trial(cached=indexed).loader
        loader.sampler.set_epoch(0)
        out = []
        while len(out) < self.steps:
            out.extend(loader)
        return out[: self.steps]

    def student(self):
        return self.trial().student

    def loop(self, teacher, batches) -> tuple[list[float], list[dict], torch.nn.Module]:
        """Step seconds and loss terms of raykd's plain loop over `batches`; returns the trained student."""
        run = self.trial()
        seconds, terms = [], []
        for result in distill_steps(
            teacher,
            run.student,
            batches,
            run.optimizer,
            layer_maps=self.maps,
            loss=self.loss,
            scheduler=run.scheduler,
            grad_clip=self.config.distill.train.grad_clip,
            precision=self.precision,
        ):
            seconds.append(result.seconds)
            terms.append(result.terms)
        return seconds, terms, run.student

    def accuracy(self, student) -> float:
        with autocast(self.precision, "cpu"):
            return self.task.evaluate(student, self.tokenizer, self.data["validation"])[self.task.metric]


def examples_per_s(seconds: list[float], batch: int, warmup: int) -> float:
    """Over the steps after the warm-up: length-grouped batches vary in length, so totals, not medians."""
    return batch * len(seconds[warmup:]) / sum(seconds[warmup:])


def bench_worker_vs_loop(s: Setup, warmup: int) -> dict:
    """The trial as a study runs it (a Tune trial, Ray Train local mode in the reused actor, MLflow logging)
    against the plain loop on the same batches."""
    import ray

    from raykd import tracking as tr
    from raykd.cluster import start_ray
    from raykd.config import flatten
    from raykd.sweep import Resources, fit

    batch = s.config.distill.train.batch_size
    loop_seconds, _, _ = s.loop(s.teacher, s.batches())
    work = Path(tempfile.mkdtemp(prefix="raykd-bench-worker-"))
    start_ray()
    tracking = tr.open_study(work, "bench", "bench-uid", flatten(s.config))
    context = StudyContext(
        **{
            **s.context.__dict__,
            "teacher_cache": None,
            "tracking": tracking,
            "checkpoints": str(work / "checkpoints"),
            "study_dir": str(work),
        }
    )
    resources = Resources(1, float(s.threads), 0.0, 1, {"CPU": 0.01})
    fit(work / "ray", "bench", s.config, context, resources, [], trials=[TRIAL])
    ray.shutdown()
    run_id = tr.find_run(tracking.client(), tracking.experiment_id, {tr.ROLE: "trial", tr.TRIAL_ID: TRIAL.trial_id})
    history = tracking.client().get_metric_history(run_id, "train.examples_per_s")
    windows = {m.step: m.value for m in history}  # examples/s over the 10 steps ending at each logged step
    # Same batches in the same order (same sampler and seed) on both sides: compare the time the steps after
    # the warm-up took in all (length-grouped batches differ a lot in length, so per-window rates vary).
    logged = sorted(step for step in windows if step > warmup)
    worker_s = sum(10 * batch / windows[step] for step in logged)
    loop_s = sum(loop_seconds[logged[0] - 10 : logged[-1]])
    overhead = worker_s / loop_s - 1
    return {
        "steps_compared": f"{logged[0] - 9}-{logged[-1]}",
        "loop_s": round(loop_s, 2),
        "worker_s": round(worker_s, 2),
        "loop_examples_per_s": round(10 * batch * len(logged) / loop_s, 2),
        "worker_examples_per_s": round(10 * batch * len(logged) / worker_s, 2),
        "worker_windows": {k: round(v, 1) for k, v in sorted(windows.items())},
        "overhead": round(overhead, 4),
        "target_overhead": 0.03,
        "met": overhead <= 0.03,
    }


def hidden_mse(student_states, teacher_states, pairs, mask) -> torch.Tensor:
    """Mean over layer pairs of the MSE over valid tokens: what a user writes by hand."""
    weights = mask.unsqueeze(-1).float()
    terms = []
    for s_idx, t_idx in pairs:
        diff = (student_states[s_idx] - teacher_states[t_idx].to(student_states[s_idx].dtype)) ** 2
        terms.append((diff * weights).sum() / (weights.sum() * diff.shape[-1]))
    return torch.stack(terms).mean()


def bench_vs_hf_trainer(s: Setup, warmup: int) -> dict:
    import torch.nn.functional as F
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    pairs = s.maps["encoder"]
    loss_cfg = s.loss
    teacher = s.teacher

    class DistillTrainer(Trainer):
        """The documented way: override compute_loss, run the frozen teacher under no_grad."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs, output_hidden_states=True)
            with torch.no_grad():
                teacher_outputs = teacher(**inputs, output_hidden_states=True)
            t = loss_cfg.temperature
            kd = (
                F.kl_div(
                    F.log_softmax(outputs.logits.float() / t, -1),
                    F.log_softmax(teacher_outputs.logits.float() / t, -1),
                    log_target=True,
                    reduction="batchmean",
                )
                * t
                * t
            )
            hidden = hidden_mse(outputs.hidden_states, teacher_outputs.hidden_states, pairs, inputs["attention_mask"])
            loss = loss_cfg.ce * outputs.loss + loss_cfg.kd * kd + loss_cfg.hidden * hidden
            return (loss, outputs) if return_outputs else loss

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self.t0)

    train = s.config.distill.train
    timer = StepTimer()
    columns = [
        c for c in s.data["train"].column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")
    ]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=train.batch_size,
            max_steps=s.steps,
            learning_rate=train.lr,
            weight_decay=train.weight_decay,
            warmup_steps=int(train.warmup_ratio * s.steps),
            max_grad_norm=train.grad_clip,
            bf16=s.precision == "bf16",
            use_cpu=True,
            report_to=[],
            train_sampling_strategy="group_by_length" if train.group_by_length else "random",
            save_strategy="no",
            eval_strategy="no",
            logging_steps=10,
            dataloader_num_workers=0,
            seed=TRIAL.seed,
            disable_tqdm=True,
        )
        trainer = DistillTrainer(
            model=s.student(),
            args=args,
            train_dataset=s.data["train"].select_columns(columns),
            data_collator=DataCollatorWithPadding(s.tokenizer),
            callbacks=[timer],
        )
        trainer.train()
    torch.set_num_threads(s.threads)  # Trainer may have changed it
    batch = train.batch_size
    hf = examples_per_s(timer.seconds, batch, warmup)
    live_seconds, _, _ = s.loop(s.teacher, s.batches())
    live = examples_per_s(live_seconds, batch, warmup)
    out = {
        "hf_trainer_examples_per_s": round(hf, 2),
        "raykd_live_examples_per_s": round(live, 2),
        "ratio_live": round(live / hf, 3),
    }
    if s.cache_path:
        cached_seconds, _, _ = s.loop(CachedTeacher(s.cache_path, s.family, s.depths), s.batches(indexed=True))
        cached = examples_per_s(cached_seconds, batch, warmup)
        out.update({"raykd_cached_examples_per_s": round(cached, 2), "ratio_cached": round(cached / hf, 3)})
    out["met"] = max(out["ratio_live"], out.get("ratio_cached", 0)) >= 1.0
    return out


def bench_teacher_cache(s: Setup, warmup: int) -> dict:
    if not s.cache_path:
        return {"error": "the cache was not built (over budget?)"}
    cached_teacher = CachedTeacher(s.cache_path, s.family, s.depths)
    live_seconds, live_terms, live_student = s.loop(s.teacher, s.batches(indexed=True))
    cached_seconds, cached_terms, cached_student = s.loop(cached_teacher, s.batches(indexed=True))
    live, cached = statistics.fmean(live_seconds[warmup:]), statistics.fmean(cached_seconds[warmup:])  # same batches
    first = {k: (round(live_terms[0][k], 6), round(cached_terms[0][k], 6)) for k in ("ce", "kd", "hidden", "total")}
    rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in first.values())
    acc_live, acc_cached = s.accuracy(live_student), s.accuracy(cached_student)
    index = json.loads((Path(s.cache_path) / "index.json").read_text())
    return {
        "live_step_s": round(live, 4),
        "cached_step_s": round(cached, 4),
        "ratio": round(cached / live, 3),
        "target_ratio": 0.7,
        "met": cached / live <= 0.7,
        "first_step_terms_live_vs_cached": first,
        "first_step_max_rel_diff": rel,
        "final_terms_live": {k: round(v, 4) for k, v in live_terms[-1].items()},
        "final_terms_cached": {k: round(v, 4) for k, v in cached_terms[-1].items()},
        "validation_accuracy_live": round(acc_live, 4),
        "validation_accuracy_cached": round(acc_cached, 4),
        "cache": {"dtype": index["dtype"], "layers": index["layers"], "mib": round(index["bytes"] / 2**20, 1)},
    }


BENCHES = {
    "worker_vs_loop": bench_worker_vs_loop,
    "vs_hf_trainer": bench_vs_hf_trainer,
    "teacher_cache": bench_teacher_cache,
}


def run(names, *, config: str, workdir: str, steps: int, threads: int, warmup: int) -> dict:
    setup = Setup(config, workdir, steps, threads)
    out = {
        "setup": {
            "config": config,
            "steps": steps,
            "threads": threads,
            "warmup": warmup,
            "precision": setup.precision,
            "batch_size": setup.config.distill.train.batch_size,
            "layer_map": setup.maps,
            "group_by_length": setup.config.distill.train.group_by_length,
        }
    }
    for name in names:
        started = time.time()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        out[name] = BENCHES[name](setup, warmup)
        out[name]["bench_seconds"] = round(time.time() - started, 1)
        print(f"[bench] {name}: {out[name]}", file=sys.stderr, flush=True)
    return out
