"""One study, end to end, as a sequence of stages: study folder, Ray, MLflow, teacher (+ cache), sweep, analysis.

``<output dir>/<study>/`` holds ``study.json`` (uid, identity hash), ``config.yaml``, ``teacher/<key>/``,
``checkpoints/<trial>/``, ``ray/`` (Tune's and Train's own storage), ``mlflow.db`` + ``mlartifacts/``
(local tracking), ``results/``, ``report/`` and ``logs/`` (Ray's, Tune's and MLflow's console output).
Running the same config again resumes; a config that only grows the grid (more seeds, strategies, inits or
weights) runs just the new trials; a change to what a finished trial means is refused, naming the keys
(``--fresh`` starts over).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raykd.analysis.claims import all_decided
from raykd.cluster import node_resources, stage_cpus, start_ray
from raykd.config import ConfigError, StudyConfig, config_hash, flatten
from raykd.console import Console, Progress, ProgressFile, log_tail, quiet_libraries, wait_with_progress
from raykd.provenance import versions
from raykd.storage import check_storage, join, study_root
from raykd.sweep import ResourceError, chosen_weights, fit, plan_resources, results_table, write_results
from raykd.teacher_folder import TeacherFolder, inputs_at_max_length_line, teacher_gain
from raykd.trial import TUNE_PREFIX, StudyContext, TrialSpec, arm_of, steps_per_trial, trial_grid
from raykd.validate import validate


class WeakTeacher(ConfigError):
    """The teacher does not beat its task's trivial baseline by the configured gain: nothing to distil."""


