"""One measurement: a file on a target -> latency, accuracy on that backend, what really ran.

Never raises for a backend's failure: the result carries ``status`` ``ok``, ``failed`` (with the
error) or ``unavailable`` (with the reason), so one broken target does not hide the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..backends import BACKENDS, Backend, check_runs_here, checked_target, predict
from ..backends.inputs import FeedSpec, ShapeRequest, feed_for, with_batch
from .int8_verdict import judge
from ..tasks.parity import parity
from .latency import (LatencyStats, batch_timing, measure_latency, peak_rss_mb, reset_peak_rss, rss_mb,
                      time_calls, warm_up)
from ..fileio import file_sha256 as fingerprint_sha256
from .fingerprint import fingerprint
from ..config.schema import LatencySpec, Target
from ..errors import BackendError, BackendUnavailable, CheckpointError, EdgekdError, InputError, first_line
from ..progress import progress_bar
from ..tasks import Classification, Scoring

# ``() -> batches of (x, y)`` numpy arrays: the test split a file is scored on, read afresh per call
EvalData = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


class BackendPool:
    """One backend instance per name for a whole run (OpenVINO's Core is costly to create).
    ``trust_checkpoint`` / ``allow_globals`` are the user's --trust-checkpoint / --allow-global, handed
    to every backend it makes."""

    def __init__(self, trust_checkpoint: bool = False, allow_globals: tuple[str, ...] = ()) -> None:
        self._backends: dict[str, Backend] = {}
        self._trust, self._allow = trust_checkpoint, tuple(allow_globals)

    def get(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = BACKENDS.get(name)(trust_checkpoint=self._trust, allow_globals=self._allow)
        return self._backends[name]


@dataclass(frozen=True)
class Evaluation:
    """What a file is scored on: ``data`` (the test split, ``samples`` of them, in batches), the task's
    ``scoring`` (top-1 accuracy when None), and the torch model's outputs on the same samples
    (``reference``) for the parity of this backend's outputs with it."""

    data: EvalData
    samples: int
    reference: np.ndarray | None = None
    scoring: Scoring | None = None


@dataclass(frozen=True)
class InputShapes:
    """The inputs a file is timed with: the file's own shapes, or ``shape``; dynamic sequence axes at
    ``seq``; values made by ``feed_for`` (``feed``: the user's arrays or a tokenizer)."""

    shape: ShapeRequest = None
    feed: FeedSpec | None = None
    seq: int | None = None


def measure(onnx_path: Path, variant: str, precision: str, target: Target, pool: BackendPool,
            evaluation: Evaluation | None = None, inputs: InputShapes = InputShapes()) -> dict[str, Any]:
    """Latency, and with an ``evaluation`` the task's scores and the parity of this backend's outputs
    with the torch model's: how the runtime's own kernels change the result.

    The order matters: the peak-RSS mark is reset before compiling, so ``peak_rss_mb`` is the peak while
    this session was built and timed (the process's baseline, ``rss_before_mb``, included); the first
    call is timed alone (``cold_ms``); the batch-N session for throughput is built after that reading.
    """
    backend = pool.get(target.backend)
    result = empty_result(variant, precision, target, onnx_path)
    ok, why = backend.availability()
    if not ok:
        return {**result, "status": "unavailable", "error": why}
    try:
        result["fingerprint"] = fingerprint(onnx_path)
        compiled = _timed(backend, onnx_path, precision, target, inputs, result)
        if evaluation is not None:
            _scored(compiled, evaluation, f"evaluate {variant} on {target.name}", target, result)
    except BackendUnavailable as exc:  # e.g. a CUDA device asked of a CPU-only onnxruntime build
        result.update(status="unavailable", error=str(exc))
    except CheckpointError:
        raise  # a file refused by the loading gate is the user's input (exit 2), not a failed row
    except EdgekdError as exc:
        result.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a runtime's own error becomes a failed row, not a crash
        result.update(status="failed", error=first_line(exc, with_type=True))
    return result


def _timed(backend: Backend, onnx_path: Path, precision: str, target: Target, inputs: InputShapes,
           result: dict[str, Any]) -> Any:
    """Compile, time the cold call, warm up and time; fill ``result``'s latency fields and warnings."""
    spec = target.latency
    reset_peak_rss()
    result["rss_before_mb"] = rss_mb()
    t0 = time.perf_counter()
    shape = inputs.shape
    if inputs.seq is not None and onnx_path.suffix == ".onnx":  # a text file: timed at the run's sequence length
        from ..backends.inputs import resolve_shapes

        shape = resolve_shapes(onnx_path, shape, inputs.seq)[0]
    compiled = backend.compile(onnx_path, target, shape)
    result["compile_ms"] = (time.perf_counter() - t0) * 1000.0
    feed = feed_for(compiled, onnx_path, inputs.feed)
    t0 = time.perf_counter()
    compiled.run(feed)
    result["cold_ms"] = (time.perf_counter() - t0) * 1000.0
    warm = warm_up(lambda: compiled.run(feed), spec.warmup_runs, spec.warmup_seconds)
    compiled.reset_device_times()
    times = time_calls(lambda: compiled.run(feed), spec.runs, spec.min_seconds)
    stats = LatencyStats.of(times, warm)
    device_times = compiled.device_times_ms()
    result.update(
        precision=compiled.precision(precision),
        latency_ms=stats.to_json(),
        latency_samples_ms=kept_samples(times),
        throughput_ips=1000.0 / stats.mean if stats.mean else None,
        peak_rss_mb=peak_rss_mb(),
        settings={**compiled.settings(), "latency": spec.model_dump()},
        input_shapes={n: list(v) for n, v in compiled.input_shapes.items()},
        int8_layers=compiled.int8_layers(),
    )
    if device_times:
        result["device_latency_ms"] = LatencyStats.of(device_times).to_json()
    noise = latency_warnings(stats, spec)
    result["warnings"].extend(noise)
    result["noisy"] = bool(noise)  # the row's status says "noisy" (report.row_status)
    if spec.batch > 1:
        result["throughput_batch"] = _batch_throughput(backend, onnx_path, target, compiled.input_shapes, inputs.feed)
    return compiled


def latency_warnings(stats: LatencyStats, spec: LatencySpec) -> list[str]:
    """Why a timing should not be trusted yet: drift between blocks of calls, a wide spread, a high CoV."""
    out = []
    if stats.drift_p50 is not None and (stats.drift_p50 > spec.max_drift or stats.drift_p90 > 2 * spec.max_drift):
        out.append(f"latency drifted while measured: the p50 of consecutive blocks of calls moved "
                   f"{stats.drift_p50:.1%} (p90 {stats.drift_p90:.1%}; limits {spec.max_drift:.0%} "
                   f"and {2 * spec.max_drift:.0%}): the machine was busy or the clock unstable; "
                   f"re-measure before trusting it")
    if spec.max_spread is not None and stats.spread > spec.max_spread:
        out.append(f"latency spread (1.4826 x MAD / median) {stats.spread:.1%} exceeds "
                   f"{spec.max_spread:.0%}: calls scattered so widely that one p50 says little; "
                   f"re-measure before trusting it")
    if spec.max_cov is not None and stats.cov > spec.max_cov:
        out.append(f"latency coefficient of variation {stats.cov:.1%} exceeds {spec.max_cov:.0%}: "
                   f"the machine was busy or the clock unstable; re-measure before trusting it")
    return out


def _scored(compiled: Any, evaluation: Evaluation, label: str, target: Target, result: dict[str, Any]) -> None:
    """The task's scores of the file's outputs on the test split, and their parity with the torch model's."""
    logits, labels = _evaluate(compiled, evaluation.data, evaluation.samples, label)
    bad = int(np.sum(~np.isfinite(logits).all(axis=1)))
    if bad:  # argmax of NaN is 0: an "accuracy" from such outputs would be a lie
        raise BackendError(f"{target.name} computed NaN/Inf logits for {bad} of {len(logits)} test samples")
    result.update((evaluation.scoring or Scoring(Classification())).scores(logits, labels, "test"))
    result["eval_samples"] = int(len(labels))
    reference = evaluation.reference
    if reference is not None and reference.shape == logits.shape:
        result["parity"] = parity(reference, logits)


MAX_KEPT_SAMPLES = 1000


def add_repeats(rows: list[dict[str, Any]], timings: list[list[dict[str, Any]]]) -> None:
    """Fold the later repeats' latency into each row (same order): ``repeats.p50_ms`` and ``mean_ms``
    list every repeat's p50 and mean call (the row's own first), ``repeats.spread`` is (max - min) /
    median of the p50s: the drift between measurements, which the spread within one cannot show
    (benchmarks/gate_power.py). The means are what ``gate --baseline`` compares round by round with the
    teacher: on a shared CPU a p50 sits on one scheduler-slice mode (report.baseline)."""
    for i, row in enumerate(rows):
        if row["status"] != "ok":
            continue
        later = [t[i]["latency_ms"] for t in timings if t[i]["status"] == "ok"]
        p50s = [row["latency_ms"]["p50"]] + [lat["p50"] for lat in later]
        means = [row["latency_ms"]["mean"]] + [lat["mean"] for lat in later]
        row["repeats"] = {"p50_ms": p50s, "mean_ms": means,
                          "spread": (max(p50s) - min(p50s)) / float(np.median(p50s))}


def kept_samples(times_ms: list[float] | np.ndarray, keep: int = MAX_KEPT_SAMPLES) -> list[float]:
    """Up to ``keep`` of the timed calls, evenly spaced and in time order (so that drift and runs of slow
    calls stay visible): what ``edgekd baseline`` stores and ``gate --baseline`` resamples."""
    ms = np.asarray(times_ms, dtype=np.float64)
    if len(ms) > keep:
        ms = ms[np.linspace(0, len(ms) - 1, keep).round().astype(int)]
    return [round(float(t), 6) for t in ms]


def _evaluate(compiled: Any, eval_data: EvalData, total: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The compiled file's logits and the labels over every evaluation batch, with a progress bar."""
    logits, labels = [], []
    with progress_bar(label, total) as bar:
        for x, y in eval_data():
            logits.append(predict(compiled, x))
            labels.append(y)
            bar.advance(len(y))
    return np.concatenate(logits), np.concatenate(labels)


def empty_result(variant: str, precision: str, target: Target, path: Path | None,
                 unavailable: str | None = None) -> dict[str, Any]:
    """A measurement row before anything is measured; with ``unavailable``, a row that says why
    nothing could be (DESIGN.md report.json ``results``)."""
    return {"variant": variant, "target": target.name, "backend": target.backend, "device": target.device,
            "precision": precision, "status": "unavailable" if unavailable else "ok", "latency_ms": None,
            "throughput_ips": None, "accuracy": None, "error": unavailable, "onnx": str(path) if path else None,
            "warnings": []}


def _batch_throughput(backend: Backend, onnx_path: Path, target: Target, shapes: dict[str, tuple[int, ...]],
                      feed: FeedSpec | None) -> dict[str, Any]:
    """Samples/s at the target's batch size and the latency of one call at it; a graph that cannot take
    that batch says why, not fails."""
    batch = target.latency.batch
    try:
        compiled = backend.compile(onnx_path, target, with_batch(shapes, batch))
        inputs = feed_for(compiled, onnx_path, feed)
        ips, stats = batch_timing(lambda: compiled.run(inputs), batch, target.latency.throughput_seconds)
        return {"batch": batch, "ips": ips, "latency_ms": stats.to_json()}
    except Exception as exc:  # noqa: BLE001 - e.g. a Reshape that bakes batch 1 into the graph
        return {"batch": batch, "ips": None, "error": str(exc) if isinstance(exc, EdgekdError) else first_line(exc, with_type=True)}


def latency_probe(target: Target, pool: BackendPool, windows: int = 3) -> Callable[[Path], float]:
    """Milliseconds of an ONNX file on ``target``: the lowest p50 of ``windows`` back-to-back timing
    windows (the same harness as every measurement).

    Handed to stages (latency-driven pruning) as a plain function, so they time candidates on the
    target's own runtime without ever holding a backend. The minimum over windows, because on a shared
    machine a co-tenant only ever adds time: one p50 of the default digits teacher moved between 0.83
    and 1.17 ms across windows, the lowest of three stayed within 0.83-0.88 ms, so candidates a few
    percent apart can be told apart.
    """
    backend = pool.get(target.backend)
    ok, why = backend.availability()
    if not ok:
        raise BackendUnavailable(f"target {target.name}: backend {target.backend} is unavailable ({why})")

    spec = target.latency.model_copy(update={"min_seconds": 0.0})  # many short windows beat one long one
    target = target.with_options(cache=False)  # each candidate is compiled once: no blob to keep

    def p50_ms(path: Path) -> float:
        compiled = backend.compile(path, target)
        inputs = feed_for(compiled, path)
        return min(measure_latency(lambda: compiled.run(inputs), spec).p50 for _ in range(windows))

    return p50_ms


def file_precision(onnx_path: Path) -> str:
    """``int8`` for a QDQ graph, or a dynamically quantized one (ONNX Runtime's ``quantize_dynamic``, edgekd's
    ``dynamic`` layout), else ``fp32``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return "int8" if any(n.op_type in INT8_FILE_OPS for n in graph.node) else "fp32"


INT8_FILE_OPS = ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear", "MatMulInteger",
                 "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def bench_targets(targets: list[str], **overrides: Any) -> list[Target]:
    """Targets by name or path, with command-line overrides (``threads``, or a latency-spec key) applied
    and re-validated."""
    from ..backends import load_target

    resolved = []
    for name in targets:
        t = load_target(name)
        latency = {k: v for k, v in overrides.items() if k in LatencySpec.model_fields and v is not None}
        top = {k: v for k, v in overrides.items() if k not in LatencySpec.model_fields and v is not None}
        data = {**t.model_dump(exclude_unset=True), **top, "latency": {**t.latency.model_dump(), **latency}}
        try:
            target = checked_target(data)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError too
            raise InputError(f"target {t.name}: {first_line(exc)}") from None
        resolved.append(check_runs_here(target))
    return resolved


def bench(model: str | Path, targets: list[str], *, shape: ShapeRequest = None, seqs: list[int] | None = None,
          feed: FeedSpec | None = None, trust_checkpoint: bool = False, allow_globals: tuple[str, ...] = (),
          expect_sha256: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """Latency statistics of one model file on each target (no accuracy: a bare file comes with no data).

    Any ONNX file: several inputs, integer ones, dynamic axes (``shape`` per input name, or ``seqs``:
    one row per sequence length, each filling every dynamic non-batch axis); inputs made by
    ``backends.inputs.feed_for`` (ids inside the file's vocabulary, masks of ones) or the user's
    (``feed.arrays``). ``overrides``: ``threads`` and any ``LatencySpec`` key (``warmup_runs``, ``runs``,
    ``min_seconds``, ``batch``), applied to every target. A ``.pt2`` program that could run code when
    opened is refused (``CheckpointError``, exit 2) by the loading gate the torch backend opens it
    through, unless ``trust_checkpoint`` (or its globals are named in ``allow_globals``).
    ``expect_sha256``: the file's bytes are checked before anything opens it."""
    from ..backends.inputs import inputs_of, make_feed, read_graph, resolve_shapes, vocab_sizes
    from ..models.checkpoint import check_sha256

    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    if expect_sha256 is not None:
        check_sha256(path, fingerprint_sha256(path), expect_sha256)
    resolved = bench_targets(targets, **overrides)
    for t in resolved:
        suffix = BACKENDS.get(t.backend).file_suffix
        if path.suffix != suffix:
            raise InputError(f"{path}: target {t.name} ({t.backend}) runs {suffix} files, not {path.suffix or 'this file'} "
                             f"(run 'edgekd compress' to make both)")
    if seqs and path.suffix != ".onnx":
        raise InputError(f"{path}: --seq sweeps ONNX files with a dynamic sequence axis")
    lengths: list[int | None] = list(seqs) if seqs else [None]
    shapes_at: dict[int | None, ShapeRequest] = {seq: shape for seq in lengths}
    if path.suffix == ".onnx":  # a wrong --shape, an unsized dynamic input, ids of unknown range: exit 2
        graph, spec = read_graph(path), feed or FeedSpec()
        inputs, vocab = inputs_of(graph, path), vocab_sizes(graph)
        for seq in lengths:
            shapes_at[seq] = resolve_shapes(path, spec.shapes(shape), seq, inputs)[0]
            make_feed(inputs, shapes_at[seq], vocab=vocab, vocab_default=spec.vocab, arrays=spec.arrays)
    precision = file_precision(path) if path.suffix == ".onnx" else "fp32"
    pool = BackendPool(trust_checkpoint, allow_globals)

    def one_round() -> list[dict[str, Any]]:
        rows = []
        for seq in lengths:
            for t in resolved:
                row = measure(path, path.stem, precision, t, pool, inputs=InputShapes(shapes_at[seq], feed))
                rows.append({**row, "seq": seq} if seq is not None else row)
        return rows

    # a bare file has no FP32 twin to be timed against; whether it runs in INT8 is still judged
    rows = [judge(r, None, None) for r in one_round()]
    repeats = max(t.latency.repeats for t in resolved)
    if repeats > 1:  # rounds over the lengths and targets, so a slow spell of the machine lands on all
        add_repeats(rows, [one_round() for _ in range(repeats - 1)])
    return rows


def native_commands(model: str | Path, targets: list[str], **overrides: Any) -> list[tuple[str, str]]:
    """(target, the runtime's own benchmark command with the same settings) for each target."""
    return [(t.name, BACKENDS.get(t.backend)().native_command(Path(model), t)) for t in bench_targets(targets, **overrides)]
