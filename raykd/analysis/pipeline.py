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

from raykd import hooks as injected
from raykd import tracking as tr
from raykd.analysis import sequential
from raykd.analysis.angles import (
    null_contrast,  # torch: imported where angles are measured, not by the driver
    student_angles,
    summarise,
    teacher_states,
)
from raykd.analysis.report import build_summary, learning_curves, write_report
from raykd.analysis.stats import analyze_trials
from raykd.analysis.views import compact_verdict, description_markdown
from raykd.config import ConfigError, StudyConfig, apply_override, config_hash, parse_config
from raykd.console import ProgressFile
from raykd.devices import default_device, use_assigned_cpus
from raykd.tasks import build_task
from raykd.tasks.metrics import points_per_unit
from raykd.teacher_folder import TeacherFolder, teacher_gain
from raykd.train.checkpoint import CheckpointStore, read_checkpoint
from raykd.train.run import TrialRun, teacher_artifacts
from raykd.trial import NONE, TUNE_PREFIX, StudyContext, TrialSpec, arm_of
from raykd.validate import validate

REPORT_DIR = "report"
LOOKS = "looks.json"  # in the study folder: the plan and every look the analysis took (raykd.analysis.sequential)
ANGLES = "angles.json"  # in the study folder: each measured student's angles, which later looks reuse


class AnalysisError(ValueError):
    """The study cannot be analysed (missing folder, no tracking data, no trials)."""


def load_study(study_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Path, StudyConfig, str]:
    """(root, config, study uid) of a study folder written by `raykd.study.run_study`."""
    root = Path(study_dir).expanduser().resolve()
    if not root.is_dir():
        raise AnalysisError(f"study folder {str(root)!r} does not exist")
    state, saved = root / "study.json", root / "config.yaml"
    if not state.is_file() or not saved.is_file():
        raise AnalysisError(
            f"{root} is not a raykd study folder (no study.json / config.yaml); pass --study <output dir>/<study name>"
        )
    data = yaml.safe_load(saved.read_text()) or {}
    for override in overrides:
        apply_override(data, override)

    try:
        config = validate(parse_config(data, source=str(saved)), source=str(saved), files=False)
    except ConfigError as error:
        raise AnalysisError(str(error)) from None
    return root, config, json.loads(state.read_text())["uid"]


def fetch_trials(tracking_uri: str, config: StudyConfig, uid: str, metric: str) -> dict[str, Any]:
    """The study's parent run, teacher metrics and one row per trial run, from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(config.name)
    if experiment is None:
        raise AnalysisError(
            f"tracking store {tracking_uri} has no experiment {config.name!r}: the study never "
            "started there (set MLFLOW_TRACKING_URI to where it tracked)"
        )
    parent = tr.find_run(client, experiment.experiment_id, {tr.STUDY_UID: uid, tr.ROLE: "study"})
    if parent is None:
        raise AnalysisError(f"experiment {config.name!r} has no parent run of study uid {uid}")
    runs = tr.study_runs(client, experiment.experiment_id, uid, "trial")
    teacher = {}
    for run in tr.study_runs(client, experiment.experiment_id, uid, "teacher"):
        teacher.update(
            {
                k.removeprefix("teacher.").replace(".", "/", 1): v
                for k, v in run.data.metrics.items()
                if k.startswith("teacher.")
            }
        )
    trials = []
    for run in runs:
        tags = run.data.tags
        if tags.get(tr.TRIAL_ID, "").startswith(TUNE_PREFIX):
            continue  # weight-search trials chose the weights; the study's answer is the seeded grid after them
        outcome = tr.run_outcome(run, metric)
        outcome["status"] = outcome["status"] or ("running" if run.info.status == "RUNNING" else "unfinished")
        layer_map = run.data.params.get("trial.layer_map")
        trials.append(
            {
                "trial_id": tags.get(tr.TRIAL_ID),
                **arm_of(tags),
                "status": outcome["status"],
                "metric": outcome["metric"],
                "best_validation": outcome["best_validation"],
                "run_id": run.info.run_id,
                "layer_map": json.loads(layer_map) if layer_map else None,
                "curve": [
                    [m.step, m.value]
                    for m in sorted(client.get_metric_history(run.info.run_id, f"val_curve.{metric}"), key=_order)
                ],
            }
        )
    trials.sort(key=lambda t: (t["strategy"] or "", t["init"] or "", t["weight"], t["seed"]))
    return {"client": client, "parent_run_id": parent, "teacher": teacher, "trials": trials}


def _order(metric) -> tuple[int, int]:
    """By step, then time: a step logged again by a resumed attempt keeps its latest value."""
    return metric.step, metric.timestamp


def in_grid(config: StudyConfig, trial: dict) -> bool:
    """Whether a trial belongs to the study's current grid (a study may have been run with a larger one)."""

    sweep = config.sweep
    weight_ok = (
        trial["strategy"] == NONE
        or sweep.weight_search.method == "optuna"
        or any(abs(trial["weight"] - w) < 1e-12 for w in sweep.weights)
    )
    return (
        trial["strategy"] in sweep.strategies
        and trial["init"] in sweep.inits
        and trial["seed"] in sweep.seeds
        and weight_ok
    )