def prepare_study_dir(config: StudyConfig, root: Path, *, fresh: bool = False, checkpoints: str | None = None) -> str:
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
            raise ConfigError(
                f"study {config.name!r} in {root} was started with another config (changed: "
                f"{', '.join(changed[:8]) or 'the identity hash'}): its finished trials would no longer "
                "mean the same. Re-run with --fresh to start over, or --name for a new study (the grid "
                "-- strategies, inits, seeds, weights -- and the analysis may change freely)"
            )
        if checkpoints and state.get("checkpoints", str(root / "checkpoints")) != checkpoints:
            raise ConfigError(
                f"study {config.name!r} keeps its trial checkpoints in {state.get('checkpoints')}; resume it "
                f"with the same --storage (asked: {checkpoints}), or start over with --fresh"
            )
    else:
        root.mkdir(parents=True, exist_ok=True)
        state = {
            "uid": uuid.uuid4().hex,
            "config_hash": config_hash(identity),
            "created": time.time(),
            "checkpoints": checkpoints or str(root / "checkpoints"),
        }
        state_file.write_text(json.dumps(state))
    (root / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return state["uid"]


def run_study(
    config: StudyConfig,
    output_dir: Path | str,
    *,
    fresh: bool = False,
    console: Console | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Run (or resume, or grow) the study; return a summary with paths and the results rows. `storage` (a URI)
    takes Ray's storage and the trial checkpoints (see `raykd.storage`)."""
    return Study(config, output_dir, fresh=fresh, console=console, storage=storage).run()


@dataclass(frozen=True)
class Opened:
    """What the stages after the teacher's share, handed to each explicitly: the study's tracking, the context every
    trial gets, the study's metric and the CPUs a driver-side stage (teacher, analysis) may use."""

    tracking: Any  # raykd.tracking.StudyTracking
    context: StudyContext
    metric: str
    cpus: float


class Study:
    """The stages of one study, in order; each is a method, each prints what it did."""

    def __init__(
        self,
        config: StudyConfig,
        output_dir: Path | str,
        *,
        fresh: bool = False,
        console: Console | None = None,
        storage: str | None = None,
    ) -> None:

        self.config, self.fresh = config, fresh
        self.console = console or Console()
        self.root = (study_root(output_dir) / config.name).resolve()
        self.log = self.root / "logs" / "ray_tune_mlflow.log"
        if storage:
            check_storage(storage)
        self.ray_storage = join(storage, config.name, "ray") if storage else str(self.root / "ray")
        self.checkpoints = join(storage, config.name, "checkpoints") if storage else str(self.root / "checkpoints")

    def say(self, text: str, *, stage: bool = True) -> None:
        self.console.line(f"[raykd] {text}", stage=stage)

    def run(self) -> dict[str, Any]:

        from raykd import tracking as tr

        validate(self.config)
        tr.check_reachable(tr.tracking_uri(self.root))
        uid = prepare_study_dir(self.config, self.root, fresh=self.fresh, checkpoints=self.checkpoints)
        self.say(f"study {self.config.name} in {self.root}; Ray, Tune and MLflow output: {self.log}")
        try:
            with quiet_libraries(self.log, self.console.mode):
                return self._stages(uid)
        except Exception as error:
            expected = isinstance(error, (ConfigError, ResourceError, tr.TrackingError)) or tr.tracking_lost(error)
            if not expected and self.console.mode != "verbose" and self.log.is_file():  # an unexpected failure
                self.console.line(f"[raykd] the last lines of {self.log}:\n{log_tail(self.log)}")
            raise

    def _stages(self, uid: str) -> dict[str, Any]:
        import ray

        from raykd import tracking as tr

        config = self.config
        with ThreadPoolExecutor(1) as pool:  # a new store creates its schema (seconds) while Ray starts
            opening = pool.submit(tr.open_study, self.root, config.name, uid, flatten(config))
            start_ray(dashboard=config.compute.num_workers > 1 or config.compute.isolate_trials)
            tracking = opening.result()
        client = tracking.client()
        tr.share_comparison_view(client, tracking.experiment_id, _metric_name(config))
        tr.set_tags(client, tracking.parent_run_id, {"raykd.config_hash": config_hash(config.identity())})
        client.log_dict(tracking.parent_run_id, config.model_dump(mode="json"), "config.json")
        cpus = stage_cpus(config.compute.teacher_cpus)
        self.check_resources()
        teacher = self.teacher_stage(tracking, cpus)
        context = StudyContext(
            config=config,
            study_dir=str(self.root),
            teacher_dir=str(teacher["dir"]),
            checkpoints=self.checkpoints,
            teacher_cache=teacher["cache"],
            tracking=tracking,
            versions=versions(),
            ray_storage=self.ray_storage,
        )
        opened = Opened(tracking, context, teacher["metric"], cpus)
        chosen = self.tune_weights(opened) if config.sweep.weight_search.method == "optuna" else None
        rows, counts, paths, report = self.looks(opened, chosen)
        if report is not None:
            tr.log_arms(tracking, report["summary"])
        # every metric the runs logged is now known: the views chart only the comparison (MLflow charts the rest)
        logged = tr.logged_metric_keys(client, tracking.experiment_id)
        tr.share_comparison_view(client, tracking.experiment_id, _metric_name(config), logged)
        tr.finish(client, tracking.parent_run_id, "finished")
        ray.shutdown()
        return {
            "root": self.root,
            "tracking_uri": tracking.uri,
            "experiment_id": tracking.experiment_id,
            "teacher": teacher["metrics"],
            "metric": opened.metric,
            "rows": rows,
            "counts": counts,
            "results": paths,
            "report": report,
            "log": self.log,
        }

    def looks(self, opened: Opened, chosen) -> tuple[list, dict, dict, dict | None]:
        """The sweep and its analysis, once for a fixed design; look by look for a sequential one
        (``sweep.sequential``): each look runs the seeds it adds, and the study stops at the first look whose
        analysis decides every claim. Finished trials are kept, so a stopped or interrupted study resumes."""
        full = self.config
        plan = full.sweep.sequential
        for k, seeds in enumerate(plan.looks if plan else [len(full.sweep.seeds)], start=1):
            config = full.model_copy(
                update={"sweep": full.sweep.model_copy(update={"seeds": full.sweep.seeds[:seeds]})}
            )
            if plan:
                self.say(f"look {k} of {len(plan.looks)}: seeds {config.sweep.seeds}")
            rows, counts, paths = self.sweep(opened, config, chosen)
            report = self.analyse(opened) if full.analysis.enabled and counts["finished"] else None
            if not plan:
                break
            if report is not None and all_decided(report["summary"]["claims"]):
                self.say(f"look {k}: every claim decided; the study stops at {seeds} seeds")
                break
            if k < len(plan.looks):
                self.say(f"look {k}: claims still open; adding seeds up to {plan.looks[k]}")
        return rows, counts, paths, report

    def check_resources(self) -> None:
        """A trial's workers must each fit on one node of the cluster: refuse now (ResourceError, naming what was
        asked and what the nodes have) rather than wait forever after the teacher stage."""
        import ray

        plan_resources(self.config, ray.cluster_resources(), 1, nodes=node_resources())

    def progress(self, stage: str) -> ProgressFile:
        return ProgressFile(self.root / "progress" / f"{stage}.json")

    # --- stage 1: the teacher and its cache (one Ray task) -------------------------------------------
    def teacher_stage(self, tracking, cpus: float) -> dict[str, Any]:
        """The teacher and the shared cache for the whole grid; stops the study when the teacher has nothing to
        teach."""
        import ray

        from raykd import tracking as tr

        config = self.config
        folder = TeacherFolder.of(self.root, config)
        started = time.time()
        grid = trial_grid(config)
        record = StageRecord(folder.path, config, grid, tracking.study_uid)
        out = record.read()  # an unchanged re-run of this study: nothing to load or build
        if out is None:
            # max_calls=1: the stage's worker process exits afterwards instead of idling with a model in memory
            stage = ray.remote(num_cpus=cpus, num_gpus=math.ceil(config.compute.gpus_per_worker), max_calls=1)(
                _run_teacher_stage
            )
            progress = self.progress("teacher")
            ref = stage.remote(config, str(folder.path), grid, tracking, str(progress.path))
            out = wait_with_progress(ref, progress, self.console, "teacher")
            record.write(out)
        metrics, info = out["metrics"], folder.info
        metric = info["metric"]
        baseline = info.get("baseline") or {}
        self.say(
            f"teacher: test {metric} {metrics[f'test/{metric}']:.4f} ({time.time() - started:.0f} s with its "
            f"cache; in {folder.path}); trivial baseline ({baseline.get('name', '?')}) "
            f"{baseline.get(metric, float('nan')):.4f}"
        )
        if any((info.get("inputs_at_max_length") or {}).values()):
            self.say(
                f"inputs truncated to the length limit (or exactly that long): {inputs_at_max_length_line(info)}",
                stage=False,
            )
        self._check_teacher(tracking, metrics, info)
        cache = out["cache"]
        if cache is None:
            self.say("teacher cache: off (compute.teacher_cache.enabled); trials run the teacher live")
        else:
            self.say(f"teacher cache: {cache['plan']}; {cache['reason']} -> {cache['path'] or 'not built'}")

            tr.set_tags(
                tracking.client(),
                tracking.parent_run_id,
                {"raykd.teacher_cache": cache["path"] or f"live: {cache['reason']}"[:5000]},
            )
        return {"dir": folder.path, "metrics": metrics, "metric": metric, "cache": cache and cache["path"]}

    def _check_teacher(self, tracking, metrics: dict[str, float], info: dict[str, Any]) -> None:
        """Log the teacher's metrics; stop (WeakTeacher) when it barely beats its task's trivial baseline."""
        from raykd import tracking as tr
        from raykd.tasks.metrics import points_per_unit

        config, client, parent = self.config, tracking.client(), tracking.parent_run_id
        tr.log_metrics(client, parent, {f"teacher/{k}": v for k, v in metrics.items()}, 0, int(time.time() * 1000))
        metric, baseline = info["metric"], info.get("baseline") or {}
        scale = points_per_unit(metric)
        gain = teacher_gain(info, metrics, scale)
        if gain is None or gain >= config.teacher.min_gain_points:
            return
        message = (
            f"the teacher scores {metrics[f'test/{metric}'] * scale:.2f} test {metric} points, the trivial "
            f"baseline ({baseline.get('name')}) {baseline[metric] * scale:.2f}: a gain of {gain:.2f} points, "
            f"below teacher.min_gain_points ({config.teacher.min_gain_points:g}). There is nothing to distil, "
            "so the sweep would measure nothing. Train a better teacher (more data, steps or size), or set "
            "teacher.allow_weak: true to run the study anyway"
        )
        tr.set_tags(client, parent, {"raykd.weak_teacher": message[:5000]})
        if not config.teacher.allow_weak:
            tr.finish(client, parent, "failed", error="weak teacher")
            raise WeakTeacher(message)
        self.say(f"warning: {message} (teacher.allow_weak is set: going on)")

    # --- stage 2: the sweep --------------------------------------------------------------------------
    def sweep(self, opened: Opened, config: StudyConfig, chosen) -> tuple[list, dict, dict]:
        """Fit every grid trial that has not ended (earlier runs' trials are kept), then the results table."""
        import ray

        from raykd import tracking as tr

        tracking, context, metric = opened.tracking, opened.context, opened.metric
        client = tracking.client()
        grid = trial_grid(config, chosen)
        runs = trial_runs(tracking)
        pending = [
            t
            for t in grid
            if runs.get(t.trial_id) is None or runs[t.trial_id].data.tags.get(tr.STATUS) not in ("finished", "diverged")
        ]
        resources = plan_resources(config, ray.cluster_resources(), max(1, len(pending)), nodes=node_resources())
        self.say(f"sweep: {len(grid)} trials; {resources.describe()}")
        if len(pending) < len(grid):
            self.say(
                f"resuming: {len(grid) - len(pending)} of {len(grid)} trials already ended; running {len(pending)}"
            )
        progress = Progress(
            len(grid),
            metric,
            already_done=len(grid) - len(pending),
            console=self.console,
            steps=_steps_per_trial(config, context),
            study_dir=self.root,
        )
        if pending:
            fit(self.ray_storage, "sweep", config, context, resources, [progress.callback], trials=pending)
        runs = trial_runs(tracking)
        for trial_id, error in progress.errors.items():  # a process that died beyond its retries closed nothing
            run = runs.get(trial_id)
            if run is not None and run.data.tags.get(tr.STATUS) is None:
                tr.finish(client, run.info.run_id, "failed", error=error)
        rows = results_table(trial_runs(tracking), grid, metric, progress.errors)
        paths = write_results(rows, self.root / "results", metric)
        for path in paths.values():
            client.log_artifact(tracking.parent_run_id, str(path), "results")
        counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "diverged", "failed")}
        tr.set_tags(client, tracking.parent_run_id, {f"raykd.trials_{k}": str(v) for k, v in counts.items()})
        self.say(
            f"sweep done: {counts['finished']} finished, {counts['diverged']} diverged, {counts['failed']} failed "
            f"({progress.elapsed():.0f} s)"
        )
        self.say(cell_means(rows, metric), stage=False)
        return rows, counts, paths

    # --- stage 3: the analysis ----------------------------------------------------------------------
    def analyse(self, opened: Opened) -> dict[str, Any] | None:
        """The analysis actor's run. A failure here is reported and leaves every trial result in place.

        The actor starts once the trial actors are gone: pre-started, its imports and teacher (~0.6 GB) sat
        beside the trials through the whole sweep to save ~13 s at its end.
        """
        import ray

        from raykd.analysis.pipeline import analysis_actor_class

        started = time.time()
        progress = self.progress("analysis")
        actor = analysis_actor_class().options(num_cpus=0).remote()  # its threads are the stage's, below
        try:
            ref = actor.run.remote(
                str(self.root),
                tracking_uri=opened.tracking.uri,
                threads=int(opened.cpus),
                progress_path=str(progress.path),
            )
            out = wait_with_progress(ref, progress, self.console, "analysis")
        except Exception as error:  # noqa: BLE001 - the trials are done; say what broke and carry on
            self.say(
                f"analysis failed ({type(error).__name__}: {str(error).splitlines()[0][:300]}); the trial results "
                f"are in {self.root / 'results'}; retry with: python studies/analyze.py --study {self.root}"
            )
            return None
        finally:
            ray.kill(actor)
        self.console.line(out["verdict_block"])
        self.say(f"analysis: {time.time() - started:.0f} s; report {out['paths']['report']}")
        return out

    # --- optional stage 1c: the hidden-loss weight per cell -----------------------------------------
    def tune_weights(self, opened: Opened) -> dict:
        """Optuna TPE per (strategy, init) cell at the tuning seed; returns the chosen weights."""
        import ray

        from raykd import tracking as tr
        from raykd.weight_search import CellwiseOptuna, tuning_cells

        config, root = self.config, self.root
        saved = root / "results" / "chosen_weights.json"
        if saved.is_file():
            chosen = {tuple(k.split("/")): v for k, v in json.loads(saved.read_text()).items()}
            self.say(f"chosen weights (from {saved}): {chosen}")
            return chosen
        cells = tuning_cells(config)
        n = len(cells) * config.sweep.weight_search.trials_per_cell
        resources = plan_resources(config, ray.cluster_resources(), n, nodes=node_resources())
        self.say(
            f"weight search: Optuna TPE, {config.sweep.weight_search.trials_per_cell} trials x {len(cells)} cells; "
            f"{resources.describe()}"
        )
        searcher = CellwiseOptuna(config, mode="max")
        progress = Progress(n, opened.metric, console=self.console)
        fit(
            self.ray_storage,
            "weight_search",
            config,
            opened.context,
            resources,
            [progress.callback],
            search_alg=searcher,
            num_samples=n,
            restore=True,
        )
        runs = trial_runs(opened.tracking)
        specs = [
            TrialSpec(trial_id, **arm_of(run.data.tags), phase="tune")
            for trial_id, run in runs.items()
            if trial_id and trial_id.startswith(TUNE_PREFIX)
        ]
        rows = results_table(runs, specs, opened.metric, progress.errors)
        write_results(rows, root / "results" / "weight_search", opened.metric)
        chosen = chosen_weights(rows, cells)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({f"{s}/{i}": w for (s, i), w in chosen.items()}, indent=2))
        client = opened.tracking.client()
        client.log_artifact(opened.tracking.parent_run_id, str(saved), "results")
        tr.set_tags(client, opened.tracking.parent_run_id, {"raykd.weight_search": "done"})
        shown = ", ".join(f"{s}/{i} {w if w is None else f'{w:.3g}'}" for (s, i), w in chosen.items())
        self.say(f"chosen weights (best validation {opened.metric}): {shown}")
        return chosen


