"""What a user sees on the console: one line per stage, live progress for anything long, and Ray kept quiet.

- `Console`: the study's own output. ``normal`` prints stage lines and live progress (a line rewritten in place
  on a terminal, a line every `every_s` seconds otherwise); ``quiet`` prints one line per stage and the verdict;
  ``verbose`` also leaves Ray's, Tune's and MLflow's own output on the console.
- `quiet_libraries`: outside verbose mode, Ray's, Tune's, Train's and MLflow's console output (Tune's
  experiment box and TensorBoard hint, raylet warnings, MLflow's database messages) goes to a log file in the
  study folder, named when the study starts; a failure prints the log's last lines and its path.
- `ProgressFile`: how a stage running in a Ray task or actor (teacher fine-tuning, cache build, analysis)
  tells the driver where it is: a small JSON file in the study folder (shared storage on a cluster), replaced
  atomically, polled by the driver while it waits.
- `Progress`: the sweep as the user sees it (a line per ended trial, the best per cell, a live line of the running
  trials).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

MODES = ("quiet", "normal", "verbose")
LIBRARY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "alembic", "filelock", "urllib3")


class Console:
    """The study's own lines. Writes to the real stdout even while library output is redirected."""

    def __init__(self, mode: str = "normal", stream: TextIO | None = None, every_s: float = 10.0) -> None:
        if mode not in MODES:
            raise ValueError(f"console mode must be one of {MODES}, got {mode!r}")
        self.mode, self.every_s = mode, every_s
        self.stream = stream or sys.__stdout__
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last: dict[str, float] = {}
        self._pending = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks: the stream is this process's own
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = sys.__stdout__

    def line(self, text: str, *, stage: bool = True) -> None:
        """A line every mode shows when `stage` (the study's stage lines), else only normal and verbose."""
        if self.mode == "quiet" and not stage:
            return
        self._end_progress()
        self.stream.write(text + "\n")
        self.stream.flush()

    def progress(self, key: str, text: str, *, force: bool = False) -> None:
        """Live progress of a long step (not in quiet mode): rewritten in place on a terminal; elsewhere at most
        one line per `every_s` seconds per key (and always when `force`)."""
        if self.mode == "quiet":
            return
        if self.live:
            self.stream.write("\r\033[K" + text[: os.get_terminal_size().columns - 1 if _has_size() else 200])
            self.stream.flush()
            self._pending = True
            return
        now = time.monotonic()
        if force or now - self._last.get(key, 0.0) >= self.every_s:
            self._last[key] = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def _end_progress(self) -> None:
        if self._pending:
            self.stream.write("\r\033[K")
            self._pending = False


def _has_size() -> bool:
    try:
        os.get_terminal_size()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_libraries(log_path: Path, mode: str = "normal") -> Iterator[Path]:
    """Send Ray's, Tune's, Train's and MLflow's console output to `log_path` (not in verbose mode).

    Python-level prints (Tune's reporter) are redirected with stdout/stderr; library loggers get a file handler
    instead of their console handlers. Output of child processes is not touched (Ray workers log to Ray's own
    session folder; `log_to_driver=False`).
    """
    if mode == "verbose":
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below
    file_handler = logging.StreamHandler(handle)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = {}
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate)
        logger.handlers = [h for h in logger.handlers if not _is_console(h)] + [file_handler]
        logger.propagate = False
    root = logging.getLogger()
    root_handlers = list(root.handlers)
    root.handlers = [h for h in root.handlers if not _is_console(h)] + [file_handler]
    try:
        with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            yield log_path
    finally:
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        root.handlers = root_handlers
        handle.close()


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stdout,
        sys.stderr,
        sys.__stdout__,
        sys.__stderr__,
    )


def log_tail(log_path: Path, lines: int = 25) -> str:
    """The last lines of a log file (for a failure message)."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ProgressFile:
    """A stage's progress, written by the stage (any process, any node with the shared folder), read by the driver."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, stage: str, **fields: Any) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"stage": stage, "time": time.time(), **fields}))
            tmp.replace(self.path)
        except OSError:  # progress is a courtesy: never fail a stage over it
            pass

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def trial_progress_dir(study_dir: str | Path) -> Path:
    return Path(study_dir) / "progress" / "trials"


