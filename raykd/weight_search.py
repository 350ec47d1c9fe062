"""Tune the hidden-loss weight per (strategy, init) cell with Optuna TPE, inside one Ray Tune run.

Ray's OptunaSearch cannot take grid dimensions, so this small `Searcher` keeps one Optuna study per
cell and hands out trials round-robin across cells (cells tune concurrently). Each tuning trial runs at
the tuning seed and reports its best validation metric; the best weight of each cell then runs on every
seed in the main sweep (`chosen_weights`). `none` has no hidden loss and is not tuned.
"""

from __future__ import annotations

import pickle
from typing import Any

import optuna
from ray.tune.search import Searcher

from raykd.config import StudyConfig
from raykd.trial import NONE, TUNE_PREFIX, TrialSpec


def tuning_cells(config: StudyConfig) -> list[tuple[str, str]]:
    return [(s, i) for s in config.sweep.strategies if s != NONE for i in config.sweep.inits]


class CellwiseOptuna(Searcher):
    """One TPE study per (strategy, init) cell; `trials_per_cell` trials each, then FINISHED."""

    def __init__(self, config: StudyConfig, *, metric: str = "best_validation", mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        search = config.sweep.weight_search
        self.search = search.model_dump()
        self.tune_seed = search.seed if search.seed is not None else config.sweep.seeds[0]
        self.cells = tuning_cells(config)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.studies = {
            cell: optuna.create_study(
                direction="maximize" if mode == "max" else "minimize",
                sampler=optuna.samplers.TPESampler(seed=search.sampler_seed + k),
            )
            for k, cell in enumerate(self.cells)
        }
        self.asked = dict.fromkeys(self.cells, 0)
        self.live: dict[str, tuple[tuple[str, str], int]] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        open_cells = [c for c in self.cells if self.asked[c] < self.search["trials_per_cell"]]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda c: self.asked[c])
        trial = self.studies[cell].ask()
        weight = trial.suggest_float("weight", self.search["low"], self.search["high"], log=self.search["log"])
        n = self.asked[cell]
        self.asked[cell] += 1
        self.live[trial_id] = (cell, trial.number)
        strategy, init = cell
        spec = TrialSpec(
            f"{TUNE_PREFIX}{strategy}-{init}-n{n}", strategy, init, round(weight, 6), self.tune_seed, phase="tune"
        )
        return {"trial": spec.as_dict()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return
        cell, number = self.live.pop(trial_id)
        value = None if error or not result or result.get("status") != "finished" else result.get(self.metric)
        if value is None:
            self.studies[cell].tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.studies[cell].tell(number, float(value))

    def chosen_weights(self) -> dict[tuple[str, str], float | None]:
        """The best weight of each cell (None when no tuning trial of the cell finished)."""
        out = {}
        for cell, study in self.studies.items():
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            out[cell] = round(study.best_trial.params["weight"], 6) if done else None
        return out

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"studies": self.studies, "asked": self.asked, "live": self.live}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.studies, self.asked, self.live = state["studies"], state["asked"], state["live"]