class StageRecord:
    """What the teacher stage answered for this study and grid (``<teacher>/stage.json``). A re-run of the same
    study with the same grid (a resume) reads it instead of starting a Ray task that would load the teacher only to
    find its folder and cache complete. Another study (a copied teacher folder) or another grid runs the stage."""

    def __init__(self, folder: Path, config: StudyConfig, grid: list, study_uid: str) -> None:
        self.path = folder / "stage.json"
        cache = config.compute.teacher_cache.model_dump(mode="json")
        self.key = config_hash({"grid": [t.trial_id for t in grid], "identity": config.identity(), "cache": cache})
        self.study_uid = study_uid

    def read(self) -> dict[str, Any] | None:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if saved.get("key") != self.key or saved.get("study_uid") != self.study_uid:
            return None
        out = saved["out"]
        cache = out.get("cache")
        if not (self.path.parent / "metrics.json").is_file():
            return None
        if cache and cache.get("path") and not (Path(cache["path"]) / "index.json").is_file():
            return None
        if cache:
            out["cache"] = {**cache, "reason": "reused"}
        return out

    def write(self, out: dict[str, Any]) -> None:
        record = {"key": self.key, "study_uid": self.study_uid, "out": out}
        with contextlib.suppress(OSError, TypeError, ValueError):  # a courtesy for re-runs, never a failure
            tmp = self.path.with_name(".stage.json.tmp")
            tmp.write_text(json.dumps(record, default=str))
            tmp.replace(self.path)