def trial_progress(study_dir: str | Path, trial_id: str) -> ProgressFile:
    """Where a trial's rank 0 writes its step between evaluations, for the sweep's live line."""
    return ProgressFile(trial_progress_dir(study_dir) / f"{trial_id}.json")


def describe(event: dict[str, Any]) -> str:
    """One progress line from a stage's event."""
    stage = event.get("stage", "?")
    if "step" in event and "steps" in event:
        done, total = event["step"], event["steps"]
        text = f"[{stage}] step {done}/{total} ({100 * done / max(total, 1):.0f}%)"
        if event.get("loss") is not None:
            text += f", loss {event['loss']:.3f}"
        if event.get("eta_s") is not None:
            text += f", ETA {_duration(event['eta_s'])}"
        return text
    if "done" in event and "of" in event:
        return f"[{stage}] {event.get('what', '')} {event['done']}/{event['of']}".replace("  ", " ")
    return f"[{stage}] {event.get('what', 'working')}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def wait_with_progress(ref, progress: ProgressFile, console: Console, key: str, poll_s: float = 1.0):
    """`ray.get(ref)`, printing the stage's progress events while it runs."""
    import ray

    seen = None
    while True:
        ready, _ = ray.wait([ref], timeout=poll_s)
        event = progress.read()
        if event is not None and event != seen:
            seen = event
            console.progress(key, describe(event))
        if ready:
            progress.clear()
            return ray.get(ref)


