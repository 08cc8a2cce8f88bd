"""What a finished run directory vouches for: the exported files published under ``models/`` and the
manifest (``manifest.json``: recipe, checkpoint, versions, stages, artifacts, models)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..artifacts.artifact import Artifact, in_run
from ..config.schema import Recipe
from ..fileio import link_or_copy
from ..models.checkpoint import LoadedCheckpoint
from ..artifacts.qdq_rules import layout_path
from ..version import __version__


def publish_models(run_dir: Path, onnx_artifacts: list[Artifact]) -> dict[str, Artifact]:
    """Publish each exported file as ``models/<variant>.onnx`` (the run directory's contract), and its
    torch.export program, where there is one, as ``models/<variant>.pt2`` (for torch targets): hard links
    to the export stage's files where the filesystem has them, so each file is stored once."""
    published = {}
    for art in onnx_artifacts:
        dest = run_dir / "models" / f"{art.variant}.onnx"
        link_or_copy(art.path, dest)
        meta = dict(art.meta)
        layouts = {}
        for layout, source in meta.get("layouts", {}).items():  # each runtime's INT8 file, beside the main one
            copy = layout_path(dest, layout)
            link_or_copy(source, copy)
            layouts[layout] = str(copy.relative_to(run_dir))
        meta["layouts"] = layouts
        if meta.get("program"):
            program = run_dir / "models" / f"{art.variant}.pt2"
            link_or_copy(meta["program"], program)
            meta["program"] = str(program.relative_to(run_dir))
        published[art.variant] = Artifact(art.variant, art.kind, art.precision, str(dest.relative_to(run_dir)),
                                          art.stage, art.parent, art.config_hash, meta)
    return published


def installed_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Each package's installed version, read from its metadata (importing openvino only to ask its
    version cost a second, and failed a run on a machine whose targets never use it); None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def manifest_fields(rec: Recipe, loaded: LoadedCheckpoint, variants: dict[str, Artifact], models: dict[str, Artifact],
              stage_log: list[dict[str, Any]], run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "edgekd.manifest/1",
        "edgekd": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": rec.name,
        "judging": {"degraded_below_teacher": rec.degraded_below_teacher},  # how report rows get their status
        "checkpoint": {"path": loaded.path, "sha256": loaded.sha256, "format": loaded.format,
                       "arch": loaded.arch, "trusted_checkpoint": loaded.trusted},
        "versions": installed_versions(("torch", "onnx", "onnxruntime", "openvino", "brevitas")),
        "stages": stage_log,
        "artifacts": [in_run(a.to_json(), run_dir) for a in variants.values()],
        "models": {name: a.to_json() for name, a in models.items()},
        **extra,
    }