def coinciding_maps(trials: list[dict]) -> list[dict[str, Any]]:
    """Arms whose trials matched the very same layer pairs at the same (init, seed): they are not different
    treatments there (e.g. a random draw equal to forward), which the comparison between them should know."""
    groups: dict[tuple, dict[str, list[str]]] = {}
    for t in trials:
        if t.get("layer_map") is None or not any(t["layer_map"].values()):
            continue
        key = (t["init"], t["seed"], json.dumps(t["layer_map"], sort_keys=True))
        groups.setdefault(key, {}).setdefault(t["strategy"], []).append(t["trial_id"])
    return [
        {
            "init": init,
            "seed": seed,
            "layer_map": json.loads(maps),
            "strategies": sorted(by_strategy),
            "trials": sorted(i for ids in by_strategy.values() for i in ids),
        }
        for (init, seed, maps), by_strategy in sorted(groups.items())
        if len(by_strategy) > 1
    ]


def with_chosen_weights(trials: list[dict], chosen: dict[str, float]) -> list[dict]:
    """The trials of the weight the tests used in each cell (`stats.select_weights`; all when one weight)."""
    weight_of = {tuple(cell.split("/")): w for cell, w in chosen.items()}
    return [t for t in trials if weight_of.get((t["strategy"], t["init"]), t["weight"]) == t["weight"]]


def checkpoint_store(root: Path, trial_id: str):
    """A trial's checkpoints: where the study's `StudyContext.checkpoints` points (the study folder, or the remote
    storage it was given), recorded in ``study.json``."""

    state = json.loads((root / "study.json").read_text())
    return CheckpointStore(state.get("checkpoints") or root / "checkpoints", trial_id)


def _angle_trials_to_measure(root: Path, config: StudyConfig, trials: list[dict], notes: list[str]):
    """(teacher folder, seeds, the trial per (strategy, init, seed)) to measure; None (and a note) when angles
    are off, the teacher stage's folder is gone, or no trial finished at the angle seeds."""

    settings = config.analysis.angles
    if not settings.enabled:
        notes.append("angles: disabled (analysis.angles.enabled: false)")
        return None
    folder = TeacherFolder.of(root, config)
    if not folder.complete:
        notes.append(f"angles: the teacher stage's folder {folder.path} is missing; angles not measured")
        return None
    seeds = settings.seeds if settings.seeds is not None else config.sweep.seeds[:3]  # 3: angles.null_contrast
    chosen = _angle_trials(trials, seeds)
    if not chosen:
        notes.append(f"angles: no finished trial at seeds {seeds}; angles not measured")
        return None
    return folder, seeds, chosen


