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


METADATA_PREFIX = "edgekd."


def write_metadata(path: str | Path, values: dict[str, object]) -> None:
    """Set ``edgekd.<key>`` metadata properties (JSON values) on an ONNX file in place: how a deployment
    must prepare inputs (``preprocess``), the class names, the input shape."""
    import json

    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=json.dumps(value))
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, object]:
    """The ``edgekd.*`` metadata of an ONNX file, decoded."""
    import json

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: json.loads(p.value) for p in model.metadata_props
            if p.key.startswith(METADATA_PREFIX)}
