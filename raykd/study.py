"""One study, end to end: study folder, Ray, MLflow, teacher stage, sweep, results table.

``<output dir>/<study>/`` holds ``study.json`` (uid, config hash), ``config.yaml``, ``teacher/<key>/``,
``ray/`` (Tune and Train storage), ``mlflow.db`` + ``mlartifacts/`` (local tracking), ``results/``.
Re-running the same config resumes; a changed config is refused (``--fresh`` starts over).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from raykd.config import ConfigError, StudyConfig, config_hash, flatten
from raykd.sweep import Progress, plan_resources, results_table, run_trial, trial_grid, write_results
from raykd.train.teacher import inputs_at_max_length_line, prepare_teacher, student_depths, teacher_dir


def prepare_study_dir(config: StudyConfig, root: Path, *, fresh: bool = False) -> str:
    """Create or check the study folder; return the study uid (new after --fresh).

    The study's identity is its config without the `analysis` section, so analysis settings can
    change on a finished study (the saved ``config.yaml`` is updated to the latest ones).
    """
    if fresh and root.exists():
        shutil.rmtree(root)
    state_file = root / "study.json"
    identity = config.identity()
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if state["config_hash"] != config_hash(identity):
            saved = {k: v for k, v in flatten(yaml.safe_load((root / "config.yaml").read_text())).items()
                     if not k.startswith("analysis.")}
            now = flatten(identity)
            changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ConfigError(f"study {config.name!r} in {root} was started with another config (changed: "
                              f"{', '.join(changed[:8])}); re-run with --fresh to start over, or --name for a new study")
        (root / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        return state["uid"]
    root.mkdir(parents=True, exist_ok=True)
    uid = uuid.uuid4().hex
    (root / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    state_file.write_text(json.dumps({"uid": uid, "config_hash": config_hash(identity), "created": time.time()}))
    return uid


def versions() -> dict[str, str]:
    import mlflow
    import ray
    import torch
    import transformers

    import raykd

    out = {"version.raykd": raykd.__version__, "version.torch": torch.__version__, "version.ray": ray.__version__,
           "version.transformers": transformers.__version__, "version.mlflow": mlflow.__version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
        out["git.commit"] = commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        out["git.commit"] = "unknown"
    return out


def start_ray(address: str | None = None) -> None:
    """Connect to RAY_ADDRESS (or `address`), else start a local Ray in-process sized to this machine."""
    import ray

    from raykd.sweep import DRIVER_RESOURCE

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # faster teardown (OFFLINE.md)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # The dashboard must run: without its State API, Ray Train 2.60's placement-group cleaner cannot
        # see finished controllers and each trial's worker placement group stays reserved, so on a small
        # machine the second wave of trials waits forever for CPUs (seen here on 2 cores).
        ray.init(num_cpus=os.cpu_count(), resources={DRIVER_RESOURCE: 1000}, include_dashboard=True,
                 log_to_driver=False, configure_logging=False)


def preflight(config: StudyConfig) -> None:
    """Checks that need the file system, before Ray or anything expensive starts (ConfigError)."""
    import codecs

    files = config.task.data.files
    if files is not None:
        try:
            codecs.lookup(files.encoding)
        except LookupError:
            raise ConfigError(f"task.data.files.encoding: unknown encoding {files.encoding!r}") from None
        for split in ("train", "validation", "test"):
            path = getattr(files, split)
            if path is not None and not Path(path).expanduser().is_file():
                raise ConfigError(f"task.data.files.{split}: local file {path!r} does not exist")


def run_study(config: StudyConfig, output_dir: Path, *, fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the study; return a summary with paths and the results rows."""
    import ray
    from ray import tune

    from raykd import tracking as tr

    root = (output_dir / config.name).resolve()
    preflight(config)
    tr.check_reachable(tr.tracking_uri(root))
    uid = prepare_study_dir(config, root, fresh=fresh)
    start_ray()
    tracking = tr.open_study(root, config.name, uid, flatten(config))
    client = tracking.client()
    tr.set_tags(client, tracking.parent_run_id, {"raykd.config_hash": config_hash(config.identity())})
    client.log_dict(tracking.parent_run_id, config.model_dump(mode="json"), "config.json")

    print(f"[raykd] study {config.name} in {root}", flush=True)
    t_dir = teacher_dir(root, config)
    # The teacher stage runs alone: by default it takes the cluster's CPUs (Ray would otherwise pin it to
    # one thread through OMP_NUM_THREADS=1); a GPU when trials use one.
    teacher_cpus = config.compute.teacher_cpus or max(1.0, min(8.0, ray.cluster_resources().get("CPU", 1.0)))
    teacher_gpus = math.ceil(config.compute.gpus_per_worker)
    # max_calls=1: the stage's worker process exits afterwards instead of idling with a model in memory
    stage = ray.remote(num_cpus=teacher_cpus, num_gpus=teacher_gpus, max_calls=1)(prepare_teacher)
    started = time.time()
    teacher_metrics = ray.get(stage.remote(config, str(t_dir), tracking))
    info = json.loads((t_dir / "info.json").read_text())
    metric = info["metric"]
    print(f"[raykd] teacher: test {metric} {teacher_metrics[f'test/{metric}']:.4f} "
          f"({time.time() - started:.0f} s; cached in {t_dir})", flush=True)
    if any((info.get("inputs_at_max_length") or {}).values()):
        print(f"[raykd] inputs truncated to the length limit (or exactly that long): "
              f"{inputs_at_max_length_line(info)}", flush=True)
    tr.log_metrics(client, tracking.parent_run_id, {f"teacher/{k}": v for k, v in teacher_metrics.items()}, 0,
                   int(time.time() * 1000))

    cache = _teacher_cache(config, t_dir, teacher_cpus, teacher_gpus, client, tracking.parent_run_id)
    study_ctx = {"config": config.model_dump(mode="json"), "teacher_dir": str(t_dir), "teacher_cache": cache,
                 "train_storage": str(root / "ray" / "train"), "study_dir": str(root),
                 "tracking": asdict(tracking), "versions": versions()}
    higher = True
    chosen = None
    if config.sweep.weight_search.method == "optuna":
        chosen = _tune_weights(config, root, study_ctx, metric, higher)
        client.log_dict(tracking.parent_run_id, {f"{s}/{i}": w for (s, i), w in chosen.items()}, "results/chosen_weights.json")
    grid = trial_grid(config, chosen)
    resources = plan_resources(config, ray.cluster_resources(), len(grid))
    print(f"[raykd] sweep: {len(grid)} trials; {resources.describe()}", flush=True)
    ended = _ended_trials(client, tracking, {t["trial_id"] for t in grid})
    if ended:
        print(f"[raykd] resuming: {ended} of {len(grid)} trials already ended", flush=True)
    progress = Progress(len(grid), metric, higher, already_done=ended)
    outcome = _fit(root / "ray", "sweep", config, resources, progress,
                   param_space={"study": study_ctx, "trial": tune.grid_search(grid)})
    rows = results_table(outcome, metric)
    paths = write_results(rows, root / "results", metric)
    for path in paths.values():
        client.log_artifact(tracking.parent_run_id, str(path), "results")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "diverged", "failed")}
    tr.set_tags(client, tracking.parent_run_id, {f"raykd.trials_{k}": str(v) for k, v in counts.items()})
    print(f"[raykd] {cell_means(rows, metric)}", flush=True)
    report = _analyse(config, root, tracking.uri, teacher_cpus) if config.analysis.enabled and counts["finished"] else None
    tr.finish(client, tracking.parent_run_id, "finished")
    return {"root": root, "tracking_uri": tracking.uri, "teacher": teacher_metrics, "metric": metric,
            "rows": rows, "counts": counts, "results": paths, "report": report}


