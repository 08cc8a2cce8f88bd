"""``--data`` on the command line: one string naming a data source, applied to a recipe's ``data:`` mapping."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..config.schema import DataSpec
from ..errors import DataError

DATA_FORMS = ("digits, synthetic, npz:PATH (or PATH.npz), imagefolder:DIR, hf:PATH|NAME, text:FILE (JSONL, CSV or a "
              "save_to_disk folder), yolo:DIR, coco:DIR (detection) or package.module:factory")


def parse_data_spec(spec: str, base: dict[str, Any]) -> dict[str, Any]:
    """``--data``: ``digits``, ``synthetic``, ``npz:PATH`` or a bare ``PATH.npz``, ``imagefolder:DIR``,
    ``hf:PATH`` (or a cached dataset name), ``text:FILE`` (JSONL, CSV or a ``save_to_disk`` folder of texts),
    or ``package.module:factory``, applied to the recipe's
    raw ``data:`` mapping ``base``: its other keys (batch size, split, preprocess) are kept, its source
    and path replaced. What described only the replaced source's samples goes with it: ``channels``, and
    the size a generating source (digits, synthetic) made its images at, so the default recipe's 32x32
    digits do not resize a 28x28 npz; a recipe that names no source keeps its ``image_size`` (a resize)."""
    kind, _, rest = spec.partition(":")
    if spec.endswith(".npz") and not rest:
        kind, rest = "npz", spec
    if kind in ("digits", "synthetic") and not rest:
        source, path = kind, None
    elif kind in ("npz", "imagefolder", "hf", "text", "yolo", "coco") and rest:
        source, path = kind, rest
    elif rest.isidentifier() and all(part.isidentifier() for part in kind.split(".")):
        source, path = "factory", spec
    else:
        raise DataError(f"--data {spec!r}: expected {DATA_FORMS}")
    data = {**base, "source": source, "path": path}
    if source not in ("digits", "synthetic"):
        data.pop("channels", None)
        if base.get("source") in ("digits", "synthetic"):  # its image_size was the generated size
            data.pop("image_size", None)
    try:
        DataSpec.model_validate(data)
    except ValidationError as exc:
        raise DataError(f"--data {spec!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return data
