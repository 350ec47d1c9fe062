"""Analyse a finished (or partly finished) study: trials from MLflow, checkpoints from Ray storage.

`analyze_study(study_dir)` is the whole analysis as a plain function; `AnalysisActor` runs it as a
Ray actor at the end of a study (or on a cluster whose study folder is on shared storage).
``python studies/analyze.py --study DIR`` runs it standalone, also against a remote tracking server
(``MLFLOW_TRACKING_URI``).

MLflow is the source of truth for which trials exist and how they ended; the Ray Train storage
(``<study>/ray/train/<trial id>/checkpoint_*``) holds the trained students for the angle statistics.
Whatever is missing (no checkpoints, a single strategy, one seed) leaves a partial report with the
reason in its notes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from raykd.config import ConfigError, StudyConfig, apply_override, parse_config
from raykd.sweep import TUNE_PREFIX

REPORT_DIR = "report"


class AnalysisError(ValueError):
    """The study cannot be analysed (missing folder, no tracking data, no trials)."""


def load_study(study_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, StudyConfig, str]:
    """(root, config, study uid) of a study folder written by `raykd.study.run_study`."""
    root = Path(study_dir).expanduser().resolve()
    if not root.is_dir():
        raise AnalysisError(f"study folder {str(root)!r} does not exist")
    state, saved = root / "study.json", root / "config.yaml"
    if not state.is_file() or not saved.is_file():
        raise AnalysisError(f"{root} is not a raykd study folder (no study.json / config.yaml); pass "
                            "--study <output dir>/<study name>")
    data = yaml.safe_load(saved.read_text()) or {}
    for override in overrides:
        apply_override(data, override)
    try:
        config = parse_config(data, source=str(saved))
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    return root, config, json.loads(state.read_text())["uid"]


def fetch_trials(tracking_uri: str, config: StudyConfig, uid: str, metric: str) -> dict[str, Any]:
    """The study's parent run, teacher metrics and one row per trial run, from MLflow."""
    from mlflow.tracking import MlflowClient

    from raykd import tracking as tr

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(config.name)
    if experiment is None:
        raise AnalysisError(f"tracking store {tracking_uri} has no experiment {config.name!r}: the study never "
                            "started there (set MLFLOW_TRACKING_URI to where it tracked)")
    parent = tr.find_run(client, experiment.experiment_id, {tr.STUDY_UID: uid, tr.ROLE: "study"})
    if parent is None:
        raise AnalysisError(f"experiment {config.name!r} has no parent run of study uid {uid}")
    runs = tr.study_runs(client, experiment.experiment_id, uid, "trial")
    teacher = {}
    for run in tr.study_runs(client, experiment.experiment_id, uid, "teacher"):
        teacher.update({k.removeprefix("teacher.").replace(".", "/", 1): v for k, v in run.data.metrics.items()
                        if k.startswith("teacher.")})
    trials = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if tags.get(tr.TRIAL_ID, "").startswith(TUNE_PREFIX):
            continue  # weight-search trials chose the weights; the study's answer is the seeded grid after them
        status = tags.get(tr.STATUS) or ("running" if run.info.status == "RUNNING" else "unfinished")
        value = metrics.get(f"test.{metric}")
        trials.append({"trial_id": tags.get(tr.TRIAL_ID), "strategy": tags.get("raykd.strategy"),
                       "init": tags.get("raykd.init"), "weight": float(tags.get("raykd.weight", "nan")),
                       "seed": int(tags.get("raykd.seed", -1)), "status": status,
                       "metric": value if status == "finished" else None,
                       "best_validation": metrics.get("best_validation"), "run_id": run.info.run_id})
    trials.sort(key=lambda t: (t["strategy"] or "", t["init"] or "", t["weight"], t["seed"]))
    return {"client": client, "parent_run_id": parent, "teacher": teacher, "trials": trials}


def with_chosen_weights(trials: list[dict], chosen: dict[str, float]) -> list[dict]:
    """The trials of the weight the tests used in each cell (`stats.select_weights`; all when one weight)."""
    weight_of = {tuple(cell.split("/")): w for cell, w in chosen.items()}
    return [t for t in trials if weight_of.get((t["strategy"], t["init"]), t["weight"]) == t["weight"]]


def latest_checkpoint(root: Path, trial_id: str) -> Path | None:
    """The newest complete checkpoint of a trial's Ray Train run, or None."""
    folder = root / "ray" / "train" / trial_id
    found = sorted(p for p in folder.glob("checkpoint_*") if (p / "state.json").is_file()
                   and (p / "student" / "model.safetensors").is_file())
    return found[-1] if found else None