def _teacher_cache(config: StudyConfig, t_dir: Path, cpus: float, gpus: int, client, parent_run_id: str) -> str | None:
    """Stage 1b: the shared teacher cache (or None: trials run the teacher live)."""
    import ray

    from raykd import tracking as tr
    from raykd.train.teacher import prepare_cache

    if not config.compute.teacher_cache.enabled:
        print("[raykd] teacher cache: off (compute.teacher_cache.enabled); trials run the teacher live", flush=True)
        return None
    started = time.time()
    stage = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)(prepare_cache)
    out = ray.get(stage.remote(config, str(t_dir), trial_grid(config)))
    where = out["path"] or "not built"
    print(f"[raykd] teacher cache: {out['plan']}; {out['reason']} ({time.time() - started:.0f} s) -> {where}", flush=True)
    tr.set_tags(client, parent_run_id, {"raykd.teacher_cache": out["path"] or f"live: {out['reason']}"[:5000]})
    return out["path"]


def _ended_trials(client, tracking, trial_ids: set[str]) -> int:
    """How many of this grid's trials already ended (finished or diverged) in an earlier run of the study."""
    from raykd import tracking as tr

    runs = tr.study_runs(client, tracking.experiment_id, tracking.study_uid, "trial")
    return sum(r.data.tags.get(tr.TRIAL_ID) in trial_ids and r.data.tags.get(tr.STATUS) in ("finished", "diverged")
               for r in runs)


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


def _analyse(config: StudyConfig, root: Path, tracking_uri: str, cpus: float) -> dict[str, Any] | None:
    """Stage 3: the analysis actor. A failure here is reported and leaves every trial result in place."""
    import ray

    from raykd.analysis.actor import analysis_actor_class
    from raykd.analysis.report import verdict_block

    started = time.time()
    actor = analysis_actor_class().options(num_cpus=cpus).remote()
    try:
        out = ray.get(actor.run.remote(str(root), tracking_uri=tracking_uri))
    except Exception as error:  # noqa: BLE001 - the trials are done; say what broke and carry on
        print(f"[raykd] analysis failed ({type(error).__name__}: {str(error).splitlines()[0][:300]}); the trial "
              f"results are in {root / 'results'}; retry with: python studies/analyze.py --study {root}", flush=True)
        return None
    finally:
        ray.kill(actor)
    print(verdict_block(out["summary"]), flush=True)
    print(f"[raykd] analysis: {time.time() - started:.0f} s; report {out['paths']['report']}", flush=True)
    return out