def measure_angles(
    root: Path, config: StudyConfig, trials: list[dict], *, device: str = "cpu", notes: list[str], progress=None
) -> tuple[dict | None, list[dict]]:
    """Angle statistics at init and trained for one trial per (strategy, init) cell per chosen seed.

    "At init" is the exact student the trial started from (rebuilt by the trial's own setup from its seed,
    projections included); "trained" is its best-on-validation weights.
    """

    settings = config.analysis.angles
    found = _angle_trials_to_measure(root, config, trials, notes)
    if found is None:
        return None, []
    folder, seeds, chosen = found
    final_norm = config.distill.final_norm
    key = config_hash([config.identity(), settings.examples, settings.batch_size, settings.null_seeds, final_norm])
    saved = json.loads((root / ANGLES).read_text()) if (root / ANGLES).is_file() else {}
    done = saved.get("students", {}) if saved.get("key") == key else {}
    missing = {cell: t for cell, t in chosen.items() if t["trial_id"] not in done}
    if missing:  # every look reads the measurements back from the file: the first and later looks see the same
        done |= _measure_students(root, config, folder, missing, device, notes, progress)
        (root / ANGLES).write_text(json.dumps({"key": key, "students": done}))
        done = json.loads((root / ANGLES).read_text())["students"]
    measurements = [
        {"strategy": s, "init": i, "seed": seed, "trial_id": t["trial_id"], **done[t["trial_id"]]}
        for (s, i, seed), t in sorted(chosen.items())
        if t["trial_id"] in done
    ]
    if not measurements:
        return None, []
    notes.append(
        f"angles: {len(measurements)} trained students (one per strategy x init at seeds {seeds}), "
        f"the first {settings.examples} validation examples (all, if fewer); at init = the exact student "
        f"each trial started from (rebuilt from its seed, projections included); null baselines over "
        f"{settings.null_seeds} seeds; {len(missing)} measured now, {len(measurements) - len(missing)} read back "
        f"from {ANGLES} (measured at an earlier look)"
    )
    return summarise(measurements), measurements


def _measure_students(root, config, folder, chosen, device, notes, progress) -> dict[str, dict]:
    """{trial id: {"at_init", "trained"}} for the chosen trials whose checkpoint loads."""
    from functools import partial

    from torch.utils.data import DataLoader

    settings = config.analysis.angles
    context = StudyContext(
        config=config, study_dir=str(root), teacher_dir=str(folder.path), checkpoints=str(root / "checkpoints")
    )
    artifacts = teacher_artifacts(context, device)
    validation = artifacts.data["validation"]
    examples = validation.select(range(min(settings.examples, len(validation))))
    loader = DataLoader(
        examples, batch_size=settings.batch_size, collate_fn=artifacts.task.collator(artifacts.tokenizer)
    )
    final_norm = config.distill.final_norm
    cached = teacher_states(artifacts.model, loader, final_norm=final_norm, device=device)

    options = {"final_norm": final_norm, "device": device, "null_seeds": settings.null_seeds}
    angles_of = once_per_weights(partial(student_angles, cached_teacher=cached, **options))
    measured = {}
    for done, ((strategy, init, seed), t) in enumerate(sorted(chosen.items())):
        if progress is not None:
            progress("analysis", what="angle statistics, student", done=done + 1, of=len(chosen))
        run = TrialRun(context, TrialSpec(t["trial_id"], strategy, init, float(t["weight"]), int(seed)), artifacts)
        at_init = angles_of(run.setup().student)
        if _load_tested_weights(root, t["trial_id"], run.student, notes):
            measured[t["trial_id"]] = {"at_init": at_init, "trained": angles_of(run.student)}
    return measured


def once_per_weights(measure):
    """`measure(module)`, computed once per distinct weights (`weights_digest`): trials paired by seed start from the
    same student whatever their strategy, so their "at init" angles are measured once."""
    done: dict[str, Any] = {}

    def measured(module):
        key = weights_digest(module)
        if key not in done:
            done[key] = measure(module)
        return done[key]

    return measured


