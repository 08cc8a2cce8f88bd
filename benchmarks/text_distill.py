"""Text distillation and INT8 for a BERT-class encoder (issue 16), measured side by side in one run.

No pretrained BERT installs with its weights from the package registry (and nothing here downloads), so
the teacher is trained here: a 4-layer BERT (hidden 256, 4 heads, WordPiece vocabulary trained on the
corpus) on real English text that ships with Python itself: every docstring paragraph of ~70 standard
library modules, labelled by which of 6 areas the module belongs to (networking, concurrency, formats,
files, language, text/numbers/debugging). It is a real, noisy text task (paragraphs like "Return the
value" occur everywhere) on which a small model does not saturate.

Then, each through ``edgekd compress`` (the same recipe but the loss), a half-depth student (layers 0
and 2 of the teacher, DistilBERT's initialisation) is distilled with no distillation (cross-entropy:
``kd`` with alpha 0), KD, KD + MiniLM, KD + MiniLMv2, KD + TinyBERT hidden states; PTQ to INT8; exported;
scored on ONNX Runtime and OpenVINO (accuracy on the file running there). The embedding task (mean
pooling, no labels) is distilled with embedding-cosine alone and with MiniLMv2, scored by cosine to the
teacher's embeddings and the Spearman correlation of pairwise similarities.

Last, latency at 64 and 128 tokens, timed in interleaved rounds on each runtime: the FP32 teacher, the
FP32 and INT8 student, and ONNX Runtime's own ``quantize_dynamic`` and ``quantize_static`` of the same
FP32 student file, with the ratios that issue 16 asks for.

    python benchmarks/text_distill.py                      # about 25 minutes on 2 cores
    python benchmarks/text_distill.py --teacher-epochs 2 --epochs 1 --methods no-kd,kd   # a smoke run
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import random
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from edgekd.config.schema import TrainSpec
from edgekd.train.loop import LoopSettings

AREAS = {
    "networking": ["http", "urllib", "socket", "ssl", "smtplib", "imaplib", "ftplib", "xmlrpc", "wsgiref"],
    "concurrency": ["asyncio", "multiprocessing", "concurrent", "threading", "subprocess", "selectors", "queue",
                    "signal", "sched"],
    "formats": ["email", "mailbox", "xml", "html", "json", "configparser", "csv", "tarfile", "zipfile"],
    "files": ["os", "pathlib", "shutil", "tempfile", "glob", "fnmatch", "filecmp", "fileinput", "stat"],
    "language": ["typing", "inspect", "ast", "dis", "tokenize", "importlib", "enum", "functools", "contextlib",
                 "dataclasses", "abc", "collections", "operator", "itertools"],
    "text-numbers-debugging": ["difflib", "statistics", "random", "decimal", "fractions", "textwrap", "string", "re",
                               "doctest", "pdb", "logging", "unittest", "calendar", "locale", "gettext"],
}
METHODS = {
    "no-kd": [{"name": "kd", "alpha": 0.0}],
    "kd": [{"name": "kd"}],
    "kd+minilm": [{"name": "kd"}, {"name": "minilm", "student": "S.1.attention.self", "teacher": "T.3.attention.self"}],
    "kd+minilm-v2": [{"name": "kd"}, {"name": "minilm-v2", "relation_heads": 8, "student": "S.1.attention.self",
                                      "teacher": "T.3.attention.self"}],
    "kd+tinybert-hidden": [{"name": "kd"}, {"name": "tinybert-hidden", "pairs": [["S.0", "T.1"], ["S.1", "T.3"]]}],
}
EMBEDDING_METHODS = {
    "embedding-cosine": [{"name": "embedding-cosine"}],
    "embedding-cosine+minilm-v2": [{"name": "embedding-cosine"}, {"name": "minilm-v2", "relation_heads": 8,
                                                                  "student": "S.1.attention.self",
                                                                  "teacher": "T.3.attention.self"}],
}


def corpus(path: Path) -> Path:
    """Docstring paragraphs of the standard library, one JSON line each: text and area label."""
    if path.is_file():
        return path
    warnings.simplefilter("ignore")
    rows = []
    for label, (area, packages) in enumerate(AREAS.items()):
        seen: set[str] = set()
        for name in packages:
            try:
                root = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a module this build lacks
                continue
            modules = [root]
            for info in pkgutil.walk_packages(getattr(root, "__path__", []), name + "."):
                if "test" not in info.name and "idle" not in info.name:
                    try:
                        modules.append(importlib.import_module(info.name))
                    except Exception:  # noqa: BLE001
                        pass
            for module in modules:
                for _, obj in inspect.getmembers(module):
                    objs = [obj] + ([v for _, v in inspect.getmembers(obj, inspect.isfunction)]
                                    if inspect.isclass(obj) else [])
                    for o in objs:
                        if (inspect.isfunction(o) or inspect.isclass(o)) and getattr(o, "__module__", "") == module.__name__:
                            for para in re.split(r"\n\s*\n", inspect.getdoc(o) or ""):
                                text = " ".join(para.split())
                                if len(text.split()) >= 6 and text not in seen:
                                    seen.add(text)
                                    rows.append({"text": text, "label": label})
    random.Random(0).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def teacher_folder(folder: Path, data: Path, epochs: int, max_length: int) -> Path:
    """A WordPiece tokenizer trained on the corpus and a 4-layer BERT trained on it, saved as a Hugging
    Face folder (what ``--arch hf:DIR`` reads)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import transformers
    from tokenizers import BertWordPieceTokenizer

    from edgekd.config.schema import DataSpec
    from edgekd.data import build_splits
    from edgekd.models.text import TextModel
    from edgekd.train.evaluate import accuracy
    from edgekd.train.loop import fit
    from edgekd.train.objective import Objective

    folder.mkdir(parents=True, exist_ok=True)
    texts = [json.loads(line)["text"] for line in data.read_text(encoding="utf-8").splitlines()]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=4000, min_frequency=2)
    wordpiece.save_model(str(folder))
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    # transformers 5 takes the vocabulary itself (a vocab_file argument is ignored there), 4.x the file
    takes_vocab = "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters
    tokenizer = (transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
                 if takes_vocab else transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"),
                                                                    do_lower_case=True))
    tokenizer.save_pretrained(folder)
    splits = build_splits(DataSpec(source="text", path=str(data), tokenizer=str(folder), max_length=max_length,
                                   batch_size=32))
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=1024, max_position_embeddings=512,
                                     num_labels=splits.num_classes)
    torch.manual_seed(0)
    model = TextModel(transformers.BertForSequenceClassification(config), "classification")
    began = time.perf_counter()
    fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=epochs, lr=5e-4, weight_decay=0.01), LoopSettings(seed=0), label="teacher")
    print(f"teacher: test accuracy {accuracy(model, splits, 'test'):.4f} after {epochs} epochs "
          f"({time.perf_counter() - began:.0f} s)", flush=True)
    model.backbone.save_pretrained(folder)
    return folder