def _fit(storage: Path, name: str, config: StudyConfig, resources, progress, *, param_space=None, search_alg=None,
         num_samples: int = 1):
    """Fit (or restore and finish) one Tune experiment of trial drivers."""
    from ray import tune

    trainable = tune.with_resources(run_trial, resources.driver)
    path = storage / name
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True).fit()
    return tune.Tuner(
        trainable,
        param_space=param_space or {},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent, search_alg=search_alg,
                                    num_samples=num_samples, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0, callbacks=[progress.callback],
                                  failure_config=tune.FailureConfig(max_failures=config.compute.trial_retries)),
    ).fit()


def _tune_weights(config: StudyConfig, root: Path, study_ctx: dict, metric: str, higher: bool) -> dict:
    """Phase 1: Optuna TPE per (strategy, init) cell at the tuning seed; returns the chosen weights."""
    import ray

    from raykd.sweep import chosen_weights
    from raykd.weight_search import CellwiseOptuna, tuning_cells

    cells = tuning_cells(config)
    n = len(cells) * config.sweep.weight_search.trials_per_cell
    resources = plan_resources(config, ray.cluster_resources(), n)
    print(f"[raykd] weight search: Optuna TPE, {config.sweep.weight_search.trials_per_cell} trials x "
          f"{len(cells)} cells; {resources.describe()}", flush=True)
    searcher = CellwiseOptuna(config, study_ctx, mode="max" if higher else "min")
    outcome = _fit(root / "ray", "weight_search", config, resources, Progress(n, metric, higher),
                   search_alg=searcher, num_samples=n)
    rows = results_table(outcome, metric)
    write_results(rows, root / "results" / "weight_search", metric)
    chosen = chosen_weights(rows, cells, higher)
    (root / "results" / "chosen_weights.json").write_text(json.dumps({f"{s}/{i}": w for (s, i), w in chosen.items()}, indent=2))
    shown = ", ".join(f"{s}/{i} {w if w is None else f'{w:.3g}'}" for (s, i), w in chosen.items())
    print(f"[raykd] chosen weights (best validation {metric}): {shown}", flush=True)
    return chosen


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]


def dry_run(config: StudyConfig) -> str:
    """The trial grid, layer maps, resources and a work estimate, without starting anything."""
    from raykd.families import FAMILIES
    from raykd.student import copied_layers
    from raykd.sweep import estimate
    from raykd.train.worker import trial_layer_maps

    grid = trial_grid(config)
    lines = [f"study {config.name}: task {config.task.type} ({config.task.metric or 'default metric'}), "
             f"teacher {config.teacher.source} {config.teacher.name or config.teacher.model.get('model_type')}"]
    if config.teacher.source == "config":
        family = FAMILIES.get(config.teacher.model["model_type"])
        from raykd.config import _Attrs

        teacher_depths, kind = family.depths(_Attrs(config.teacher.model)), family.kind
    elif config.teacher.depths:
        teacher_depths = config.teacher.depths
        kind = "decoder" if list(teacher_depths) == ["decoder"] else ("encoder_decoder" if len(teacher_depths) == 2 else "encoder")
    else:
        teacher_depths = kind = None
    lines.append(f"{len(grid)} trials ({len(config.sweep.strategies)} strategies x {len(config.sweep.inits)} inits x "
                 f"{len(config.sweep.seeds)} seeds, weights {config.sweep.weights}; 'none' runs once per weight-free cell)")
    if teacher_depths is None:
        lines.append("layer maps: known once the teacher loads (set teacher.depths to see them here)")
    else:
        students = student_depths(config, teacher_depths)
        lines.append(f"teacher depths {teacher_depths}, student depths {students}")
        for strategy in config.sweep.strategies:
            maps = trial_layer_maps(config, {"strategy": strategy, "seed": config.sweep.seeds[0]}, students,
                                    teacher_depths, kind)
            lines.append(f"  {strategy:>10} (seed {config.sweep.seeds[0]}): {maps}")
        if "teacher" in config.sweep.inits:
            copies = {s: copied_layers(config.student.copy_rule, students[s], teacher_depths[s], stack=s)
                      for s in teacher_depths}
            lines.append(f"teacher init copies blocks {copies} (copy_rule {config.student.copy_rule})")
    compute = config.compute
    lines.append(f"per trial: {compute.num_workers} worker(s) x ({compute.cpus_per_worker:g} CPU"
                 f"{f', {compute.gpus_per_worker:g} GPU' if compute.gpus_per_worker else ''}); "
                 f"concurrency {'max ' + str(compute.max_concurrent_trials) if compute.max_concurrent_trials else 'what the cluster fits'}")
    train_n = config.task.data.max_examples.get("train")
    lines.append("work: " + estimate(config, len(grid), train_n))
    for t in grid:
        lines.append(f"  {t['trial_id']}")
    return "\n".join(lines)


def mlflow_ui_command(tracking_uri: str) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri}"
