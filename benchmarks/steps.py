"""Benchmarks 1-3: the distillation step, against its baselines, on the default study's teacher and data.

1. ``worker_vs_loop``: examples/s of the step as the Ray Train worker runs it (`TorchTrainer` over
   `raykd.train.worker.train_trial`, MLflow logging on) vs the plain loop (`distill_steps`, no Ray, no MLflow)
   on the same batches, threads and precision.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from raykd.config import StudyConfig, load_config  # noqa: E402
from raykd.families import family_of  # noqa: E402
from raykd.losses import LossConfig  # noqa: E402
from raykd.models import auto_class  # noqa: E402
from raykd.student import build_student  # noqa: E402
from raykd.sweep import trial_grid  # noqa: E402
from raykd.tasks import build_task  # noqa: E402
from raykd.train.loop import autocast, distill_steps, resolve_precision  # noqa: E402
from raykd.train.optim import make_optimizer  # noqa: E402
from raykd.train.teacher import prepare_cache, prepare_teacher, teacher_dir  # noqa: E402
from raykd.train.teacher_cache import INDEX, CachedTeacher, with_index  # noqa: E402
from raykd.train.worker import trial_layer_maps  # noqa: E402

TRIAL = {"trial_id": "bench-forward-random-w3-s0", "strategy": "forward", "init": "random", "weight": 3.0, "seed": 0}


class Setup:
    """The default study's teacher stage, cache, data and one trial's student and layer maps."""

    def __init__(self, config_path: str, workdir: str, steps: int, threads: int) -> None:
        config = load_config(config_path)
        train = config.distill.train.model_copy(update={"max_steps": steps, "log_every": 10, "eval_every": None})
        self.config: StudyConfig = config.model_copy(update={"distill": config.distill.model_copy(update={"train": train})})
        self.root = Path(workdir) / config.name
        self.tdir = teacher_dir(self.root, config)
        torch.set_num_threads(os.cpu_count() or 1)
        prepare_teacher(config, str(self.tdir))
        self.cache_path = prepare_cache(config, str(self.tdir), trial_grid(config))["path"]
        torch.set_num_threads(threads)
        self.threads, self.steps = threads, steps
        info = json.loads((self.tdir / "info.json").read_text())
        self.task = build_task(config.task)
        self.task.restore(info)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.tdir / "model")
        self.teacher = auto_class(self.task).from_pretrained(self.tdir / "model").eval()
        self.family = family_of(self.teacher)
        self.data = datasets.load_from_disk(str(self.tdir / "data"))
        self.depths = self.family.depths(self.teacher.config)
        self.maps = trial_layer_maps(config, TRIAL, {s: config.student.depth for s in self.depths}, self.depths,
                                     self.family.kind)
        self.loss = LossConfig(hidden=TRIAL["weight"], **config.distill.loss.model_dump())
        self.precision = resolve_precision(config.compute.precision)

    def batches(self, indexed: bool = False) -> list[dict]:
        """The trial's first `steps` batches, in the order the worker draws them (length-grouped, seed 0)."""
        from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

        data, collate = self.data["train"], self.task.collator(self.tokenizer)
        if indexed:
            data, collate = data.add_column(INDEX, list(range(len(data)))), with_index(collate)
        train = self.config.distill.train
        sampler = DistributedLengthGroupedSampler(train.batch_size, num_replicas=1, rank=0, seed=TRIAL["seed"],
                                                  lengths=[len(ids) for ids in data["input_ids"]])
        loader = DataLoader(data, batch_size=train.batch_size, sampler=sampler, collate_fn=collate)
        out = []
        while len(out) < self.steps:
            out.extend(loader)
        return out[: self.steps]

    def student(self):
        return build_student(self.teacher, depth=self.config.student.depth, init=TRIAL["init"], seed=TRIAL["seed"])

    def loop(self, teacher, batches) -> tuple[list[float], list[dict], torch.nn.Module]:
        """Step seconds and loss terms of raykd's loop over `batches`; returns the trained student."""
        torch.manual_seed(0)
        student = self.student()
        optimizer, scheduler = make_optimizer(student.parameters(), self.config.distill.train, self.steps)
        seconds, terms = [], []
        for result in distill_steps(teacher, student, batches, optimizer, layer_maps=self.maps, loss=self.loss,
                                    scheduler=scheduler, grad_clip=self.config.distill.train.grad_clip,
                                    precision=self.precision):
            seconds.append(result.seconds)
            terms.append(result.terms)
        return seconds, terms, student

    def accuracy(self, student) -> float:
        with autocast(self.precision, "cpu"):
            return self.task.evaluate(student, self.tokenizer, self.data["validation"])[self.task.metric]


def examples_per_s(seconds: list[float], batch: int, warmup: int) -> float:
    """Over the steps after the warm-up: length-grouped batches vary in length, so totals, not medians."""
    return batch * len(seconds[warmup:]) / sum(seconds[warmup:])