def terms(spec: list[dict], prefix_s: str, prefix_t: str) -> list[dict]:
    text = json.dumps(spec).replace('"S.', f'"{prefix_s}.').replace('"T.', f'"{prefix_t}.')
    return json.loads(text)


def compress_run(out: Path, folder: Path, data: Path, task: str, loss: list[dict], epochs: int,
                 max_length: int, targets: list[Path]) -> dict:
    from edgekd.config.schema import Recipe
    from edgekd.run.pipeline import compress

    recipe = Recipe.model_validate({
        "name": out.name, "arch": f"hf:{folder}", "task": task,
        "data": {"source": "text", "path": str(data), "max_length": max_length, "batch_size": 32,
                 **({} if task == "classification" else {"label_column": "no-labels"})},
        "student": {"layers": [0, 2]},
        "stages": [{"stage": "distill", "epochs": epochs, "lr": 5e-4, "weight_decay": 0.01, "loss": loss},
                   {"stage": "quantize", "mode": "ptq", "calibration_batches": 8}, {"stage": "export"}],
        "targets": [str(t) for t in targets]})
    compress(recipe=recipe, out=out, force=True)
    return json.loads((out / "report.json").read_text())


def timing_table(files: dict[str, Path], seqs: list[int], rounds: int) -> list[tuple]:
    """p50 ms of each file on each runtime at each length, timed in interleaved rounds."""
    from edgekd.backends.inputs import feed_for, resolve_shapes
    from edgekd.measure.latency import time_calls, warm_up
    from edgekd.measure.measurement import BackendPool, bench_targets

    pool, rows = BackendPool(), []
    for target_name, names in (("cpu-onnxruntime", ["teacher-fp32", "student-fp32", "edgekd-int8 (dynamic layout)",
                                                    "ort quantize_dynamic", "ort quantize_static"]),
                               ("cpu-openvino", ["teacher-fp32", "student-fp32", "edgekd-int8 (QDQ)"])):
        (target,) = bench_targets([target_name], batch=1)
        backend = pool.get(target.backend)
        for seq in seqs:
            compiled = {}
            for name in names:
                model = backend.compile(files[name], target, resolve_shapes(files[name], None, seq)[0])
                feed = feed_for(model, files[name])
                warm_up(lambda: model.run(feed), 10, 0.3)
                compiled[name] = (model, feed)
            times = {n: [] for n in names}
            for _ in range(rounds):
                for n, (model, feed) in compiled.items():
                    times[n] += time_calls(lambda: model.run(feed), 10, 0.0)
            for n in names:
                rows.append((target_name, seq, n, float(np.median(times[n])), compiled[n][0].int8_layers()["int8"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-text"))
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="student distillation epochs")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--embedding-methods", default=",".join(EMBEDDING_METHODS))
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (10 calls each)")
    args = parser.parse_args()

    from edgekd.measure.fingerprint import machine

    data = corpus(args.out / "stdlib_docstrings.jsonl")
    n = len(data.read_text(encoding="utf-8").splitlines())
    folder = teacher_folder(args.out / "teacher", data, args.teacher_epochs, args.max_length)
    fast = {"warmup_runs": 5, "warmup_seconds": 0.2, "runs": 50, "min_seconds": 1.0, "batch": 1, "int8_max_ratio": None}
    targets = []
    for name, extra in (("cpu-onnxruntime", {"backend": "onnxruntime"}),
                        ("cpu-openvino", {"backend": "openvino", "precision_hint": "f32"})):
        path = args.out / f"{name}.yaml"
        path.write_text(json.dumps({"name": name, **extra, "threads": 2, "latency": fast}), encoding="utf-8")
        targets.append(path)

    results = {}
    for method in [m for m in args.methods.split(",") if m]:
        loss = terms(METHODS[method], "backbone.bert.encoder.layer", "backbone.bert.encoder.layer")
        began = time.perf_counter()
        results[method] = compress_run(args.out / f"cls-{method}", folder, data, "classification", loss,
                                       args.epochs, args.max_length, targets)
        print(f"{method}: {time.perf_counter() - began:.0f} s", flush=True)
    embedding = {}
    for method in [m for m in args.embedding_methods.split(",") if m]:
        loss = terms(EMBEDDING_METHODS[method], "backbone.encoder.layer", "backbone.encoder.layer")
        embedding[method] = compress_run(args.out / f"emb-{method}", folder, data, "embedding", loss,
                                         args.epochs, args.max_length, targets)

    m = machine()
    isa = ", ".join(k for k, on in m["cpu"]["isa"].items() if on)
    print(f"\nmachine: {m['cpu']['model']} ({m['cpu']['usable_cpus']} usable CPUs), ISA: {isa}")
    print(f"corpus: {n} docstring paragraphs, 6 areas; max_length {args.max_length}; teacher 4 layers x 256, "
          f"student layers 0 and 2; {args.epochs} distillation epochs; PTQ INT8\n")
    print("| method | torch FP32 student | ORT INT8 | OpenVINO INT8 | INT8 size |")
    print("|---|---:|---:|---:|---:|")
    for method, report in results.items():
        rows = {(r["variant"], r["target"]): r for r in report["results"]}
        sizes = {v["name"]: v["size_bytes"] for v in report["variants"]}
        torch_acc = next(v for v in report["variants"] if v["name"] == "student-fp32").get("accuracy_torch")
        print(f"| {method} | {torch_acc:.4f} | {rows[('student-int8', 'cpu-onnxruntime')]['accuracy']:.4f} | "
              f"{rows[('student-int8', 'cpu-openvino')]['accuracy']:.4f} | {sizes['student-int8'] / 1e6:.2f} MB |")
    if results:
        report = next(iter(results.values()))
        rows = {(r["variant"], r["target"]): r for r in report["results"]}
        print(f"| (teacher FP32) | - | {rows[('teacher-fp32', 'cpu-onnxruntime')]['accuracy']:.4f} | "
              f"{rows[('teacher-fp32', 'cpu-openvino')]['accuracy']:.4f} | "
              f"{next(v['size_bytes'] for v in report['variants'] if v['name'] == 'teacher-fp32') / 1e6:.2f} MB (FP32) |")
    if embedding:
        print("\n| embedding method | ORT INT8 cosine to teacher | ORT INT8 Spearman | OpenVINO INT8 cosine | OpenVINO INT8 Spearman |")
        print("|---|---:|---:|---:|---:|")
        for method, report in embedding.items():
            rows = {(r["variant"], r["target"]): r for r in report["results"]}
            o, v = rows[("student-int8", "cpu-onnxruntime")]["embedding"], rows[("student-int8", "cpu-openvino")]["embedding"]
            print(f"| {method} | {o['cosine_to_teacher']:.4f} | {o['spearman']:.4f} | {v['cosine_to_teacher']:.4f} | "
                  f"{v['spearman']:.4f} |")

    # latency: the files of the first classification run, and ORT's own quantizers of its FP32 student
    if results:
        run = args.out / f"cls-{next(iter(results))}"
        files = {"teacher-fp32": run / "models" / "teacher-fp32.onnx", "student-fp32": run / "models" / "student-fp32.onnx",
                 "edgekd-int8 (dynamic layout)": run / "models" / "student-int8.dynamic.onnx",
                 "edgekd-int8 (QDQ)": run / "models" / "student-int8.onnx",
                 "ort quantize_dynamic": args.out / "ort_dynamic.onnx", "ort quantize_static": args.out / "ort_static.onnx"}
        ort_quantizers(files["student-fp32"], files["ort quantize_dynamic"], files["ort quantize_static"], folder, data,
                       args.max_length)
        rows = timing_table(files, [64, 128], args.rounds)
        print(f"\nlatency, batch 1, 2 threads, {args.rounds} interleaved rounds of 10 calls; p50 ms (INT8 layers)\n")
        print("| runtime | tokens | file | p50 ms | INT8 layers | vs teacher FP32 | vs ORT quantize_dynamic |")
        print("|---|---:|---|---:|---:|---:|---:|")
        p50 = {(t, s, f): v for t, s, f, v, _ in rows}
        for t, s, f, v, layers in rows:
            dyn = p50.get((t, s, "ort quantize_dynamic"))
            print(f"| {t} | {s} | {f} | {v:.3f} | {layers} | {p50[(t, s, 'teacher-fp32')] / v:.2f}x faster | "
                  f"{f'{v / dyn:.2f}' if dyn else '-'} |")


def ort_quantizers(fp32: Path, dynamic: Path, static: Path, folder: Path, data: Path, max_length: int) -> None:
    """ONNX Runtime's own INT8 files of the same FP32 student: quantize_dynamic (its transformer path)
    and quantize_static (QDQ, UINT8 activations as its CPU kernels want, calibrated on 64 corpus texts)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    from edgekd.backends.inputs import graph_inputs
    from edgekd.data.packed import PACKED_INPUTS
    from edgekd.data.text import tokenize

    quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    names = [i.name for i in graph_inputs(fp32)]
    texts = [json.loads(line)["text"] for line in data.read_text(encoding="utf-8").splitlines()[:64]]
    packed = tokenize(texts, str(folder), max_length)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(range(len(packed)))

        def get_next(self):
            i = next(self.rows, None)
            return None if i is None else {n: packed[i:i + 1, PACKED_INPUTS.index(n)] for n in names}

    quantize_static(str(fp32), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


if __name__ == "__main__":
    main()
