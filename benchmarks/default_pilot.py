"""The default study's pilot: which cheap design makes "does matching matter?" decidable on a laptop CPU?

    python benchmarks/default_pilot.py                       # every setting below (hours on a 2-core CPU)
    python benchmarks/default_pilot.py --only d384_s250 --seeds 0 1 2 3

For each setting, a real study (``studies/strategy_grid.py``: teacher stage, cache, Ray trials, MLflow) of
forward vs none at random init over ``--seeds``, on ``BASE_CONFIG`` (the _long design) with the setting's overrides. Per
setting it reports the gain of matching (forward - none, test accuracy points, paired by seed), its paired
sd, the teacher's accuracy, the worker time per trial and the wall time of the study, and from the paired sd
the seeds a two-sided paired t-test needs to detect the observed gain with 80% power. Results:
``results/default_pilot.json`` and a markdown table on stdout (kept in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The pilot's base: the design that trains twice as much (batch 32, 2 epochs, length 32), the default when the pilot ran
BASE_CONFIG = ROOT / "studies" / "configs" / "minilm6_to_3l_tweets_long.yaml"
# name -> (what it tries, overrides of BASE_CONFIG)
BERT = "distill.loss.hidden_reduction=bert_released"
# every setting: the teacher fine-tuned one epoch on 4,000 tweets at max length 32 (~2 min on 2 AVX2 cores in fp32)
BASE = ["task.max_length=32", "teacher.train.epochs=1", "teacher.train.lr=1.0e-4"]
SETTINGS = {
    "d192_s250": ("width 192 (projections), 250 steps, released BERT scale", [*BASE, BERT, "student.width=192"]),
    "d192_s250_elem": (
        "width 192, 250 steps, hidden loss an element mean (~6x weaker at width 192)",
        [*BASE, "student.width=192", "distill.loss.hidden_reduction=element_mean"],
    ),
    "d192_s125": (
        "width 192, 125 steps (1 epoch), released BERT scale",
        [*BASE, BERT, "student.width=192", "distill.train.epochs=1"],
    ),
    "d384_s250": ("width 384 (the teacher's), 250 steps, released BERT scale", [*BASE, BERT]),
    "d192_s500": (
        "width 192, 500 steps (4 epochs), released BERT scale",
        [*BASE, BERT, "student.width=192", "distill.train.epochs=4"],
    ),
    # the cheaper-compute designs for the 20-minute budget: the same 250 steps at half the batch (one epoch),
    # and also shorter sequences (a new teacher: fine-tuned at max length 24)
    "d384_b16": (
        "width 384, 250 steps of batch 16 (1 epoch), released BERT scale",
        [*BASE, BERT, "distill.train.batch_size=16", "distill.train.epochs=1"],
    ),
    "d384_b16_l24": (
        "width 384, 250 steps of batch 16, max length 24 (teacher too), released BERT scale",
        [*BASE, "task.max_length=24", BERT, "distill.train.batch_size=16", "distill.train.epochs=1"],
    ),
}


def seeds_needed(gain: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Seeds a two-sided paired t-test needs to detect `gain` with `power` (None: not reachable by 1000)."""
    from statsmodels.stats.power import TTestPower

    if sd == 0 or gain == 0:
        return None
    effect = abs(gain) / sd
    for n in range(2, 1001):
        if TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided") >= power:
            return n
    return None


def reuse_teacher(name: str, overrides: list[str], output_dir: Path) -> str | None:
    """Copy a finished teacher stage with the same key from an earlier setting's study into this one's (settings
    that change only the distillation share their teacher: no need to fine-tune it again)."""
    import shutil

    from raykd.teacher_folder import TeacherFolder
    from raykd.validate import load_study_config

    config = load_study_config(BASE_CONFIG, [*overrides, f"name=pilot_{name}"])
    target = TeacherFolder.of(output_dir / config.name, config)
    for other in sorted(output_dir.glob("pilot_*")):
        source = other / "teacher" / target.path.name
        if other.name != config.name and (source / "metrics.json").is_file():
            shutil.rmtree(output_dir / config.name, ignore_errors=True)
            shutil.copytree(source, target.path, ignore=shutil.ignore_patterns("cache"))
            return str(source)
    return None


