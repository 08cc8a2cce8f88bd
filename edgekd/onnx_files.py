"""An ONNX model's files on disk (no torch: ``bench`` and the fingerprint use it on bare files)."""

from __future__ import annotations

from pathlib import Path


def onnx_files(path: str | Path) -> list[Path]:
    """An ONNX model's file and the external-data files it references (INT8-NOTES trap 9)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    external = sorted({e.value for init in model.graph.initializer for e in init.external_data if e.key == "location"})
    return [path] + [path.parent / f for f in external if (path.parent / f).is_file()]
