"""One study, end to end, as a sequence of stages: study folder, Ray, MLflow, teacher, cache, sweep, analysis.

``<output dir>/<study>/`` holds ``study.json`` (uid, identity hash), ``config.yaml``, ``teacher/<key>/``,
``checkpoints/<trial>/``, ``ray/`` (Tune's and Train's own storage), ``mlflow.db`` + ``mlartifacts/``
(local tracking), ``results/`` and ``report/``. Running the same config again resumes; a config that
only grows the grid (more seeds, strategies, inits or weights) runs just the new trials; a change to what
a finished trial means is refused, naming the keys (``--fresh`` starts over).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from raykd.config import ConfigError, StudyConfig, config_hash, flatten


class WeakTeacher(ConfigError):
    """The teacher does not beat its task's trivial baseline by the configured gain: nothing to distil."""


def prepare_study_dir(config: StudyConfig, root: Path, *, fresh: bool = False) -> str:
    """Create or check the study folder; return the study uid (new after --fresh).

    The study's identity (`StudyConfig.identity`) leaves out the analysis, the grid's lists and
    operational settings, so those can change on an existing study; the saved ``config.yaml`` follows
    the latest config.
    """
    if fresh and root.exists():
        shutil.rmtree(root)
    state_file = root / "study.json"
    identity = config.identity()
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if state["config_hash"] != config_hash(identity):
            saved = StudyConfig.model_validate(yaml.safe_load((root / "config.yaml").read_text())).identity()
            before, now = flatten(saved), flatten(identity)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ConfigError(f"study {config.name!r} in {root} was started with another config (changed: "
                              f"{', '.join(changed[:8]) or 'the identity hash'}): its finished trials would no longer "
                              "mean the same. Re-run with --fresh to start over, or --name for a new study (the grid "
                              "-- strategies, inits, seeds, weights -- and the analysis may change freely)")
    else:
        root.mkdir(parents=True, exist_ok=True)
        state = {"uid": uuid.uuid4().hex, "config_hash": config_hash(identity), "created": time.time()}
        state_file.write_text(json.dumps(state))
    (root / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return state["uid"]


def run_study(config: StudyConfig, output_dir: Path, *, fresh: bool = False) -> dict[str, Any]:
    """Run (or resume, or grow) the study; return a summary with paths and the results rows."""
    import ray

    from raykd import tracking as tr
    from raykd.cluster import start_ray, stage_cpus
    from raykd.provenance import versions
    from raykd.trial import StudyContext
    from raykd.validate import validate

    validate(config)
    root = (output_dir / config.name).resolve()
    tr.check_reachable(tr.tracking_uri(root))
    uid = prepare_study_dir(config, root, fresh=fresh)
    start_ray(dashboard=config.compute.num_workers > 1 or config.compute.isolate_trials)
    tracking = tr.open_study(root, config.name, uid, flatten(config))
    client = tracking.client()
    tr.set_tags(client, tracking.parent_run_id, {"raykd.config_hash": config_hash(config.identity())})
    client.log_dict(tracking.parent_run_id, config.model_dump(mode="json"), "config.json")
    print(f"[raykd] study {config.name} in {root}", flush=True)

    cpus = stage_cpus(config.compute.teacher_cpus)
    gpus = math.ceil(config.compute.gpus_per_worker)
    teacher = _teacher_stage(config, root, tracking, cpus, gpus)
    context = StudyContext(config=config, study_dir=str(root), teacher_dir=str(teacher["dir"]),
                           checkpoints=str(root / "checkpoints"), teacher_cache=teacher["cache"], tracking=tracking,
                           versions=versions())
    metric = teacher["metric"]
    chosen = _tune_weights(config, root, context, metric) if config.sweep.weight_search.method == "optuna" else None
    analyst = _analyst(root) if config.analysis.enabled else None  # starts (and loads) while the trials run
    rows, counts, paths = _sweep(config, root, context, metric, chosen)
    report = _analyse(analyst, root, tracking.uri, cpus) if analyst is not None and counts["finished"] else None
    tr.finish(client, tracking.parent_run_id, "finished")
    ray.shutdown()
    return {"root": root, "tracking_uri": tracking.uri, "teacher": teacher["metrics"], "metric": metric,
            "rows": rows, "counts": counts, "results": paths, "report": report}


def _teacher_stage(config: StudyConfig, root: Path, tracking, cpus: float, gpus: int) -> dict[str, Any]:
    """Stages 1 and 1b (one Ray task): the teacher and the shared cache for the whole grid. Stops the study
    when the teacher has nothing to teach."""
    import ray

    from raykd import tracking as tr
    from raykd.analysis.stats import points_per_unit
    from raykd.teacher_folder import TeacherFolder, inputs_at_max_length_line, teacher_gain
    from raykd.trial import trial_grid

    folder = TeacherFolder.of(root, config)
    started = time.time()
    # max_calls=1: the stage's worker process exits afterwards instead of idling with a model in memory
    stage = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)(_run_teacher_stage)
    out = ray.get(stage.remote(config, str(folder.path), trial_grid(config), tracking))
    metrics, info = out["metrics"], folder.info
    metric = info["metric"]
    scale = points_per_unit(metric)
    baseline = info.get("baseline") or {}
    print(f"[raykd] teacher: test {metric} {metrics[f'test/{metric}']:.4f} ({time.time() - started:.0f} s with its cache; "
          f"in {folder.path}); trivial baseline ({baseline.get('name', '?')}) {baseline.get(metric, float('nan')):.4f}",
          flush=True)
    if any((info.get("inputs_at_max_length") or {}).values()):
        print(f"[raykd] inputs truncated to the length limit (or exactly that long): "
              f"{inputs_at_max_length_line(info)}", flush=True)
    client = tracking.client()
    tr.log_metrics(client, tracking.parent_run_id, {f"teacher/{k}": v for k, v in metrics.items()}, 0,
                   int(time.time() * 1000))
    gain = teacher_gain(info, metrics, scale)
    if gain is not None and gain < config.teacher.min_gain_points:
        message = (f"the teacher scores {metrics[f'test/{metric}'] * scale:.2f} test {metric} points, the trivial "
                   f"baseline ({baseline.get('name')}) {baseline[metric] * scale:.2f}: a gain of {gain:.2f} points, "
                   f"below teacher.min_gain_points ({config.teacher.min_gain_points:g}). There is nothing to distil, "
                   "so the sweep would measure nothing. Train a better teacher (more data, steps or size), or set "
                   "teacher.allow_weak: true to run the study anyway")
        tr.set_tags(client, tracking.parent_run_id, {"raykd.weak_teacher": message[:5000]})
        if not config.teacher.allow_weak:
            tr.finish(client, tracking.parent_run_id, "failed", error="weak teacher")
            raise WeakTeacher(message)
        print(f"[raykd] warning: {message} (teacher.allow_weak is set: going on)", flush=True)
    cache = out["cache"]
    if cache is None:
        print("[raykd] teacher cache: off (compute.teacher_cache.enabled); trials run the teacher live", flush=True)
    else:
        print(f"[raykd] teacher cache: {cache['plan']}; {cache['reason']} -> {cache['path'] or 'not built'}", flush=True)
        tr.set_tags(client, tracking.parent_run_id,
                    {"raykd.teacher_cache": cache["path"] or f"live: {cache['reason']}"[:5000]})
    return {"dir": folder.path, "metrics": metrics, "metric": metric, "cache": cache and cache["path"]}