def run_setting(name: str, overrides: list[str], seeds: list[int], output_dir: Path) -> dict:
    reused = reuse_teacher(name, overrides, output_dir)
    cmd = [
        sys.executable,
        str(ROOT / "studies" / "strategy_grid.py"),
        "--output-dir",
        str(output_dir),
        "--name",
        f"pilot_{name}",
        "--set",
        "sweep.strategies=[forward,none]",
        "--set",
        "sweep.inits=[random]",
        "--set",
        f"sweep.seeds=[{','.join(map(str, seeds))}]",
        "--set",
        "analysis.enabled=false",
    ]
    for item in overrides:
        cmd += ["--set", item]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    table = json.loads((output_dir / f"pilot_{name}" / "results" / "trials.json").read_text())["trials"]
    by = {(r["strategy"], r["seed"]): r for r in table}
    diffs = [100 * (by[("forward", s)]["metric"] - by[("none", s)]["metric"]) for s in seeds]
    teacher = next(line for line in proc.stdout.splitlines() if line.startswith("[raykd] teacher: test"))
    worker = _worker_times(output_dir / f"pilot_{name}" / "mlflow.db", f"pilot_{name}")
    gain, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    return {
        "setting": name,
        "command": " ".join(["python", "benchmarks/default_pilot.py", *sys.argv[1:]]),
        "overrides": overrides,
        "seeds": seeds,
        "teacher": teacher,
        "teacher_reused_from": reused,
        "forward": [round(100 * by[("forward", s)]["metric"], 2) for s in seeds],
        "none": [round(100 * by[("none", s)]["metric"], 2) for s in seeds],
        "gain_points": round(gain, 2),
        "paired_sd_points": round(sd, 2),
        "seeds_to_detect_80": seeds_needed(gain, sd),
        "steps": table[0]["steps"],
        "worker_s_median": round(statistics.median(worker), 1),
        "study_wall_s": round(wall, 1),
    }


def _worker_times(db: Path, name: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`raykd.role` = 'trial'")
    return [r.data.metrics["time.worker_s"] for r in runs if "time.worker_s" in r.data.metrics]


def markdown(rows: list[dict]) -> str:
    lines = [
        (
            "| setting | steps | teacher | forward | none | gain (fwd - none) | paired sd | seeds for 80% | "
            "worker s/trial | study wall s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        teacher = r["teacher"].split("test accuracy ")[1].split(" ")[0]
        lines.append(
            f"| {r['setting']}: {SETTINGS[r['setting']][0]} | {r['steps']} | {float(teacher) * 100:.1f} | "
            f"{statistics.fmean(r['forward']):.2f} | {statistics.fmean(r['none']):.2f} | {r['gain_points']:+.2f} | "
            f"{r['paired_sd_points']:.2f} | {r['seeds_to_detect_80'] or '> 1000'} | {r['worker_s_median']} | "
            f"{r['study_wall_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--output-dir", default="/tmp/raykd-pilot")
    parser.add_argument("--out", default=str(HERE / "results" / "default_pilot.json"))
    args = parser.parse_args()
    out = Path(args.out)
    previous = {r["setting"]: r for r in json.loads(out.read_text())["rows"]} if out.is_file() else {}
    for name in args.only or list(SETTINGS):
        print(f"[pilot] {name}: {SETTINGS[name][0]} ...", flush=True)
        previous[name] = run_setting(name, SETTINGS[name][1], args.seeds, Path(args.output_dir))
        print(f"[pilot] {json.dumps(previous[name])}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [previous[k] for k in SETTINGS if k in previous]
        out.write_text(
            json.dumps(
                {
                    "command": "per row: rows[i].command",
                    "rows": rows,
                    "table": markdown(rows),
                },
                indent=2,
            )
        )
    print(markdown([previous[k] for k in SETTINGS if k in previous]))


if __name__ == "__main__":
    main()
