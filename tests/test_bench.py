"""The latency harness on real runtimes (issue 6): full statistics for any ONNX file, shapes and
batches, cold/throughput/memory, fingerprint, warnings, native commands, and TensorRT on a GPU."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekd.backends import BACKENDS
from edgekd.backends import load_target
from edgekd.errors import InputError
from edgekd.measure.fingerprint import fingerprint, machine
from edgekd.measure.measurement import BackendPool, bench, measure

from .conftest import FAST_LATENCY, invoke, write_yaml

STAT_KEYS = {"min", "mean", "p50", "p90", "p95", "p99", "max", "std", "cov"}
FAST = ["--runs", "30", "--warmup", "2", "--seconds", "0.1"]


class Plain(nn.Module):
    """A model edgekd did not make: conv, pool, flatten, linear."""

    def __init__(self, baked_batch: bool = False) -> None:
        super().__init__()
        self.conv, self.fc, self.baked = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 5), baked_batch

    def forward(self, x):
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(x.reshape(1, 8) if self.baked else x)


def export_plain(path, dynamic: dict | None = None, baked_batch: bool = False):
    torch.manual_seed(0)
    torch.onnx.export(Plain(baked_batch).eval(), torch.randn(1, 3, 16, 16), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes=dynamic)
    return path


def test_bench_writes_full_statistics_for_a_plain_torch_export(tmp_path):
    model = export_plain(tmp_path / "plain.onnx", {"x": {0: "n"}, "y": {0: "n"}})
    out = tmp_path / "bench.json"
    result = invoke("bench", model, "--target", "cpu-onnxruntime", "--target", "cpu-openvino", *FAST,
                    "--batch", "4", "--json", out)
    assert result.exit_code == 0, result.output
    for header in ("min", "p50", "p95", "p99", "max", "std", "cov", "cold"):
        assert header in result.output
    data = json.loads(out.read_text())
    assert [r["target"] for r in data] == ["cpu-onnxruntime", "cpu-openvino"]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    for r in data:
        lat = r["latency_ms"]
        assert r["status"] == "ok" and STAT_KEYS <= set(lat) and lat["runs"] >= 30 and lat["warmup_runs"] >= 2
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["cold_ms"] > 0 and r["throughput_ips"] == pytest.approx(1000 / lat["mean"])
        assert r["throughput_batch"]["batch"] == 4 and r["throughput_batch"]["ips"] > 0
        assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0
        assert r["fingerprint"]["artifact_sha256"] == sha and r["fingerprint"]["machine_id"] == machine()["machine_id"]
        assert r["settings"]["latency"]["runs"] == 30 and r["settings"]["batch"] == 1
    ort, ov = data
    assert ort["settings"]["intra_op_num_threads"] == 2 and ort["settings"]["inter_op_num_threads"] == 1
    assert ort["settings"]["allow_spinning"] is True
    assert ov["settings"]["INFERENCE_NUM_THREADS"] == "2" and ov["settings"]["NUM_STREAMS"] == "1"
    assert ov["settings"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_dynamic_dims_need_a_shape_and_a_wrong_shape_is_bad_input(tmp_path):
    model = export_plain(tmp_path / "hw.onnx", {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})
    result = invoke("bench", model, "--target", "cpu-onnxruntime", *FAST)
    assert result.exit_code == 2 and "input 'x' has dynamic dims (nx3xhxw); pass --shape" in result.output
    assert invoke("bench", model, "--shape", "1x3x16", *FAST).exit_code == 2
    assert invoke("bench", model, "--shape", "1x3xbig", *FAST).exit_code == 2
    (tmp_path / "damaged.onnx").write_bytes(model.read_bytes()[:50])
    damaged = invoke("bench", tmp_path / "damaged.onnx", *FAST)
    assert damaged.exit_code == 2 and "damaged.onnx: not a readable ONNX model" in damaged.output
    out = tmp_path / "b.json"
    result = invoke("bench", model, "--target", "cpu-onnxruntime", "--target", "cpu-openvino", "--shape", "1x3x24x20",
                    *FAST, "--batch", "1", "--json", out)
    assert result.exit_code == 0, result.output
    assert all(r["status"] == "ok" and "throughput_batch" not in r for r in json.loads(out.read_text()))


def test_a_batch_1_export_is_reshaped_for_throughput_and_a_baked_batch_says_why(tmp_path):
    static = export_plain(tmp_path / "static.onnx")
    assert onnx.load(str(static)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    baked = export_plain(tmp_path / "baked.onnx", baked_batch=True)
    target = load_target("cpu-onnxruntime").model_copy(update={"latency": load_target("cpu-onnxruntime").latency.model_copy(
        update={**FAST_LATENCY, "batch": 3})})
    pool = BackendPool()
    ok = measure(static, "static", "fp32", target, pool)
    assert ok["status"] == "ok" and ok["throughput_batch"]["ips"] > 0 and ok["throughput_batch"]["batch"] == 3
    broken = measure(baked, "baked", "fp32", target, pool)
    assert broken["status"] == "ok" and broken["latency_ms"]["p50"] > 0  # batch 1 still measured
    assert broken["throughput_batch"]["ips"] is None and broken["throughput_batch"]["error"]


def test_noisy_latency_is_flagged_by_the_targets_threshold(tmp_path):
    model = export_plain(tmp_path / "m.onnx")
    strict = write_yaml(tmp_path / "strict.yaml", {"name": "strict", "backend": "onnxruntime", "threads": 1,
                                                   "latency": {**FAST_LATENCY, "runs": 60, "max_drift": 1e-9,
                                                               "max_spread": 1e-9, "max_cov": 1e-9}})
    lax = write_yaml(tmp_path / "lax.yaml", {"name": "lax", "backend": "onnxruntime", "threads": 1,
                                             "latency": {**FAST_LATENCY, "runs": 60, "max_drift": 100.0,
                                                         "max_spread": 100.0}})
    flagged, calm = bench(model, [str(strict), str(lax)])
    assert any("drifted while measured" in w for w in flagged["warnings"])
    assert any("spread (1.4826 x MAD / median)" in w for w in flagged["warnings"])
    assert any("coefficient of variation" in w for w in flagged["warnings"])  # only where max_cov is set
    assert calm["warnings"] == []
    result = invoke("bench", model, "--target", strict)
    assert "warning: latency drifted while measured" in result.output


def test_one_stall_among_thousands_of_calls_is_not_noise():
    """The demo's case: 9 481 calls of ~0.30 ms and one of 4.5 ms. cov is large; the robust spread is not."""
    from edgekd.measure.latency import LatencyStats

    times = 0.30 + 0.003 * np.random.default_rng(0).standard_normal(9481)
    times[5000] = 4.5
    stats = LatencyStats.of(times)
    assert stats.cov > 0.05 and stats.spread < 0.02 and abs(stats.p90 / stats.p50 - 1) < 0.02
    assert stats.drift_p50 < 0.01 and stats.drift_p90 < 0.01  # p50 and p90 stable: no noise warning
    wild = LatencyStats.of(0.30 * np.random.default_rng(1).lognormal(0, 0.3, 2000))  # an unstable machine
    assert wild.spread > 0.2


