"""Run raykd's benchmarks, write ``results/benchmarks.json`` and print a readable table.

    python benchmarks/run.py                      # 1-4 and 6 (about 15 min on 2 CPU cores)
    python benchmarks/run.py --only teacher_cache --steps 40
    python benchmarks/default_study.py            # 5: the default study end to end (separately: ~20 min)
    python benchmarks/gpu.py                      # 7: on a GPU machine

Every benchmark compares against a baseline in the same run and reports ratios (medians over steps or
trials): these machines are noisy, so ratios mean more than absolute times. See RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

STEP_BENCHES = ("worker_vs_loop", "vs_hf_trainer", "teacher_cache")
ALL = (*STEP_BENCHES, "orchestration")


def table(results: dict) -> str:
    rows = ["| benchmark | measured | baseline | ratio / value | target | met |", "|---|---|---|---|---|---|"]
    if r := results.get("worker_vs_loop"):
        rows.append(
            f"| 1 step in the study's trial (Tune + local mode) vs plain loop | {r['worker_examples_per_s']} ex/s | "
            f"{r['loop_examples_per_s']} ex/s | overhead {r['overhead']:+.1%} | <= +3% | {r['met']} |"
        )
    if r := results.get("vs_hf_trainer"):
        cached = (
            f", cached {r['raykd_cached_examples_per_s']} ex/s (x{r['ratio_cached']})" if "ratio_cached" in r else ""
        )
        rows.append(
            f"| 2 raykd loop vs HF Trainer subclass | live {r['raykd_live_examples_per_s']} ex/s (x{r['ratio_live']}){cached} "
            f"| {r['hf_trainer_examples_per_s']} ex/s | x{r.get('ratio_cached', r['ratio_live'])} | >= x1.0 | {r['met']} |"
        )
    if r := results.get("teacher_cache"):
        if "error" in r:
            rows.append(f"| 3 teacher cache on vs off | {r['error']} | | | <= 0.7x | False |")
        else:
            rows.append(
                f"| 3 teacher cache on vs off | {r['cached_step_s']} s/step | {r['live_step_s']} s/step | {r['ratio']}x "
                f"(val acc {r['validation_accuracy_cached']} vs {r['validation_accuracy_live']}) | <= 0.7x | {r['met']} |"
            )
    if r := results.get("orchestration"):
        o, b, s = r["overhead"], r["baseline_isolated"], r["scaling"]
        rows.append(
            f"| 4 orchestration per trial (run / sweep) | {o['run_median_s']} s / {o['sweep_median_s']} s (n={o['trials']}) | "
            f"worker group per trial: {b['run_median_s']} s / {b['sweep_median_s']} s | worker time {o['median_worker_s']} s "
            f"| <= 1 s | {o['met']} |"
        )
        rows.append(
            f"| 6 sweep wall vs trials | {s['sweep_s_per_trial']} s/trial + {s['sweep_intercept_s']} s | "
            f"teacher share {s['teacher_share']} | worst dev. from line {s['worst_relative_deviation_from_line']:.1%} | linear | "
            f"{s['worst_relative_deviation_from_line'] <= 0.15} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=ALL, help="run only these (repeatable)")
    parser.add_argument("--config", default=str(HERE.parent / "studies" / "configs" / "default.yaml"))
    parser.add_argument(
        "--workdir", default="/tmp/raykd-bench-default", help="teacher stage + cache are built/reused here"
    )
    parser.add_argument("--steps", type=int, default=60, help="steps per measured run (1-3)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one default-study worker)")
    parser.add_argument("--trials", type=int, nargs="+", default=[2, 4, 8, 16], help="study sizes for 4 and 6")
    parser.add_argument("--trial-steps", type=int, default=5, help="steps per trial in 4 and 6")
    parser.add_argument("--out", default=str(HERE / "results" / "benchmarks.json"))
    args = parser.parse_args()
    names = args.only or list(ALL)
    started = time.time()
    results: dict = {"command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]])}
    steps = [n for n in names if n in STEP_BENCHES]
    if steps:
        import steps as step_benches

        results.update(
            step_benches.run(
                steps,
                config=args.config,
                workdir=args.workdir,
                steps=args.steps,
                threads=args.threads,
                warmup=args.warmup,
            )
        )
    if "orchestration" in names:
        import orchestration

        results["orchestration"] = orchestration.run(
            trials=args.trials, output_dir="/tmp/raykd-bench-orchestration", steps=args.trial_steps
        )
    import os

    import torch

    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    results["seconds"] = round(time.time() - started, 1)
    results["table"] = table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() and args.only else {}
    out.write_text(json.dumps({**previous, **results, "table": table({**previous, **results})}, indent=2, default=str))
    print(table({**previous, **results}))


if __name__ == "__main__":
    main()