def bench_worker_vs_loop(s: Setup, warmup: int) -> dict:
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from raykd import tracking as tr
    from raykd.config import flatten
    from raykd.study import start_ray
    from raykd.train.worker import train_trial

    batch = s.config.distill.train.batch_size
    loop_seconds, _, _ = s.loop(s.teacher, s.batches())
    work = Path(tempfile.mkdtemp(prefix="raykd-bench-worker-"))
    config = s.config.model_copy(update={"compute": s.config.compute.model_copy(update={"cpus_per_worker": float(s.threads)})})
    start_ray()
    tracking = tr.open_study(work, "bench", "bench-uid", flatten(config))
    run_id = tr.child_run(tracking, role="trial", key=TRIAL["trial_id"], run_name=TRIAL["trial_id"])
    loop_config = {"config": config.model_dump(mode="json"), "teacher_dir": str(s.tdir), "teacher_cache": None,
                   "study_dir": str(work), "tracking": tracking.__dict__, "trial": TRIAL, "run_id": run_id}
    trainer = TorchTrainer(train_trial, train_loop_config=loop_config,
                           scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": s.threads}),
                           run_config=ray.train.RunConfig(name="bench", storage_path=str(work / "ray")))
    trainer.fit()
    history = tracking.client().get_metric_history(run_id, "train.examples_per_s")
    windows = {m.step: m.value for m in history}  # examples/s over the 10 steps ending at each logged step
    # Same batches in the same order (same sampler and seed) on both sides: compare the time the steps after
    # the warm-up took in all (length-grouped batches differ a lot in length, so per-window rates vary).
    logged = sorted(step for step in windows if step > warmup)
    worker_s = sum(10 * batch / windows[step] for step in logged)
    loop_s = sum(loop_seconds[logged[0] - 10: logged[-1]])
    overhead = worker_s / loop_s - 1
    return {"steps_compared": f"{logged[0] - 9}-{logged[-1]}", "loop_s": round(loop_s, 2), "worker_s": round(worker_s, 2),
            "loop_examples_per_s": round(10 * batch * len(logged) / loop_s, 2),
            "worker_examples_per_s": round(10 * batch * len(logged) / worker_s, 2),
            "worker_windows": {k: round(v, 1) for k, v in sorted(windows.items())}, "overhead": round(overhead, 4),
            "target_overhead": 0.10, "met": overhead <= 0.10}


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
            kd = F.kl_div(F.log_softmax(outputs.logits.float() / t, -1), F.log_softmax(teacher_outputs.logits.float() / t, -1),
                          log_target=True, reduction="batchmean") * t * t
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
    columns = [c for c in s.data["train"].column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=train.batch_size, max_steps=s.steps, learning_rate=train.lr,
            weight_decay=train.weight_decay, warmup_steps=int(train.warmup_ratio * s.steps), max_grad_norm=train.grad_clip,
            bf16=s.precision == "bf16", use_cpu=True, report_to=[],
            train_sampling_strategy="group_by_length" if train.group_by_length else "random",
            save_strategy="no", eval_strategy="no", logging_steps=10, dataloader_num_workers=0, seed=TRIAL["seed"],
            disable_tqdm=True)
        torch.manual_seed(0)
        trainer = DistillTrainer(model=s.student(), args=args, train_dataset=s.data["train"].select_columns(columns),
                                 data_collator=DataCollatorWithPadding(s.tokenizer), callbacks=[timer])
        trainer.train()
    torch.set_num_threads(s.threads)  # Trainer may have changed it
    batch = train.batch_size
    hf = examples_per_s(timer.seconds, batch, warmup)
    live_seconds, _, _ = s.loop(s.teacher, s.batches())
    live = examples_per_s(live_seconds, batch, warmup)
    out = {"hf_trainer_examples_per_s": round(hf, 2), "raykd_live_examples_per_s": round(live, 2),
           "ratio_live": round(live / hf, 3)}
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
    return {"live_step_s": round(live, 4), "cached_step_s": round(cached, 4), "ratio": round(cached / live, 3),
            "target_ratio": 0.7, "met": cached / live <= 0.7,
            "first_step_terms_live_vs_cached": first, "first_step_max_rel_diff": rel,
            "final_terms_live": {k: round(v, 4) for k, v in live_terms[-1].items()},
            "final_terms_cached": {k: round(v, 4) for k, v in cached_terms[-1].items()},
            "validation_accuracy_live": round(acc_live, 4), "validation_accuracy_cached": round(acc_cached, 4),
            "cache": {"dtype": index["dtype"], "layers": index["layers"], "mib": round(index["bytes"] / 2**20, 1)}}


BENCHES = {"worker_vs_loop": bench_worker_vs_loop, "vs_hf_trainer": bench_vs_hf_trainer, "teacher_cache": bench_teacher_cache}


def run(names, *, config: str, workdir: str, steps: int, threads: int, warmup: int) -> dict:
    setup = Setup(config, workdir, steps, threads)
    out = {"setup": {"config": config, "steps": steps, "threads": threads, "warmup": warmup, "precision": setup.precision,
                     "batch_size": setup.config.distill.train.batch_size, "layer_map": setup.maps,
                     "group_by_length": setup.config.distill.train.group_by_length}}
    for name in names:
        started = time.time()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        out[name] = BENCHES[name](setup, warmup)
        out[name]["bench_seconds"] = round(time.time() - started, 1)
        print(f"[bench] {name}: {out[name]}", file=sys.stderr, flush=True)
    return out