def test_jittery_but_stationary_calls_do_not_drift_and_a_slow_stretch_does():
    """Sub-ms calls scatter 5-10% on a quiet machine without their p50 moving; a co-tenant that slows a
    stretch of the calls moves the p50 of that block."""
    from edgekd.measure.latency import LatencyStats

    jitter = 0.30 * np.random.default_rng(2).lognormal(0, 0.08, 10000)
    calm = LatencyStats.of(jitter)
    assert calm.spread > 0.05 and calm.drift_p50 < 0.02 and calm.drift_p90 < 0.04
    busy = jitter.copy()
    busy[6000:8000] *= 1.15
    moved = LatencyStats.of(busy)
    assert moved.drift_p50 > 0.10 and moved.spread < 0.15


def test_emit_native_prints_each_runtimes_own_command_with_the_same_settings(tmp_path):
    model = export_plain(tmp_path / "m.onnx")
    result = invoke("bench", model, "--target", "cpu-openvino", "--target", "cpu-onnxruntime", "--target",
                    "jetson-tensorrt-int8", "--threads", "1", "--emit-native", *FAST)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    app = next(ln for ln in lines if ln.startswith("benchmark_app"))
    for flag in ("-api sync", "-hint none", "-nstreams 1", "-nthreads 1", "-infer_precision f32", "-niter 30"):
        assert flag in app
    perf = next(ln for ln in lines if ln.startswith("onnxruntime_perf_test"))
    assert "-e cpu -x 1 -y 1" in perf and "-r 30" in perf and str(model) in perf
    trtexec = next(ln for ln in lines if ln.startswith("trtexec"))
    assert f"--onnx={model}" in trtexec and "--fp16 --int8" in trtexec and "--memPoolSize=workspace:512M" in trtexec