def measure_angles(root: Path, config: StudyConfig, trials: list[dict], *, device: str = "cpu",
                   notes: list[str]) -> tuple[dict | None, list[dict]]:
    """Angle statistics at init and trained for one trial per (strategy, init) cell per chosen seed."""
    import datasets
    import torch
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from raykd.analysis.angles import student_angles, summarise, teacher_states
    from raykd.families import family_of
    from raykd.losses import attach_projections, projection_keys
    from raykd.models import auto_class
    from raykd.student import build_student, load_student
    from raykd.tasks import build_task
    from raykd.train.teacher import teacher_dir
    from raykd.train.worker import trial_layer_maps

    settings = config.analysis.angles
    if not settings.enabled:
        notes.append("angles: disabled (analysis.angles.enabled: false)")
        return None, []
    t_dir = teacher_dir(root, config)
    if not (t_dir / "metrics.json").is_file():
        notes.append(f"angles: the teacher stage's cache {t_dir} is missing; angles not measured")
        return None, []
    seeds = settings.seeds if settings.seeds is not None else config.sweep.seeds[:1]
    chosen: dict[tuple[str, str, int], dict] = {}
    for t in trials:
        if t["status"] == "finished" and t["seed"] in seeds:
            key = (t["strategy"], t["init"], t["seed"])
            if key not in chosen or (t.get("best_validation") or -math.inf) > (chosen[key].get("best_validation") or -math.inf):
                chosen[key] = t
    if not chosen:
        notes.append(f"angles: no finished trial at seeds {seeds}; angles not measured")
        return None, []

    info = json.loads((t_dir / "info.json").read_text())
    task = build_task(config.task)
    task.restore(info)
    tokenizer = AutoTokenizer.from_pretrained(t_dir / "model")
    teacher = auto_class(task).from_pretrained(t_dir / "model").to(device).eval()
    family = family_of(teacher)
    validation = datasets.load_from_disk(str(t_dir / "data"))["validation"]
    examples = validation.select(range(min(settings.examples, len(validation))))
    loader = DataLoader(examples, batch_size=settings.batch_size, collate_fn=task.collator(tokenizer))
    final_norm = config.distill.final_norm
    cached = teacher_states(teacher, loader, final_norm=final_norm, device=device)
    teacher_depths = family.depths(teacher.config)
    width = family.width(teacher.config)

    at_init_cache: dict[tuple, dict] = {}
    measurements = []
    for (strategy, init, seed), t in sorted(chosen.items()):
        checkpoint = latest_checkpoint(root, t["trial_id"])
        if checkpoint is None:
            notes.append(f"angles: no checkpoint for trial {t['trial_id']} under {root / 'ray' / 'train'}; skipped")
            continue
        trained = load_student(checkpoint / "student")
        if (checkpoint / "best.safetensors").is_file():  # the weights that were tested
            best = load_file(str(checkpoint / "best.safetensors"))
            trained.load_state_dict(best, strict=True)
        trained.to(device)
        keys = sorted(trained.raykd_projections.layers) if hasattr(trained, "raykd_projections") else []
        init_key = (init, seed, tuple(keys))
        if init_key not in at_init_cache:
            student = build_student(teacher, depth=config.student.depth, width=config.student.width, init=init,
                                    copy_rule=config.student.copy_rule, seed=seed)
            if keys:
                maps = trial_layer_maps(config, {"strategy": strategy, "seed": seed}, family.depths(student.config),
                                        teacher_depths, family.kind)
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    attach_projections(student, projection_keys(maps), width)
            at_init_cache[init_key] = student_angles(student.to(device), cached, final_norm=final_norm, device=device)
        measurements.append({"strategy": strategy, "init": init, "seed": seed, "trial_id": t["trial_id"],
                             "at_init": at_init_cache[init_key],
                             "trained": student_angles(trained, cached, final_norm=final_norm, device=device)})
    if not measurements:
        return None, []
    notes.append(f"angles: {len(measurements)} trained students (one per strategy x init at seeds {seeds}), "
                 f"{len(examples)} validation examples; at init = the same student before its first step "
                 "(projections, when widths differ, freshly drawn)")
    return summarise(measurements), measurements