class Progress:
    """The sweep as the user sees it: a line per ended trial (counts, its metric, an ETA), the best per cell every
    five, and between them a live line of the running trials (step and latest validation metric).

    Trials report to Tune only at evaluations (minutes apart); between them each trial's rank 0 writes its step
    (and the step it started from, past a resume) to a progress file in the study folder when it starts and every
    ``log_every`` steps (`raykd.console.trial_progress`), which the line polls (`poll_s`), so it moves during a
    trial's first epoch too. Files from before this sweep started (a killed driver's, a retried trial's) are
    ignored and removed."""

    def __init__(
        self,
        n_trials: int,
        metric: str,
        *,
        higher_is_better: bool = True,
        already_done: int = 0,
        console=None,
        steps: int | None = None,
        study_dir: str | Path | None = None,
        poll_s: float | None = None,
    ) -> None:
        from ray.tune import Callback

        outer = self

        class _Callback(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                outer.start(trial)

            def on_trial_result(self, iteration, trials, trial, result, **info):
                outer.result(trial, result)

            def on_step_end(self, iteration, trials, **info):
                outer.poll()

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.done(trial, failed=False)

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.done(trial, failed=True)

        self.callback = _Callback()
        self.console = console or Console()
        self.n, self.metric, self.higher, self.steps = n_trials, metric, higher_is_better, steps
        self.finished, self.failed, self.running = already_done, 0, {}  # earlier runs' trials count as done
        self.best: dict[tuple, float] = {}
        self.started = time.time()
        self.work = 0.0  # trials' worth of steps run in this sweep, by the trials that ended in it
        self.errors: dict[str, str] = {}
        self.study_dir = study_dir
        self.poll_s = poll_s if poll_s is not None else (10.0 if self.console.live else 60.0)
        self.polled = time.monotonic()
        if study_dir is not None:  # an earlier driver's (killed before its trials ended)
            for stale in trial_progress_dir(study_dir).glob("*.json"):
                stale.unlink(missing_ok=True)

    def elapsed(self) -> float:
        return time.time() - self.started

    def eta_s(self) -> float | None:
        """Seconds left at this sweep's pace. Work done counts the steps run here, by the trials that ended and by
        the running ones (trials run side by side: ended trials alone make the pace look halved when the first
        ends), not the steps a resumed trial had run before (they took no time here)."""
        if not self.steps:
            work, partial = self.work, 0.0
        else:
            running = self.running.values()
            work = self.work + sum(max(e["step"] - (e["start"] or 0), 0) / self.steps for e in running)
            partial = sum(min(e["step"] / self.steps, 1.0) for e in running)
        if work <= 0:
            return None
        left = max(self.n - (self.finished + self.failed) - partial, 0.0)
        return self.elapsed() / work * left

    def start(self, trial) -> None:
        """A trial (or a retry of one) starts: whatever its progress file says is from an earlier attempt."""
        entry = self.running[trial.trial_id] = _running_entry(trial)
        if self.study_dir is not None:
            trial_progress(self.study_dir, entry["name"]).clear()

    def result(self, trial, result: dict) -> None:
        """A trial reported (at an evaluation point): refresh the live line."""
        entry = self.running.setdefault(trial.trial_id, _running_entry(trial))
        for other in self.running.values():  # the others' steps as of now, so the ETA does not jump at a report
            self.read(other)
        if isinstance(result.get("step"), (int, float)):
            entry["step"] = max(entry["step"], int(result["step"]))
        value = result.get(f"validation/{self.metric}")
        if value is not None:
            entry["validation"] = value
        self.show()

    def read(self, entry: dict[str, Any]) -> bool:
        """Update a running trial's step (and start) from its progress file; whether its step moved. Progress is a
        courtesy: anything unreadable, malformed or older than this sweep is ignored."""
        if self.study_dir is None:
            return False

        try:
            event = trial_progress(self.study_dir, entry["name"]).read()
            if not isinstance(event, dict) or not float(event.get("time", 0)) >= self.started:
                return False
            step, start = event.get("step"), event.get("start")
            if isinstance(start, int) and entry["start"] is None:
                entry["start"] = start
            if isinstance(step, int) and step > entry["step"]:
                entry["step"] = step
                return True
        except Exception:  # noqa: BLE001 - never let the live line stop the sweep
            return False
        return False

    def poll(self) -> None:
        """Every `poll_s`: the running trials' steps from their progress files; the live line when one moved."""
        if self.study_dir is None or time.monotonic() - self.polled < self.poll_s:
            return
        self.polled = time.monotonic()
        moved = [self.read(entry) for entry in self.running.values()]
        if any(moved):
            self.show(force=True)

    def show(self, force: bool = False) -> None:
        """The live line: each running trial's step and latest validation metric, and the ETA."""
        parts = []
        for item in self.running.values():
            where = f"step {item['step']}" + (f"/{self.steps}" if self.steps else "")
            if item.get("validation") is not None:
                where += f", val {item['validation']:.4g}"
            parts.append(f"{item['name']} {where}")
        eta = self.eta_s()
        self.console.progress(
            "sweep",
            f"[sweep] {self.finished + self.failed}/{self.n} done"
            + (f", ETA {eta / 60:.1f} min" if eta is not None else "")
            + "; running: "
            + "; ".join(parts),
            force=force,
        )

    def done(self, trial, *, failed: bool) -> None:
        entry = self.running.pop(trial.trial_id, None) or {"step": 0, "start": None}
        spec = trial.config["trial"]
        if self.study_dir is not None:
            trial_progress(self.study_dir, spec["trial_id"]).clear()
        result = trial.last_result or {}
        value = result.get(f"test/{self.metric}")
        status = "failed" if failed else result.get("status", "failed")
        if failed:
            self.errors[spec["trial_id"]] = str(getattr(trial, "error_msg", None) or "the trial's process failed")
        if failed or status != "finished":
            self.failed += 1
        else:
            self.finished += 1
            self.work += 1.0 - (entry["start"] or 0) / self.steps if self.steps else 1.0
            cell = (spec["strategy"], spec["init"])
            if value is not None and (cell not in self.best or (value > self.best[cell]) == self.higher):
                self.best[cell] = value
        total_done = self.finished + self.failed
        for other in self.running.values():
            self.read(other)
        eta = self.eta_s() or 0.0
        shown = "-" if value is None else f"{value:.4g}"
        self.console.line(
            f"[{total_done}/{self.n} done, {len(self.running)} running, {self.failed} failed/diverged, "
            f"ETA {eta / 60:.1f} min] {spec['trial_id']}: {status}, test {self.metric} {shown}",
            stage=False,
        )
        if total_done % 5 == 0 and total_done < self.n:
            self.console.line(f"    {self.summary()}", stage=False)

    def summary(self) -> str:
        cells = ", ".join(f"{s}/{i} {v:.4g}" for (s, i), v in sorted(self.best.items()))
        return f"best test {self.metric} per cell: {cells}" if cells else "no finished trial"


def _running_entry(trial) -> dict[str, Any]:
    """A running trial as the live line tracks it: its name, latest step and the step it started from."""
    return {"name": trial.config["trial"]["trial_id"], "step": 0, "start": None}