def test_openvino_compiles_into_the_edgekd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    model = export_plain(tmp_path / "m.onnx")
    target = load_target("cpu-openvino")
    first = BACKENDS.get("openvino")().compile(model, target).settings()
    assert first["cache_dir"] == str(tmp_path / "cache" / "openvino") and first["LOADED_FROM_CACHE"] == "False"
    assert list((tmp_path / "cache" / "openvino").glob("*.blob"))
    assert BACKENDS.get("openvino")().compile(model, target).settings()["LOADED_FROM_CACHE"] == "True"


def test_openvino_call_sees_each_new_array_and_in_place_changes(tmp_path):
    model = export_plain(tmp_path / "m.onnx")
    ov_model = BACKENDS.get("openvino")().compile(model, load_target("cpu-openvino"))
    ort_model = BACKENDS.get("onnxruntime")().compile(model, load_target("cpu-onnxruntime"))
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    first = np.array(ov_model(x), copy=True)
    x *= -1  # the same array, changed in place: the bound input must follow
    assert np.allclose(ov_model(x), ort_model(x), atol=1e-4) and not np.allclose(ov_model(x), first)
    other = np.asfortranarray(np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32))
    assert np.allclose(ov_model(other), ort_model(np.ascontiguousarray(other)), atol=1e-4)
    other *= -1  # not contiguous, so it was copied when bound: the change must still be seen
    assert np.allclose(ov_model(other), ort_model(np.ascontiguousarray(other)), atol=1e-4)


def test_onnxruntime_gpu_provider_missing_is_unavailable_with_the_reason(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA EP: the missing-provider path cannot be shown here")
    model = export_plain(tmp_path / "m.onnx")
    cuda = write_yaml(tmp_path / "cuda.yaml", {"name": "ort-cuda", "backend": "onnxruntime", "device": "CUDA",
                                               "latency": FAST_LATENCY})
    (row,) = bench(model, [str(cuda)])
    assert row["status"] == "unavailable" and "no CUDAExecutionProvider" in row["error"]


def test_fingerprint_describes_the_machine_and_hashes_external_weights(tmp_path):
    fp = machine()
    assert fp["cpu"]["logical_cpus"] >= 1 and {"avx2", "avx512_vnni", "amx_int8", "asimd"} <= set(fp["cpu"]["isa"])
    assert fp["runtimes"]["onnxruntime"] and fp["runtimes"]["openvino"]
    model = onnx.load(str(export_plain(tmp_path / "m.onnx")))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=0)
    first = fingerprint(tmp_path / "ext.onnx")["artifact_sha256"]
    data = (tmp_path / "ext.onnx.data").read_bytes()
    (tmp_path / "ext.onnx.data").write_bytes(data[:-4] + bytes(4))  # the weights change, the graph file does not
    assert fingerprint(tmp_path / "ext.onnx")["artifact_sha256"] != first


def test_compress_measures_the_torch_baseline_on_its_exported_programs(tiny_teacher, tiny_files, tmp_path):
    torch_target = write_yaml(tmp_path / "torch.yaml", {"name": "tiny-torch", "backend": "torch", "threads": 1,
                                                        "latency": FAST_LATENCY})
    out = tmp_path / "run"
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", out, "--target", torch_target,
                    "--target", tiny_files["ort"])
    assert result.exit_code == 0, result.output
    assert (out / "models" / "teacher-fp32.pt2").is_file() and not (out / "models" / "student-int8.pt2").exists()
    rows = {(r["variant"], r["target"]): r for r in json.loads((out / "report.json").read_text())["results"]}
    for variant in ("teacher-fp32", "student-fp32"):
        on_torch, on_ort = rows[(variant, "tiny-torch")], rows[(variant, "tiny-ort")]
        assert on_torch["status"] == "ok" and on_torch["settings"]["torch_compile"] is False
        assert on_torch["accuracy"] == pytest.approx(on_ort["accuracy"], abs=1e-9)  # same graph, same answers
        assert on_torch["parity"]["top1_agreement"] == 1.0
    int8 = rows[("student-int8", "tiny-torch")]
    assert int8["status"] == "unavailable" and "student-int8 has no .pt2 file" in int8["error"]


def test_no_torch_program_is_written_when_no_torch_target_runs(tiny_run):
    assert not list((tiny_run / "models").glob("*.pt2"))  # torch.export costs seconds a variant: only on demand
    assert "torch_program: false" in (tiny_run / "recipe.resolved.yaml").read_text()


