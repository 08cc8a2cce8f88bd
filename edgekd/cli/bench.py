"""``edgekd bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..backends.inputs import FeedSpec, parse_shape_options
from ..errors import InputError
from ..progress import for_terminal
from .app import app, handle_errors, out

STATS = ("min", "p50", "p90", "p95", "p99", "max", "mean", "std")


def parse_seqs(text: str | None) -> list[int] | None:
    """``32,64,128`` -> [32, 64, 128]."""
    if text is None:
        return None
    try:
        seqs = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seqs = []
    if not seqs or any(v <= 0 for v in seqs):
        raise InputError(f"--seq {text!r}: expected positive lengths joined by ',', e.g. 32,64,128")
    return seqs


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="An .onnx file (any model: several inputs, integer "
                                          "ones, dynamic axes), or a .pt2 program for a torch target.")],
    target: Annotated[Optional[list[str]], typer.Option("--target", "-t", metavar="NAME|FILE", help="Target name "
                      "or YAML path; repeat for several. Default: cpu-onnxruntime and cpu-openvino (cpu-torch for "
                      "a .pt2).")] = None,
    warmup: Annotated[Optional[int], typer.Option(min=1, help="Warm-up runs (overrides the target's).")] = None,
    runs: Annotated[Optional[int], typer.Option(min=1, help="Timed runs at least (overrides the target's).")] = None,
    seconds: Annotated[Optional[float], typer.Option(min=0.0, help="Timed seconds at least (overrides).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (overrides the target's).")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="Also time calls at this batch size: throughput "
                     "and one call's p50/p90 at it (the table is batch 1).")] = None,
    device: Annotated[Optional[str], typer.Option(metavar="DEVICE", help="Run on this device of each target's "
                      "backend (CPU, CUDA, GPU, ...; overrides the target's device).")] = None,
    repeats: Annotated[Optional[int], typer.Option(min=1, max=100, help="Time the file this many times in rounds "
                       "over the targets; report every repeat's p50 and their spread.")] = None,
    shape: Annotated[Optional[list[str]], typer.Option(
        "--shape", metavar="SHAPE", help="Input shape, e.g. 1x3x224x224, or per input "
                     "input_ids=1x128 (repeat); needed for dynamic dims that --seq does not fill.")] = None,
    seq: Annotated[Optional[str], typer.Option(
        "--seq", metavar="N,N,...", help="Sequence lengths to sweep, e.g. 32,64,128: every dynamic "
                   "non-batch axis takes each in turn; one row per length and target.")] = None,
    inputs: Annotated[Optional[Path], typer.Option(
        "--inputs", metavar="FILE", help="An .npz of arrays named like the model's "
                      "inputs, fed as they are (their shapes win).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option(
        "--tokenizer", metavar="DIR", help="A local tokenizer directory: ids are drawn inside its "
                         "vocabulary where the file has no embedding table to read it from.")] = None,
    emit_native: Annotated[bool, typer.Option(
        "--emit-native", metavar="", help="Also print the runtime's own benchmark "
                                              "command (benchmark_app, trtexec, onnxruntime_perf_test) "
                                              "with the same settings.")] = False,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", "-j", metavar="FILE", help="Write the measurements here as JSON.")] = None,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", metavar="", help="Allow a .pt2 program whose "
                                                   "pickles could run code when torch opens it.")] = False,
    allow_global: Annotated[Optional[list[str]], typer.Option(
        "--allow-global", metavar="MODULE.NAME", help="module.Name a .pt2 program "
                            "may reference beyond torch's safe list (narrower than --trust-checkpoint); repeat.")] = None,
    expect_sha256: Annotated[Optional[str], typer.Option(
        "--expect-sha256", metavar="HEX", help="Refuse MODEL unless its bytes "
                             "have this SHA-256 (checked before it is opened).")] = None,
) -> None:
    """Measure one ONNX file on each target: latency statistics, cold start, throughput, memory."""
    from ..fileio import write_json
    from ..measure.measurement import bench as run_bench, native_commands

    overrides = {"warmup_runs": warmup, "runs": runs, "min_seconds": seconds, "threads": threads, "batch": batch,
                 "repeats": repeats, "device": device}
    targets = target or (["cpu-torch"] if model.suffix == ".pt2" else ["cpu-onnxruntime", "cpu-openvino"])
    with handle_errors():
        if emit_native:
            for name, command in native_commands(model, targets, **overrides):
                out.print(f"# {name}", soft_wrap=True)  # each printed string is one line (names.plain_console)
                out.print(command, soft_wrap=True)
        feed = _feed_spec(model, inputs, tokenizer)
        results = run_bench(model, targets, shape=parse_shape_options(shape), seqs=parse_seqs(seq), feed=feed,
                            trust_checkpoint=trust_checkpoint,
                            allow_globals=tuple(allow_global or ()), expect_sha256=expect_sha256, **overrides)
        if json_path is not None:
            write_json(json_path, results)
    out.print(_stats_table(model.name, results))
    for r in results:
        _print_details(r)
    if any(r["status"] == "failed" for r in results) or not any(r["status"] == "ok" for r in results):
        raise typer.Exit(1)  # a failed row, or no target could measure at all: nothing to trust


def _feed_spec(model: Path, arrays: Path | None, tokenizer: Path | None) -> FeedSpec | None:
    from ..backends.inputs import graph_inputs, load_arrays, tokenizer_vocab

    if arrays is None and tokenizer is None:
        return None
    return FeedSpec(arrays=load_arrays(arrays, graph_inputs(model)) if arrays is not None else None,
                    vocab=tokenizer_vocab(tokenizer) if tokenizer is not None else None)


def _stats_table(title: str, results: list[dict[str, Any]]) -> Table:
    table = Table(title=for_terminal(f"{title}: latency ms, batch 1"), title_justify="left")
    sweep = any(r.get("seq") is not None for r in results)
    for h in ("target", *(("seq",) if sweep else ()), "precision", *STATS, "cov", "cold", "status"):
        table.add_column(h, justify="left" if h in ("target", "precision", "status") else "right")
    for r in results:
        lat = r["latency_ms"] or {}
        nums = [f"{lat[k]:.3f}" if k in lat else "-" for k in STATS]
        cov = f"{lat['cov']:.1%}" if "cov" in lat else "-"
        cold = f"{r['cold_ms']:.2f}" if r.get("cold_ms") is not None else "-"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        seq_cell = (str(r.get("seq")),) if sweep else ()
        table.add_row(*map(for_terminal, (r["target"], *seq_cell, r["precision"], *nums, cov, cold, status)))
    return table


def _print_details(r: dict[str, Any]) -> None:
    """Throughput, memory, runs, the device time and warnings of one result, in one or two lines."""
    if r["status"] != "ok":
        return
    lat, tb = r["latency_ms"], r.get("throughput_batch") or {}
    where = r["target"] + (f" seq {r['seq']}" if r.get("seq") is not None else "")
    unit = "img/s" if len(r.get("input_shapes") or {}) <= 1 else "samples/s"
    parts = [f"{r['throughput_ips']:.0f} {unit} at batch 1"]
    if tb:
        at = (f", one call p50 {tb['latency_ms']['p50']:.3f} ms / p90 {tb['latency_ms']['p90']:.3f} ms"
              if tb.get("latency_ms") else "")
        parts.append(f"{tb['ips']:.0f} {unit} at batch {tb['batch']}{at}" if tb.get("ips")
                     else f"batch {tb['batch']}: {tb.get('error')}")
    parts.append(f"peak RSS {r['peak_rss_mb']:.0f} MB (process before compile {r['rss_before_mb']:.0f} MB)")
    parts.append(f"{lat['runs']} runs in {lat['seconds']:.1f} s after {lat['warmup_runs']} warm-up")
    if r.get("device_latency_ms"):
        parts.append(f"GPU compute p50 {r['device_latency_ms']['p50']:.3f} ms")
    if r.get("repeats"):
        p50s = ", ".join(f"{p:.3f}" for p in r["repeats"]["p50_ms"])
        parts.append(f"p50 of {len(r['repeats']['p50_ms'])} repeats {p50s} ms (spread {r['repeats']['spread']:.1%})")
    if len(r.get("input_shapes") or {}) > 1:
        parts.append("inputs " + ", ".join(f"{n} {'x'.join(map(str, v))}" for n, v in r["input_shapes"].items()))
    out.print(f"{where}: " + "; ".join(parts), highlight=False, markup=False)
    for w in r.get("warnings", []):
        out.print(f"{r['target']}: warning: {w}", style="yellow")
