"""Benchmark 7 (GPU): a BERT-base-sized teacher (from config) into a 3-block student, batch 32 x 128 tokens,
bf16 autocast: examples/s of raykd's step (live teacher) and model FLOPs utilisation against the GPU's dense
bf16 peak. Not run yet: no GPU was lent to the sessions that wrote it (see RESULTS.md).

    python benchmarks/gpu.py                        # CUDA; writes results/gpu.json
    python benchmarks/gpu.py --device cpu --steps 3 # checks the script itself on a CPU (no MFU)
    python benchmarks/gpu.py --sweep                # + the smoke study with 4 trials packed on the GPU (0.25 each),
                                                    #   GPU utilisation sampled by nvidia-smi every second

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--out", default=str(HERE / "results" / "gpu.json"))
    parser.add_argument("--sweep", action="store_true", help="also run the packed-GPU smoke sweep")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device here (use --device cpu to check the script)")
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
    if args.sweep:
        result["packed_sweep"] = packed_sweep()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def packed_sweep(output_dir: str = "/tmp/raykd-gpu-sweep") -> dict:
    """The smoke study with every trial on a quarter of the GPU (four at a time), nvidia-smi sampled each second."""
    import subprocess
    import threading

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip():
                samples.append(float(out.stdout.split(",")[0]))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.time()
    study = subprocess.run(
        [
            sys.executable,
            str(HERE.parent / "studies" / "strategy_grid.py"),
            "--config",
            str(HERE.parent / "studies" / "configs" / "smoke.yaml"),
            "--output-dir",
            output_dir,
            "--fresh",
            "--set",
            "compute.gpus_per_worker=0.25",
            "--set",
            "compute.cpus_per_worker=2",
            "--set",
            "analysis.enabled=false",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    done.set()
    sampler.join()
    busy = [s for s in samples if s > 0]
    return {
        "returncode": study.returncode,
        "wall_s": round(time.time() - started, 1),
        "concurrency": next((line for line in study.stdout.splitlines() if "trial(s) at once" in line), None),
        "gpu_utilisation_mean": round(statistics.fmean(samples), 1) if samples else None,
        "gpu_utilisation_when_busy": round(statistics.fmean(busy), 1) if busy else None,
        "tail": study.stdout[-1500:] + study.stderr[-1500:],
    }


if __name__ == "__main__":
    main()