def _run_teacher_stage(*args: Any) -> dict[str, Any]:
    """`raykd.train.teacher.teacher_stage`, imported in the Ray worker: the driver never loads the training
    stack (torch models, transformers, datasets), which keeps it small and quick to start."""
    from raykd.train.teacher import teacher_stage

    return teacher_stage(*args)


def _sweep(config: StudyConfig, root: Path, context, metric: str, chosen) -> tuple[list, dict, dict]:
    """Stage 2: fit every grid trial that has not ended (earlier runs' trials are kept), then the results."""
    import ray

    from raykd import tracking as tr
    from raykd.cluster import node_resources
    from raykd.sweep import Progress, fit, plan_resources, results_table, write_results
    from raykd.trial import trial_grid

    tracking = context.tracking
    client = tracking.client()
    grid = trial_grid(config, chosen)
    runs = _trial_runs(client, tracking)
    pending = [t for t in grid if runs.get(t.trial_id) is None
               or runs[t.trial_id].data.tags.get(tr.STATUS) not in ("finished", "diverged")]
    resources = plan_resources(config, ray.cluster_resources(), max(1, len(pending)), nodes=node_resources())
    print(f"[raykd] sweep: {len(grid)} trials; {resources.describe()}", flush=True)
    if len(pending) < len(grid):
        print(f"[raykd] resuming: {len(grid) - len(pending)} of {len(grid)} trials already ended; running "
              f"{len(pending)}", flush=True)
    progress = Progress(len(grid), metric, True, already_done=len(grid) - len(pending))
    if pending:
        fit(root / "ray", "sweep", config, context, resources, [progress.callback], trials=pending)
    runs = _trial_runs(client, tracking)
    for trial_id, error in progress.errors.items():  # a process that died beyond its retries closed nothing
        run = runs.get(trial_id)
        if run is not None and run.data.tags.get(tr.STATUS) is None:
            tr.finish(client, run.info.run_id, "failed", error=error)
    rows = results_table(_trial_runs(client, tracking), grid, metric, progress.errors)
    paths = write_results(rows, root / "results", metric)
    for path in paths.values():
        client.log_artifact(tracking.parent_run_id, str(path), "results")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "diverged", "failed")}
    tr.set_tags(client, tracking.parent_run_id, {f"raykd.trials_{k}": str(v) for k, v in counts.items()})
    print(f"[raykd] {cell_means(rows, metric)}", flush=True)
    return rows, counts, paths