def weights_digest(module) -> str:
    """A digest of every tensor of `module`'s state dict (names, shapes, dtypes and bytes): equal digests, the
    same weights."""
    import hashlib

    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _angle_trials(trials: list[dict], seeds: list[int]) -> dict[tuple[str, str, int], dict]:
    """One finished trial per (strategy, init, seed) at `seeds` (the best on validation when a cell has several)."""
    chosen: dict[tuple[str, str, int], dict] = {}
    for t in trials:
        if t["status"] == "finished" and t["seed"] in seeds:
            key = (t["strategy"], t["init"], t["seed"])
            best = chosen.get(key, {}).get("best_validation")
            if key not in chosen or (t.get("best_validation") or -math.inf) > (best or -math.inf):
                chosen[key] = t
    return chosen


def _load_tested_weights(root: Path, trial_id: str, student, notes: list[str]) -> bool:
    """Load the weights a trial was tested with (its best on validation) into `student`; False (and a note) when its
    checkpoint is missing or unreadable."""

    store = checkpoint_store(root, trial_id)
    checkpoint = store.latest()
    if checkpoint is None:
        notes.append(f"angles: no checkpoint for trial {trial_id} under {store.path}; skipped")
        return False
    with store.open(checkpoint) as folder:
        restored = read_checkpoint(folder, student)
    if isinstance(restored, str):
        notes.append(f"angles: trial {trial_id}: {restored}; skipped")
        return False
    if restored.best_weights is not None:
        student.load_state_dict(restored.best_weights, strict=True)
    return True


def _finished_trials(uri: str, config, uid: str, metric: str) -> dict[str, Any]:
    """The study's trial runs (`fetch_trials`), refused with one AnalysisError when none has finished."""
    fetched = fetch_trials(uri, config, uid, metric)
    trials = fetched["trials"]
    if not trials:
        raise AnalysisError(f"study {config.name!r} has no trial runs in {uri}: nothing to analyse yet")
    if not any(t["status"] == "finished" for t in trials):
        raise AnalysisError(
            f"study {config.name!r} has {len(trials)} trial run(s) and none finished "
            f"({', '.join(sorted({t['status'] for t in trials}))}): nothing to analyse yet"
        )
    return fetched


def _judge_teacher(summary: dict[str, Any], quality: dict[str, Any]) -> None:
    """Add the teacher's quality to the summary; a weak teacher makes the verdict not a finding."""
    summary["teacher"].update(quality)
    if summary["teacher"].get("weak"):
        summary["verdict"]["finding"] = False
        summary["verdict"]["text"] = f"NOT A FINDING: {summary['teacher']['weak']}. " + summary["verdict"]["text"]


def _statistics(
    trials: list[dict], config: StudyConfig, metric: str, higher: bool, teacher_metric, root: Path, look
) -> dict[str, Any]:
    """`analyze_trials` with the study's analysis settings (the margin converted from points to metric units) and
    its test set's size (from the teacher stage)."""

    folder = TeacherFolder.of(root, config)
    test_examples = (folder.info.get("split_sizes") or {}).get("test") if folder.complete else None
    analysis = config.analysis
    return analyze_trials(
        trials,
        metric=metric,
        higher_is_better=higher,
        reference=analysis.reference,
        margin=analysis.margin_points / points_per_unit(metric),
        alpha=analysis.alpha,
        teacher_metric=teacher_metric,
        min_room_margins=analysis.min_room_margins,
        min_seeds=analysis.min_seeds,
        test_examples=test_examples,
        look=look,
    )


def study_look(root: Path, config: StudyConfig, trials: list[dict]) -> tuple[dict, list[dict], dict]:
    """(this analysis' look, the looks before it, the plan). The plan is fixed by the study's first analysis
    (``looks.json``); until then it follows the config, so a study grown before anyone looked stays planned."""
    saved = json.loads((root / LOOKS).read_text()) if (root / LOOKS).is_file() else {}
    plan = saved.get("plan") or sequential.plan_of(config.sweep.sequential, len(config.sweep.seeds))
    seeds = len({t["seed"] for t in trials if t["status"] == "finished"})
    return sequential.look(plan, seeds, config.analysis.alpha, saved.get("looks")), saved.get("looks") or [], plan


