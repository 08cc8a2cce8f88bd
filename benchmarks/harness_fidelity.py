"""Does edgekd's harness measure what OpenVINO's own benchmark_app measures? (issue 6's evidence)

For torchvision resnet18 and mobilenet_v3_small (random weights, 1x3x224x224, FP32 ONNX exported
here) at 1 and 2 threads: edgekd's ``cpu-openvino`` measurement, and the ``benchmark_app`` command
that ``edgekd bench --emit-native`` prints for the same target and thread count (synchronous API,
latency hint, one stream, f32 precision), run as a subprocess. The two are interleaved for
``--rounds`` rounds, so the machine's slow episodes hit both; each side's lowest median is compared
(a co-tenant only adds time), and every round's pair is printed too.

    python benchmarks/harness_fidelity.py             # about 3 minutes on 2 cores
    python benchmarks/harness_fidelity.py --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from edgekd.measure.measurement import BackendPool, bench_targets, measure, native_commands

MODELS = ("resnet18", "mobilenet_v3_small")


def benchmark_app_median(command: str) -> float:
    """Run a benchmark_app command line; its reported median latency in ms."""
    argv = shlex.split(command)
    exe = Path(sys.executable).parent / "benchmark_app"
    argv[0] = str(exe) if exe.exists() else (shutil.which("benchmark_app") or argv[0])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return median_ms(out)


UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3}


def median_ms(output: str) -> float:
    """benchmark_app's median latency in ms, whatever unit it printed: on fast models it switches from
    "Median: 0.31 ms" to "Median: 310.50 us" (this script crashed on that: no 'Median: ... ms' line)."""
    match = re.search(r"Median:\s+([\d.]+(?:[eE][-+]?\d+)?)\s*(ns|us|µs|μs|ms|sec|s)\b", output)
    if match is None:
        raise RuntimeError(f"no 'Median:' line in benchmark_app's output:\n{output[-2000:]}")
    return float(match.group(1)) * UNIT_MS[match.group(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement, both tools")
    args = parser.parse_args()
    import torchvision

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)().eval()
            path = Path(tmp) / f"{name}.onnx"
            torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), dynamo=False, opset_version=17)
            for threads in (1, 2):
                overrides = {"threads": threads, "min_seconds": args.seconds, "batch": 1}
                (target,) = bench_targets(["cpu-openvino"], **overrides)
                ((_, command),) = native_commands(path, ["cpu-openvino"], **overrides)
                ours, theirs = [], []
                pool = BackendPool()
                for _ in range(args.rounds):
                    result = measure(path, name, "fp32", target, pool)
                    ours.append(result["latency_ms"]["p50"])
                    theirs.append(benchmark_app_median(command))
                rows.append((name, threads, ours, theirs, command))
                print(f"{name} threads={threads}: edgekd p50 {ours}, benchmark_app median {theirs}", flush=True)

    print(f"\nOpenVINO CPU, FP32, batch 1, sync API, 1 stream, {args.seconds:.0f} s per measurement, "
          f"{args.rounds} interleaved rounds (lowest of each side)\n")
    print("| model | threads | edgekd p50 ms | benchmark_app median ms | ratio | within 10% |")
    print("|---|---:|---:|---:|---:|---|")
    for name, threads, ours, theirs, _ in rows:
        ratio = min(ours) / min(theirs)
        print(f"| {name} | {threads} | {min(ours):.3f} | {min(theirs):.3f} | {ratio:.3f} | "
              f"{'yes' if abs(ratio - 1) <= 0.10 else 'no'} |")
    print(f"\nbenchmark_app command (last row): {rows[-1][4]}")


if __name__ == "__main__":
    main()