def analyze_study(study_dir: str | Path, *, overrides: list[str] | tuple[str, ...] = (), tracking_uri: str | None = None,
                  device: str | None = None, log_to_mlflow: bool = True, quiet: bool = False) -> dict[str, Any]:
    """The whole analysis of a study folder; writes ``<study>/report/`` and returns the summary."""
    import torch

    from raykd import tracking as tr
    from raykd.analysis.report import build_summary, verdict_block, write_report
    from raykd.analysis.stats import analyze_trials, points_per_unit
    from raykd.tasks import build_task

    started = time.time()
    root, config, uid = load_study(study_dir, overrides)
    uri = tracking_uri or tr.tracking_uri(root)
    tr.check_reachable(uri)
    task = build_task(config.task)
    metric, higher = task.metric, task.higher_is_better
    fetched = fetch_trials(uri, config, uid, metric)
    trials = fetched["trials"]
    if not trials:
        raise AnalysisError(f"study {config.name!r} has no trial runs in {uri}: nothing to analyse yet")
    if not any(t["status"] == "finished" for t in trials):
        raise AnalysisError(f"study {config.name!r} has {len(trials)} trial run(s) and none finished "
                            f"({', '.join(sorted({t['status'] for t in trials}))}): nothing to analyse yet")
    analysis = config.analysis
    scale = points_per_unit(metric)
    stats = analyze_trials(trials, metric=metric, higher_is_better=higher, reference=analysis.reference,
                           margin=analysis.margin_points / scale, alpha=analysis.alpha)
    angle_notes: list[str] = []
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    angles, _ = measure_angles(root, config, with_chosen_weights(trials, stats["chosen_weights"]), device=device,
                               notes=angle_notes)
    setup = {
        "task": f"{config.task.type} ({metric})",
        "teacher": f"{config.teacher.source} {config.teacher.name or config.teacher.model.get('model_type')}",
        "student": f"depth {config.student.depth}, width {config.student.width or 'teacher'}, "
                   f"copy rule {config.student.copy_rule}",
        "grid": f"{len(config.sweep.strategies)} strategies {config.sweep.strategies} x inits {config.sweep.inits} "
                f"x seeds {config.sweep.seeds}, weights {config.sweep.weights} ({config.sweep.weight_search.method})",
        "loss": ", ".join(f"{k}={v}" for k, v in config.distill.loss.model_dump().items()),
        "tracking": uri,
    }
    summary = build_summary(study=config.name, metric=metric, higher_is_better=higher, teacher=fetched["teacher"],
                            trials=trials, stats=stats, angles=angles, angle_notes=angle_notes,
                            margin_points=analysis.margin_points, setup=setup)
    summary["seconds"] = round(time.time() - started, 1)
    paths = write_report(summary, root / REPORT_DIR)
    if log_to_mlflow:
        _log(fetched["client"], fetched["parent_run_id"], summary, root / REPORT_DIR)
    if not quiet:
        print(verdict_block(summary), flush=True)
        print(f"[raykd] report: {paths['report']}", flush=True)
    return {"summary": summary, "paths": {k: str(v) for k, v in paths.items()}}


def _log(client, run_id: str, summary: dict[str, Any], folder: Path) -> None:
    from raykd import tracking as tr

    client.log_artifacts(run_id, str(folder), REPORT_DIR)
    metrics = {}
    effect = summary["strategy_test"].get("strategy") or {}
    if effect.get("p") is not None:
        metrics["analysis/strategy_p"] = effect["p"]
        metrics["analysis/strategy_partial_eta2"] = effect["partial_eta2"]
    for init, v in summary["matching_vs_none"].items():
        if v["diff"] is not None:
            metrics[f"analysis/matching_minus_none_{init}"] = v["diff"]
    for init, shares in (summary.get("acute_share") or {}).items():
        for when, value in shares.items():
            if value is not None:
                metrics[f"analysis/acute_share_{init}_{when}"] = value
    tr.log_metrics(client, run_id, metrics, 0, int(time.time() * 1000))
    verdict = summary["verdict"]
    tr.set_tags(client, run_id, {f"raykd.verdict.{k}": str(v) for k, v in verdict.items() if k != "text"}
                | {"raykd.verdict": verdict["text"][:5000]})


def analysis_actor_class():
    """`AnalysisActor`: the analysis as a Ray actor (defined lazily so importing this needs no Ray)."""
    import ray

    @ray.remote
    class AnalysisActor:
        def run(self, study_dir: str, overrides: list[str] | None = None, tracking_uri: str | None = None,
                quiet: bool = True) -> dict[str, Any]:
            import torch

            from raykd.train.teacher import _assigned_cpus

            torch.set_num_threads(_assigned_cpus())
            return analyze_study(study_dir, overrides=overrides or (), tracking_uri=tracking_uri, quiet=quiet)

    return AnalysisActor