def analyze_study(
    study_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    tracking_uri: str | None = None,
    device: str | None = None,
    log_to_mlflow: bool = True,
    quiet: bool = False,
    write: bool = True,
    progress=None,
) -> dict[str, Any]:
    """The whole analysis of a study folder; writes ``<study>/report/`` (unless not `write`) and returns the
    summary."""

    started = time.time()
    root, config, uid = load_study(study_dir, overrides)
    uri = tracking_uri or tr.tracking_uri(root)
    tr.check_reachable(uri)
    task = build_task(config.task)
    metric, higher = task.metric, task.higher_is_better
    fetched = _finished_trials(uri, config, uid, metric)
    outside = [t["trial_id"] for t in fetched["trials"] if not in_grid(config, t)]
    trials = [t for t in fetched["trials"] if in_grid(config, t)]
    if progress is not None:
        progress("analysis", what="statistics")
    look, history, plan = study_look(root, config, trials)
    stats = _statistics(trials, config, metric, higher, fetched["teacher"].get(f"test/{metric}"), root, look)
    same = coinciding_maps(trials)
    stats["notes"] += _grid_notes(outside, same)
    angle_notes: list[str] = []
    chosen = with_chosen_weights(trials, stats["chosen_weights"])
    device = device or default_device()
    angles, measured = measure_angles(root, config, chosen, device=device, progress=progress, notes=angle_notes)
    summary = build_summary(
        study=config.name,
        metric=metric,
        higher_is_better=higher,
        teacher=fetched["teacher"],
        trials=trials,
        stats=stats,
        angles=angles,
        angle_notes=angle_notes,
        margin_points=config.analysis.margin_points,
        setup=_setup(config, metric, uri),
    )
    summary.update(coinciding_maps=same, angle_test=_null_contrast(measured))
    summary["curves"] = {
        "examples": _curve_examples(root, config),
        "by_init": learning_curves(chosen, {e["trial_id"] for e in stats["excluded"]}),
    }
    summary["sequential"] = sequential.record_of(summary, look, history, plan)
    _judge_teacher(summary, _teacher_quality(root, config, fetched["teacher"], metric, points_per_unit(metric)))
    summary["seconds"] = round(time.time() - started, 1)
    if not write:
        return {"summary": summary, "paths": {}}
    if progress is not None:
        progress("analysis", what="report and figures")
    paths = _publish(summary, root, fetched if log_to_mlflow else None, quiet)
    return {"summary": summary, "paths": paths}


def _publish(summary: dict[str, Any], root: Path, fetched: dict[str, Any] | None, quiet: bool) -> dict[str, str]:
    """Write ``<study>/report/``, log it to the study's MLflow run (unless `fetched` is None), print the verdict."""

    paths = write_report(summary, root / REPORT_DIR)
    looks = {"plan": summary["sequential"]["plan"], "looks": summary["sequential"]["looks"]}
    (root / LOOKS).write_text(json.dumps(looks, indent=2))
    if fetched is not None:
        _log(fetched["client"], fetched["parent_run_id"], summary, root / REPORT_DIR)
    if not quiet:
        print(compact_verdict(summary), flush=True)
        print(f"[raykd] report: {paths['report']}", flush=True)
    return {k: str(v) for k, v in paths.items()}


def _grid_notes(outside: list[str], same: list[dict]) -> list[str]:
    notes = []
    if outside:
        notes.append(
            f"{len(outside)} trial run(s) outside the study's current grid are not analysed: "
            f"{', '.join(sorted(outside)[:6])}{' ...' if len(outside) > 6 else ''}"
        )
    notes += [
        f"arms {', '.join(g['strategies'])} matched the same layer pairs at {g['init']} init, seed {g['seed']} "
        f"({g['layer_map']}): not different treatments there"
        for g in same
    ]
    return notes


def _curve_examples(root: Path, config: StudyConfig) -> int:
    """How many validation examples the learning curves were measured on (`distill.curve.examples`, or fewer)."""
    folder = TeacherFolder.of(root, config)
    have = (folder.info.get("split_sizes") or {}).get("validation") if folder.complete else None
    return min(config.distill.curve.examples, have or config.distill.curve.examples)