def test_bench_takes_a_pt2_program_for_torch_targets_only(tmp_path):
    from edgekd.stages.exporting import export_program

    program = tmp_path / "m.pt2"
    export_program(Plain().eval(), torch.randn(1, 3, 16, 16), program)
    out = tmp_path / "b.json"
    result = invoke("bench", program, *FAST, "--batch", "3", "--json", out)  # a .pt2 file defaults to cpu-torch
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())
    assert row["target"] == "cpu-torch" and row["status"] == "ok" and row["throughput_batch"]["ips"] > 0
    wrong = invoke("bench", program, "--target", "cpu-openvino", *FAST)
    assert wrong.exit_code == 2 and "target cpu-openvino (openvino) runs .onnx files, not .pt2" in wrong.output


class _Planted:
    """Unpickling this runs ``touch MARKER``: what a hostile .pt2 hides in its pickles."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def plant_pt2(clean, planted, marker, member_suffix: str) -> None:
    """Copy the program ``clean`` to ``planted`` with the member ending ``member_suffix`` replaced by a
    torch.save file whose pickle runs a command."""
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"x": _Planted(marker)}, buf)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(planted, "w") as dst:
        names = src.namelist()
        assert any(n.endswith(member_suffix) for n in names), names
        for name in names:
            dst.writestr(name, buf.getvalue() if name.endswith(member_suffix) else src.read(name))


def test_bench_refuses_a_planted_pt2_without_running_it(tmp_path):
    """Issue 14.1: torch.export.load unpickles a program's sample inputs with weights_only=False; a
    planted one ran code under `edgekd bench`. Now nothing runs and the refusal names the global."""
    from edgekd.models.checkpoint import load_exported_program
    from edgekd.errors import CheckpointError
    from edgekd.stages.exporting import export_program

    clean, evil, marker = tmp_path / "m.pt2", tmp_path / "evil.pt2", tmp_path / "PWNED"
    export_program(Plain().eval(), torch.randn(1, 3, 16, 16), clean)
    plant_pt2(clean, evil, marker, "sample_inputs/model.pt")
    before = evil.read_bytes()

    result = invoke("bench", evil, *FAST)
    assert result.exit_code == 2, result.output
    assert "refusing to load a program that can run code" in result.output and "system" in result.output
    assert "--trust-checkpoint" in result.output and "Traceback" not in result.output
    with pytest.raises(CheckpointError, match="system"):
        bench(evil, ["cpu-torch"])
    with pytest.raises(CheckpointError, match="system"):  # the backend itself loads only through the gate
        BACKENDS.get("torch")().compile(evil, load_target("cpu-torch"))
    assert not marker.exists() and evil.read_bytes() == before
    assert load_exported_program(clean) is not None  # a program torch.export wrote passes the gate untouched


def test_bench_runs_a_planted_pt2_only_with_trust_checkpoint(tmp_path):
    """The opt-in is explicit: --trust-checkpoint loads what the user vouches for (and so runs it)."""
    from edgekd.stages.exporting import export_program

    clean, evil, marker = tmp_path / "m.pt2", tmp_path / "evil.pt2", tmp_path / "PWNED"
    export_program(Plain().eval(), torch.randn(1, 3, 16, 16), clean)
    plant_pt2(clean, evil, marker, "sample_inputs/model.pt")
    invoke("bench", evil, *FAST, "--trust-checkpoint")
    assert marker.exists()


def test_torch_compile_runs_the_program_and_matches_eager(tmp_path):
    from edgekd.backends.torch_eager import cxx_compiler
    from edgekd.stages.exporting import export_program

    if cxx_compiler() is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler; none on PATH")
    torch.manual_seed(0)
    program = tmp_path / "m.pt2"
    export_program(Plain().eval(), torch.randn(1, 3, 16, 16), program)
    eager_t, compiled_t = (load_target(n) for n in ("cpu-torch", "cpu-torch-compile"))
    backend = BACKENDS.get("torch")()
    x = torch.rand(1, 3, 16, 16).numpy()
    eager, compiled = backend.compile(program, eager_t), backend.compile(program, compiled_t)
    assert compiled.settings()["torch_compile"] is True and compiled.input_shape == (1, 3, 16, 16)
    assert np.allclose(eager(x), compiled(x), atol=1e-5)
    assert backend.compile(program, eager_t, (4, 3, 16, 16))(np.repeat(x, 4, 0)).shape == (4, 5)  # batch is dynamic
    with pytest.raises(InputError, match="runs .pt2"):
        backend.compile(export_plain(tmp_path / "m.onnx"), eager_t)



# ---------------------------------------------------------------- TensorRT (GPU machine only)
def _tensorrt_or_skip():
    ok, why = BACKENDS.get("tensorrt")().availability()
    if not ok:
        pytest.skip(f"TensorRT cannot run here: {why}")


def test_tensorrt_builds_caches_and_reports_gpu_compute_apart(tmp_path, monkeypatch):
    _tensorrt_or_skip()
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    model = export_plain(tmp_path / "m.onnx")
    fp16 = write_yaml(tmp_path / "t.yaml", {"name": "trt", "backend": "tensorrt", "device": "GPU",
                                            "precision": "fp16", "latency": FAST_LATENCY})
    first, second = bench(model, [str(fp16), str(fp16)])
    assert first["status"] == "ok", first["error"]
    assert first["settings"]["engine_cached"] is False and second["settings"]["engine_cached"] is True
    assert list((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))
    gpu, host = first["device_latency_ms"], first["latency_ms"]
    assert 0 < gpu["p50"] <= host["p50"]  # the host's view adds the copies and the synchronisation


def test_tensorrt_refuses_a_qdq_file_on_an_fp16_target(tiny_run, tmp_path, monkeypatch):
    _tensorrt_or_skip()
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    (row,) = bench(tiny_run / "models" / "student-int8.onnx", ["jetson-tensorrt-fp16"], runs=5, min_seconds=0.0)
    assert row["status"] == "failed" and "is quantized (QDQ)" in row["error"]
    (row,) = bench(tiny_run / "models" / "student-int8.onnx", ["jetson-tensorrt-int8"], runs=5, min_seconds=0.0)
    assert row["status"] == "ok" and row["precision"] == "int8" and row["int8_layers"]["int8"] > 0


def test_harness_fidelity_reads_benchmark_apps_median_in_any_unit():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "harness_fidelity.py"
    spec = importlib.util.spec_from_file_location("harness_fidelity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.median_ms("[ INFO ]    Median:     310.50 us\n") == pytest.approx(0.3105)
    assert module.median_ms("Median:        4.25 ms") == pytest.approx(4.25)
    assert module.median_ms("Median: 1.5 s") == pytest.approx(1500.0)
    with pytest.raises(RuntimeError, match="no 'Median:' line"):
        module.median_ms("Average: 3 ms")


def test_repeats_time_the_file_again_in_rounds_and_report_the_spread_between_them(tmp_path):
    """Issue 15.3: the drift *between* measurements (what a regression gate is up against) made visible."""
    model = export_plain(tmp_path / "m.onnx")
    out = tmp_path / "r.json"
    result = invoke("bench", model, "--target", "cpu-onnxruntime", "--target", "cpu-openvino", "--runs", "20",
                    "--seconds", "0", "--repeats", "3", "--json", out)
    assert result.exit_code == 0, result.output
    for row in json.loads(out.read_text()):
        rep = row["repeats"]
        assert len(rep["p50_ms"]) == 3 and rep["p50_ms"][0] == row["latency_ms"]["p50"]
        assert rep["spread"] == pytest.approx((max(rep["p50_ms"]) - min(rep["p50_ms"])) / np.median(rep["p50_ms"]))
    assert "p50 of 3 repeats" in result.output


def test_bench_times_one_call_at_batch_n_and_takes_a_device(tmp_path):
    """``--batch N`` gives the latency of a call at N as well as throughput; ``--device`` moves every
    target to that device of its backend; the built-in gpu-onnxruntime target is ORT's CUDA EP."""
    import onnxruntime as ort

    model = export_plain(tmp_path / "m.onnx")
    result = invoke("bench", model, "-t", "cpu-onnxruntime", *FAST, "--batch", "4", "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "b.json").read_text())
    at_batch = row["throughput_batch"]
    assert at_batch["batch"] == 4 and at_batch["latency_ms"]["p50"] > 0 and at_batch["ips"] > 0
    # the batched call's p50 and the throughput describe the same calls: N / p50 is near the rate
    assert 0.2 < 4 * 1000.0 / at_batch["latency_ms"]["p50"] / at_batch["ips"] < 5
    assert "at batch 4, one call p50" in result.output

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    moved = invoke("bench", model, "-t", "cpu-onnxruntime", *FAST, "--device", "CUDA", "--json", tmp_path / "c.json")
    (row,) = json.loads((tmp_path / "c.json").read_text())
    assert row["device"] == "CUDA"
    if cuda:  # a GPU machine with onnxruntime-gpu: it runs there
        assert moved.exit_code == 0 and row["status"] == "ok", row
    else:  # here: unavailable, saying why, and bench fails as it does when nothing could run
        assert moved.exit_code == 1 and row["status"] == "unavailable", row
        assert "no CUDAExecutionProvider" in row["error"], row
    assert load_target("gpu-onnxruntime").device == "CUDA" and load_target("gpu-onnxruntime").backend == "onnxruntime"
    assert "gpu-onnxruntime" in invoke("list", "targets").output
