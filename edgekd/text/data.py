"""Text data (``data: {source: text, path: ...}``): CSV or JSONL files with a text column and an
optional label column, or a folder written by ``datasets``' ``save_to_disk``; tokenized once, up front,
with the checkpoint's own tokenizer (offline) to ``max_length`` tokens, padded.

Samples come out packed, one int64 tensor (3, max_length) each (``edgekd.text``). Without a label
column every label is 0 and the data serves label-free work: the embedding task and its losses.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, InputError


@dataclass
class TokenSet:
    """Tokenized samples in memory: ``x`` (N, 3, S) int64, ``y`` (N,) labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def raw(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.x[i].copy())

    @property
    def labels(self) -> np.ndarray:
        return self.y


@dataclass(frozen=True)
class TokenPreprocess:
    """What turned text into the model's inputs (recorded in the manifest and in each ONNX file's
    metadata); the samples are tokenized already, so calling it returns them as they are."""

    tokenizer: str
    max_length: int
    text_column: str
    origin: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "text", **asdict(self)}

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return raw


def read_rows(path: Path, text_column: str, label_column: str) -> dict[str, tuple[list[str], list[Any] | None]]:
    """Per split, the texts and labels (None without a label column). A file is one split (``train``);
    a ``save_to_disk`` folder keeps its own splits."""
    if path.is_dir():
        return _saved_dataset(path, text_column, label_column)
    if not path.is_file():
        raise DataError(f"data.path {path}: no such file or folder (a .csv, a .jsonl or a save_to_disk folder)")
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"data.path {path}: line {n} is not JSON ({exc.msg})") from None
    else:
        raise DataError(f"data.path {path}: text data is a .csv, a .jsonl or a save_to_disk folder")
    if not rows:
        raise DataError(f"data.path {path}: no rows")
    return {"train": _columns(rows, path, text_column, label_column)}


def _columns(rows: list[dict[str, Any]], where: Any, text_column: str, label_column: str) -> tuple[list[str], list[Any] | None]:
    if text_column not in rows[0]:
        raise DataError(f"data.path {where}: no column {text_column!r}; columns: {', '.join(rows[0])} "
                        f"(set data.text_column)")
    texts = [str(r[text_column]) for r in rows]
    labels = [r[label_column] for r in rows] if label_column in rows[0] else None
    return texts, labels


def _saved_dataset(path: Path, text_column: str, label_column: str) -> dict[str, tuple[list[str], list[Any] | None]]:
    try:
        import datasets
    except ImportError:
        raise DataError("a save_to_disk folder needs the datasets package: pip install 'edgekd[data]'") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types for a wrong folder
        raise DataError(f"data.path {path}: not a save_to_disk folder ({type(exc).__name__})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = {"train": loaded}
    names = {"train": "train", "validation": "val", "val": "val", "test": "test"}
    out = {}
    for name, ds in loaded.items():
        if name in names:
            rows = ds.to_list() if len(ds) else []
            if rows:
                out[names[name]] = _columns(rows, f"{path} ({name})", text_column, label_column)
    if "train" not in out:
        raise DataError(f"data.path {path}: no 'train' split; it has {', '.join(loaded)}")
    return out


def tokenize(texts: list[str], tokenizer_dir: str, max_length: int) -> np.ndarray:
    """Packed (N, 3, max_length) int64 token tensors, padded and truncated by the tokenizer itself."""
    from .hub import pretrained

    try:
        tok = pretrained("AutoTokenizer", tokenizer_dir)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError/ValueError for a folder without tokenizer files
        raise DataError(f"data.tokenizer {tokenizer_dir}: no tokenizer there ({str(exc).splitlines()[0][:160]})") from None
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
    check_vocabulary(ids, enc.get("attention_mask"), tok, tokenizer_dir)
    mask = enc.get("attention_mask", np.ones_like(ids)).astype(np.int64)
    types = enc.get("token_type_ids", np.zeros_like(ids)).astype(np.int64)
    return np.stack([ids, mask, types], axis=1)


MAX_UNKNOWN = 0.5  # a tokenizer that knows fewer than half of the text's tokens does not fit it


def check_vocabulary(ids: np.ndarray, mask: np.ndarray | None, tok: Any, where: str) -> None:
    """Refuse a tokenizer that maps most of the text to its unknown token: every model trained on such
    inputs sees nothing (a tokenizer built with a vocabulary argument its transformers version ignores
    knows only its 5 special tokens, and a BERT trained on that output predicted the majority class)."""
    unk = getattr(tok, "unk_token_id", None)
    if unk is None:
        return
    special = set(getattr(tok, "all_special_ids", [])) - {unk}
    real = (mask.astype(bool) if mask is not None else np.ones_like(ids, dtype=bool)) & ~np.isin(ids, list(special))
    share = float((ids[real] == unk).mean()) if real.any() else 0.0
    if share > MAX_UNKNOWN:
        raise DataError(f"data.tokenizer {where}: {share:.0%} of the text's tokens are unknown to it (vocabulary of "
                        f"{len(tok)}); it does not fit this text")


def label_ids(labels: list[Any], names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels: as given when they are integers, else the sorted distinct strings' positions."""
    try:
        return np.asarray([int(v) for v in labels], dtype=np.int64), names
    except (TypeError, ValueError):
        names = names or sorted({str(v) for v in labels})
        index = {n: i for i, n in enumerate(names)}
        unknown = next((v for v in labels if str(v) not in index), None)
        if unknown is not None:
            raise DataError(f"data: label {unknown!r} is not among the training labels ({', '.join(names)})") from None
        return np.asarray([index[str(v)] for v in labels], dtype=np.int64), names