def _setup(config: StudyConfig, metric: str, uri: str) -> dict[str, str]:
    """The report's Setup section: what was run, in a line per item."""
    sweep = config.sweep
    return {
        "task": f"{config.task.type} ({metric})",
        "teacher": f"{config.teacher.source} {config.teacher.name or config.teacher.model.get('model_type')}",
        "student": f"depth {config.student.depth}, width {config.student.width or 'teacher'}, "
        f"copy rule {config.student.copy_rule}",
        "grid": f"{len(sweep.strategies)} strategies {sweep.strategies} x inits {sweep.inits} x seeds {sweep.seeds}, "
        f"weights {sweep.weights} ({sweep.weight_search.method})",
        "loss": ", ".join(f"{k}={v}" for k, v in config.distill.loss.model_dump().items()),
        "tracking": uri,
    }


def _teacher_quality(
    root: Path, config: StudyConfig, teacher: dict[str, float], metric: str, scale: float
) -> dict[str, Any]:
    """The teacher against its task's trivial baseline (from the teacher stage): name, value, gain in points,
    and ``weak`` (why nothing here is a finding) when the gain is below ``teacher.min_gain_points``."""

    folder = TeacherFolder.of(root, config)
    info = folder.info if folder.complete else {}
    out: dict[str, Any] = {"baseline": info.get("baseline") or None}
    gain = teacher_gain({**info, "metric": metric}, teacher, scale)
    if gain is None:
        return out
    out["gain_points"] = gain
    if out["gain_points"] < config.teacher.min_gain_points:
        out["weak"] = (
            f"the teacher beats the trivial baseline ({out['baseline'].get('name')}) by only "
            f"{out['gain_points']:.2f} points (teacher.min_gain_points {config.teacher.min_gain_points:g}); "
            "there was nothing to distil"
        )
    return out


def _log(client, run_id: str, summary: dict[str, Any], folder: Path) -> None:

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
        for when in ("at_init", "trained"):
            if shares.get(when) is not None:
                metrics[f"analysis/acute_share_{init}_{when}"] = shares[when]
            for kind, null in ((shares.get("null") or {}).get(when) or {}).items():
                metrics[f"analysis/acute_share_{init}_{when}_null_{kind}"] = null["mean"]
    tr.log_metrics(client, run_id, metrics, 0, int(time.time() * 1000))
    verdict = summary["verdict"]
    tags = {f"raykd.verdict.{k}": str(v) for k, v in verdict.items() if k not in ("text", "by_init")}
    for init, answers in (verdict.get("by_init") or {}).items():
        tags.update(
            {
                f"raykd.verdict.{init}.{question}": f"{answer['answer']} ({answer['claim_status']})"
                for question, answer in answers.items()
            }
        )
    tr.set_tags(client, run_id, tags | {"raykd.verdict": verdict["text"][:5000]})

    description = description_markdown(summary)
    tr.describe(client, run_id, description)
    experiment_id = client.get_run(run_id).info.experiment_id
    client.set_experiment_tag(experiment_id, tr.NOTE, tr.EXPERIMENT_TAGS[tr.NOTE] + "\n\n" + description)


def _null_contrast(measured: list[dict]) -> dict[str, Any]:

    return null_contrast(measured)


def analysis_actor_class():
    """`AnalysisActor`: the analysis as a Ray actor (defined lazily so importing this needs no Ray)."""
    import ray

    @ray.remote
    class AnalysisActor:
        def run(
            self,
            study_dir: str,
            overrides: list[str] | None = None,
            tracking_uri: str | None = None,
            quiet: bool = True,
            threads: int | None = None,
            progress_path: str | None = None,
        ) -> dict[str, Any]:
            use_assigned_cpus(threads)
            board = ProgressFile(progress_path) if progress_path else None
            injected.stage_started("analysis")
            out = analyze_study(
                study_dir,
                overrides=overrides or (),
                tracking_uri=tracking_uri,
                quiet=quiet,
                progress=None if board is None else board.write,
            )
            return {**out, "verdict_block": compact_verdict(out["summary"])}

    return AnalysisActor
