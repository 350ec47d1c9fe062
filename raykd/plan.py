"""The dry-run plan: the trial grid, every seed's layer maps, copied blocks, resources and the work, printed
without starting anything (``studies/strategy_grid.py --dry-run``)."""

from __future__ import annotations

import math

from raykd.config import StudyConfig
from raykd.sweep import estimate
from raykd.trial import NONE, trial_grid, trial_layer_maps
from raykd.validate import teacher_depths


def dry_run(config: StudyConfig) -> str:

    from raykd.student import copied_layers

    grid = trial_grid(config)
    sweep = config.sweep
    lines = [
        (
            f"study {config.name}: task {config.task.type} ({config.task.metric or 'default metric'}), "
            f"teacher {config.teacher.source} {config.teacher.name or config.teacher.model.get('model_type')}"
        ),
        (
            f"{len(grid)} trials ({len(sweep.strategies)} strategies x {len(sweep.inits)} inits x "
            f"{len(sweep.seeds)} seeds, weights {sweep.weights}; '{NONE}' runs once per weight-free cell)"
        ),
    ]
    teachers = teacher_depths(config)
    if teachers is None:
        lines.append("layer maps: known once the teacher loads (set teacher.depths to see them here)")
    else:
        kind = _kind(config, teachers)
        students = {
            s: (config.student.depth[s] if isinstance(config.student.depth, dict) else config.student.depth)
            for s in teachers
        }
        lines.append(f"teacher depths {teachers}, student depths {students}")
        for strategy in sweep.strategies:
            per_seed = {
                seed: trial_layer_maps(config, strategy, seed, students, teachers, kind) for seed in sweep.seeds
            }
            distinct = {str(m) for m in per_seed.values()}
            if len(distinct) == 1:
                lines.append(f"  {strategy:>10} (every seed): {per_seed[sweep.seeds[0]]}")
                continue
            lines.append(f"  {strategy:>10} (per seed):")
            lines += [f"  {'':>10}   seed {seed}: {maps}" for seed, maps in per_seed.items()]
            if strategy == "random":
                lines.append("  " + random_deal_note(config, students))
        if "teacher" in sweep.inits:
            copies = {s: copied_layers(config.student.copy_rule, students[s], teachers[s], stack=s) for s in teachers}
            head = {
                None: "by head type (a classifier's head fresh, LM heads copied)",
                True: "copied",
                False: "drawn fresh",
            }[config.student.copy_head]
            lines.append(
                f"teacher init copies blocks {copies} (copy_rule {config.student.copy_rule}); task head {head}"
            )
    compute = config.compute
    lines.append(
        f"per trial: {compute.num_workers} worker(s) x ({compute.cpus_per_worker:g} CPU"
        f"{f', {compute.gpus_per_worker:g} GPU' if compute.gpus_per_worker else ''}); "
        f"concurrency {'max ' + str(compute.max_concurrent_trials) if compute.max_concurrent_trials else 'what the cluster fits'}"
    )
    lines.append("work: " + estimate(config, len(grid), config.task.data.max_examples.get("train")))
    lines += [f"  {t.trial_id}" for t in grid]
    return "\n".join(lines)


def random_deal_note(config: StudyConfig, students: dict[str, int]) -> str:
    """How the `random` strategy's permutations are spread over this study's seeds."""
    deal = config.sweep.strategy_options.get("random", {}).get("deal", "distinct")
    if deal != "distinct":
        return "random: an independent permutation per seed (may repeat, or equal forward or reverse)"
    blocks = min(students.values())
    available = math.factorial(blocks) - 2
    n = len(config.sweep.seeds)
    if n <= available:
        return (
            f"random: {n} seeds get distinct permutations, none of them forward or reverse "
            f"({available} such permutations of {blocks} blocks)"
        )
    return (
        f"random: {n} seeds share the {available} permutations other than forward and reverse, each used "
        f"{n // available}-{-(-n // available)} times (balanced)"
    )


def _kind(config: StudyConfig, teachers: dict[str, int]) -> str:
    from raykd.families import FAMILIES

    if config.teacher.source == "config":
        return FAMILIES.get(config.teacher.model["model_type"]).kind
    return "decoder" if list(teachers) == ["decoder"] else ("encoder_decoder" if len(teachers) == 2 else "encoder")
