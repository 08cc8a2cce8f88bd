"""Runtime log noise is silenced unless EDGEKD_DEBUG=1 (issue 26): ONNX Runtime's session warnings
("Removing initializer ...", one per unused constant) ran to hundreds of lines on EfficientNet-class
files. ORT writes them from C++ to the process's stderr, so they are seen only in a child process."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .spawn import run


def file_with_unused_initializers(path) -> str:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "one")]
    inits += [numpy_helper.from_array(np.zeros(3, np.float32), f"unused{i}") for i in range(5)]
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "g", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_onnx_runtime_warnings_are_shown_only_under_edgekd_debug(tmp_path):
    model = file_with_unused_initializers(tmp_path / "m.onnx")
    args = [sys.executable, "-m", "edgekd", "bench", model, "-t", "cpu-onnxruntime", "--runs", "5", "--seconds", "0",
            "--warmup", "1"]
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    quiet = run(args, capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Removing initializer" not in quiet.stderr
    loud = run(args, capture_output=True, text=True, env={**env, "EDGEKD_DEBUG": "1"})
    assert loud.returncode == 0 and "Removing initializer" in loud.stderr  # the runtime does warn: we hid it