def trial_runs(tracking) -> dict[str, Any]:
    """The study's trial runs in MLflow, by trial id."""
    from raykd import tracking as tr

    return {
        r.data.tags.get(tr.TRIAL_ID): r
        for r in tr.study_runs(tracking.client(), tracking.experiment_id, tracking.study_uid, "trial")
    }


def _run_teacher_stage(*args: Any) -> dict[str, Any]:
    """`raykd.train.teacher.teacher_stage`, imported in the Ray worker: the driver never loads the training
    stack (torch models, transformers, datasets), which keeps it small and quick to start."""
    from raykd.train.teacher import teacher_stage

    return teacher_stage(*args)


def _steps_per_trial(config: StudyConfig, context) -> int | None:
    """Optimisation steps of one trial (for the sweep's progress line), from the tokenized training split."""
    examples = (TeacherFolder(context.teacher_dir).info.get("split_sizes") or {}).get("train")
    return steps_per_trial(config, examples) if examples else None


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


def _metric_name(config: StudyConfig) -> str:

    from raykd.tasks import TASKS

    return config.task.metric or TASKS.get(config.task.type).default_metric


def mlflow_ui_command(tracking_uri: str, experiment_id: str, port: int = 5000) -> str:
    """The command that serves the study's MLflow UI, and the pages to open: the chart tab of its comparison view,
    and its arms, a row each."""
    from raykd.tracking import ARMS_VIEW, comparison_url

    served = tracking_uri.startswith(("http://", "https://"))
    base = tracking_uri if served else f"http://127.0.0.1:{port}"
    pages = (
        f"open {comparison_url(base, experiment_id)} (the arms, a row each: "
        f"{comparison_url(base, experiment_id, ARMS_VIEW, mode='TABLE')})"
    )
    return pages if served else f"mlflow ui --backend-store-uri {tracking_uri} --port {port}   then {pages}"
