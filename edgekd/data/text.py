"""Text data (``data: {source: text, path: ...}``): CSV or JSONL files with a text column and an
optional label column, or a folder written by ``datasets``' ``save_to_disk``; tokenized once, up front,
with the checkpoint's own tokenizer (offline) to ``max_length`` tokens, padded.

Samples come out packed, one int64 tensor (3, max_length) each (``edgekd.data.packed``). Without a label
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

from ..errors import DataError, InputError, first_line
from ..fileio import LIMITS


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


class StreamedTexts:
    """A label-free .jsonl corpus read on demand (``data.stream``): the byte offset of each line is all it
    keeps; ``raw(i)`` reads that line and tokenizes its text, padded and truncated as ``tokenize`` does,
    so a sample is the same tensor the in-memory path holds. The tokenizer and the open file are made
    once per process (neither is pickled into loader workers)."""

    def __init__(self, path: Path, offsets: np.ndarray, text_column: str, tokenizer_dir: str, max_length: int) -> None:
        self.path, self.offsets, self.text_column = path, offsets, text_column
        self.tokenizer_dir, self.max_length = tokenizer_dir, max_length
        self._tokenizer: Any = None
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None, "_file": None}

    def __len__(self) -> int:
        return len(self.offsets)

    def text(self, i: int) -> str:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - read for as long as the corpus is
        self._file.seek(int(self.offsets[i]))
        return json.loads(self._file.readline().decode("utf-8-sig"))[self.text_column]

    def raw(self, i: int) -> torch.Tensor:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_dir)
        return torch.from_numpy(encode(self._tokenizer, [self.text(i)], self.max_length)[0])

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(len(self.offsets), dtype=np.int64)


def line_offsets(path: Path, text_column: str, label_column: str) -> np.ndarray:
    """The byte offset of every non-blank line of a .jsonl corpus to stream, each line checked as the
    in-memory reader checks it (a JSON object whose text column is a string within the limits) in one
    pass that keeps nothing else. A labelled corpus is refused: streaming is for label-free training."""
    if not path.is_file() or path.suffix.lower() != ".jsonl":
        raise DataError(f"data.path {path}: data.stream reads a .jsonl file (one JSON object per line)")
    offsets, position = [], 0
    limit = LIMITS.text_field_chars * 4
    with open(path, "rb") as f:
        for n, line in enumerate(iter(lambda: f.readline(limit + 2), b""), start=1):
            if len(line) > limit and not line.endswith(b"\n"):
                raise DataError(f"data.path {path}: line {n} is longer than {limit} bytes")
            if line.strip():
                try:
                    row = json.loads(line.decode("utf-8-sig"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DataError(f"data.path {path}: line {n} is not UTF-8 JSON ({first_line(exc)[:80]})") from None
                if not isinstance(row, dict):
                    raise DataError(f"data.path {path}: line {n} is a JSON {type(row).__name__}, not an object")
                if label_column in row:
                    raise DataError(f"data.path {path}: line {n} has a {label_column!r} label; data.stream is for "
                                    f"label-free corpora (set data.label_column: none, or leave stream off)")
                _columns([row], f"{path}: line {n}", text_column, label_column)
                offsets.append(position)
            position += len(line)
    if not offsets:
        raise DataError(f"data.path {path}: no rows")
    return np.asarray(offsets, dtype=np.int64)


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

    def recipe_keys(self) -> None:
        return None  # the tokenizer is the preprocessing; data.tokenizer and max_length already say it

    def summary(self) -> str:
        return f"tokenizer {Path(self.tokenizer).name}, {self.max_length} tokens per text"

    def deployment_json(self) -> dict[str, Any]:
        """What an exported file records: the tokenizer by its folder's name, not this machine's path (a
        file shipped to a device carried /home/... of the machine that built it)."""
        return {**self.to_json(), "tokenizer": Path(self.tokenizer).name}

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return raw


def read_rows(path: Path, text_column: str, label_column: str) -> dict[str, tuple[list[str], list[Any] | None]]:
    """Per split, the texts and labels (None without a label column). A file is one split (``train``);
    a ``save_to_disk`` folder keeps its own splits."""
    if path.is_dir():
        return _saved_dataset(path, text_column, label_column)
    if not path.is_file():
        raise DataError(f"data.path {path}: no such file or folder (a .csv, a .jsonl or a save_to_disk folder)")
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise DataError(f"data.path {path}: text data is a .csv, a .jsonl or a save_to_disk folder")
    if path.stat().st_size > LIMITS.text_file_bytes:
        raise DataError(f"data.path {path}: {path.stat().st_size} bytes; a text file is at most "
                        f"{LIMITS.text_file_bytes} (use a save_to_disk folder for more)")
    try:
        rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"data.path {path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    if not rows:
        raise DataError(f"data.path {path}: no rows")
    return {"train": _columns(rows, path, text_column, label_column)}


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    """A CSV's rows; a BOM is read as one (``utf-8-sig``), a field may be as long as the text limit, and a
    row with more or fewer fields than the header is an error naming its line."""
    csv.field_size_limit(LIMITS.text_field_chars + 1)  # the csv module's own guard, at the project's limit
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"data.path {path}: line {reader.line_num} has {len(row)} fields, the header "
                                    f"{len(header)} ({', '.join(header)[:120]})")
                rows.append(dict(zip(header, row)))
        except csv.Error as exc:
            raise DataError(f"data.path {path}: line {reader.line_num}: {exc} (a field is at most "
                            f"{LIMITS.text_field_chars} characters)") from None
    return rows


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(iter(lambda: f.readline(LIMITS.text_field_chars * 4 + 2), ""), start=1):
            if len(line) > LIMITS.text_field_chars * 4 and not line.endswith("\n"):
                raise DataError(f"data.path {path}: line {n} is longer than {LIMITS.text_field_chars * 4} "
                                f"characters")
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"data.path {path}: line {n} is not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"data.path {path}: line {n} is a JSON {type(row).__name__}, not an object "
                                    f"with the text and label columns")
                rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]], where: Any, text_column: str, label_column: str) -> tuple[list[str], list[Any] | None]:
    """The text and label columns of every row: each row must have the text (a string within the length
    limit) and, if the first row has a label, a label too."""
    if text_column not in rows[0]:
        raise DataError(f"data.path {where}: no column {text_column!r}; columns: {', '.join(map(str, rows[0]))} "
                        f"(set data.text_column)")
    labeled = label_column in rows[0]
    texts, labels = [], []
    for n, r in enumerate(rows, start=1):
        missing = [c for c in (text_column, label_column if labeled else None) if c and c not in r]
        if missing:
            raise DataError(f"data.path {where}: row {n} has no {missing[0]!r} (the first row has it)")
        text = r[text_column]
        if not isinstance(text, str):
            raise DataError(f"data.path {where}: row {n}: {text_column!r} is a {type(text).__name__}, not text")
        if len(text) > LIMITS.text_field_chars:
            raise DataError(f"data.path {where}: row {n}: the text has {len(text)} characters; at most "
                            f"{LIMITS.text_field_chars}")
        texts.append(text)
        if labeled:
            labels.append(r[label_column])
    return texts, labels if labeled else None


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
    """Packed (N, 3, max_length) int64 token tensors, padded and truncated by the tokenizer itself; a
    tokenizer that does not know the text is refused (``check_vocabulary``)."""
    tok = load_tokenizer(tokenizer_dir)
    packed = encode(tok, texts, max_length)
    check_vocabulary(packed[:, 0], packed[:, 1], tok, tokenizer_dir)
    return packed


def load_tokenizer(tokenizer_dir: str) -> Any:
    from ..models.hub import pretrained

    try:
        return pretrained("AutoTokenizer", tokenizer_dir)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError/ValueError for a folder without tokenizer files
        raise DataError(f"data.tokenizer {tokenizer_dir}: no tokenizer there ({first_line(exc)[:160]})") from None


def encode(tok: Any, texts: list[str], max_length: int) -> np.ndarray:
    """``texts`` as packed (N, 3, max_length) int64 (ids, attention mask, token types)."""
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
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


def _integer_label(v: Any) -> int | None:
    """``v`` as a class index if it is one exactly (an int, or a string or float that is a whole number);
    None if it is no number at all (then labels are names). 1.7, NaN or a bool is refused, not rounded."""
    if isinstance(v, bool):
        raise DataError(f"data: label {v!r} is a boolean; give class indices (0, 1, ...) or class names")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v != v or not v.is_integer():
            raise DataError(f"data: label {v!r} is not a whole number; give class indices (0, 1, ...) or names")
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v.strip())
    return None


def label_ids(labels: list[Any], names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels: as given when they are whole numbers in range, else the sorted distinct strings'
    positions (class names)."""
    numbers = [_integer_label(v) for v in labels]
    if all(n is not None for n in numbers) and names is None:
        bad = next((n for n in numbers if not 0 <= n <= LIMITS.label_max), None)
        if bad is not None:
            raise DataError(f"data: label {bad} is out of range; class indices are 0..{LIMITS.label_max}")
        return np.asarray(numbers, dtype=np.int64), names
    names = names or sorted({str(v) for v in labels})
    index = {n: i for i, n in enumerate(names)}
    unknown = next((v for v in labels if str(v) not in index), None)
    if unknown is not None:
        raise DataError(f"data: label {unknown!r} is not among the training labels ({', '.join(names)})")
    return np.asarray([index[str(v)] for v in labels], dtype=np.int64), names