def _trial_runs(client, tracking) -> dict[str, Any]:
    from raykd import tracking as tr

    return {r.data.tags.get(tr.TRIAL_ID): r for r in tr.study_runs(client, tracking.experiment_id, tracking.study_uid,
                                                                  "trial")}


def cell_means(rows: list[dict[str, Any]], metric: str) -> str:
    """One line: the mean test metric per (strategy, init) over its finished trials."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["status"] == "finished" and r["metric"] is not None:
            cells.setdefault((r["strategy"], r["init"]), []).append(r["metric"])
    if not cells:
        return "no finished trial"
    shown = ", ".join(f"{s}/{i} {sum(v) / len(v):.4g} (n={len(v)})" for (s, i), v in cells.items())
    return f"mean test {metric} per cell: {shown}"


def _analyst(root: Path):
    """The analysis actor, started now so that its process start, imports and teacher loading overlap the sweep
    (it holds no CPU while it waits; it is given the stage's threads when it runs)."""
    from raykd.analysis.actor import analysis_actor_class

    actor = analysis_actor_class().options(num_cpus=0).remote()
    actor.warm.remote(str(root))
    return actor


def _analyse(actor, root: Path, tracking_uri: str, cpus: float) -> dict[str, Any] | None:
    """Stage 3: the analysis actor. A failure here is reported and leaves every trial result in place."""
    import ray

    started = time.time()
    try:
        out = ray.get(actor.run.remote(str(root), tracking_uri=tracking_uri, threads=int(cpus)))
    except Exception as error:  # noqa: BLE001 - the trials are done; say what broke and carry on
        print(f"[raykd] analysis failed ({type(error).__name__}: {str(error).splitlines()[0][:300]}); the trial "
              f"results are in {root / 'results'}; retry with: python studies/analyze.py --study {root}", flush=True)
        return None
    finally:
        ray.kill(actor)
    print(out["verdict_block"], flush=True)
    print(f"[raykd] analysis: {time.time() - started:.0f} s; report {out['paths']['report']}", flush=True)
    return out


def _tune_weights(config: StudyConfig, root: Path, context, metric: str) -> dict:
    """Phase 1: Optuna TPE per (strategy, init) cell at the tuning seed; returns the chosen weights."""
    import ray

    from raykd import tracking as tr
    from raykd.cluster import node_resources
    from raykd.sweep import Progress, chosen_weights, fit, plan_resources, results_table, write_results
    from raykd.trial import TUNE_PREFIX, TrialSpec
    from raykd.weight_search import CellwiseOptuna, tuning_cells

    saved = root / "results" / "chosen_weights.json"
    if saved.is_file():
        chosen = {tuple(k.split("/")): v for k, v in json.loads(saved.read_text()).items()}
        print(f"[raykd] chosen weights (from {saved}): {chosen}", flush=True)
        return chosen
    cells = tuning_cells(config)
    n = len(cells) * config.sweep.weight_search.trials_per_cell
    resources = plan_resources(config, ray.cluster_resources(), n, nodes=node_resources())
    print(f"[raykd] weight search: Optuna TPE, {config.sweep.weight_search.trials_per_cell} trials x "
          f"{len(cells)} cells; {resources.describe()}", flush=True)
    searcher = CellwiseOptuna(config, mode="max")
    progress = Progress(n, metric, True)
    fit(root / "ray", "weight_search", config, context, resources, [progress.callback], search_alg=searcher,
        num_samples=n, restore=True)
    client = context.tracking.client()
    runs = _trial_runs(client, context.tracking)
    specs = [TrialSpec(trial_id, run.data.tags["raykd.strategy"], run.data.tags["raykd.init"],
                       float(run.data.tags["raykd.weight"]), int(run.data.tags["raykd.seed"]), phase="tune")
             for trial_id, run in runs.items() if trial_id and trial_id.startswith(TUNE_PREFIX)]
    rows = results_table(runs, specs, metric, progress.errors)
    write_results(rows, root / "results" / "weight_search", metric)
    chosen = chosen_weights(rows, cells, True)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({f"{s}/{i}": w for (s, i), w in chosen.items()}, indent=2))
    client.log_artifact(context.tracking.parent_run_id, str(saved), "results")
    tr.set_tags(client, context.tracking.parent_run_id, {"raykd.weight_search": "done"})
    shown = ", ".join(f"{s}/{i} {w if w is None else f'{w:.3g}'}" for (s, i), w in chosen.items())
    print(f"[raykd] chosen weights (best validation {metric}): {shown}", flush=True)
    return chosen


def mlflow_ui_command(tracking_uri: str) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri}"
