"""The one door through which transformers opens anything from a local folder.

A Hugging Face folder can name Python of its own (``auto_map`` in config.json or tokenizer_config.json).
transformers runs it when ``trust_remote_code`` is true, and when it is left unset and the folder's
``model_type`` is unknown it *asks on stdin*: piping ``y`` imported the folder's code (issue 22). So every
load goes through ``pretrained`` here, which always passes ``trust_remote_code=False`` and
``local_files_only=True``: transformers itself then refuses such a folder, whatever stdin holds. A
test reads edgekd's source and fails if any other ``from_pretrained`` / ``from_config`` call appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LOCKED = {"local_files_only": True, "trust_remote_code": False}  # never downloads, never runs the folder's code


def transformers_module() -> Any:
    """transformers, with its load reports and progress bars off: a checkpoint whose classifier is new
    (an embedding run of a classification folder) is expected here, and edgekd prints its own progress."""
    from ..errors import InputError

    try:
        import transformers
    except ImportError:
        raise InputError("hf: checkpoints and text data need transformers (pip install 'edgekd[text]')") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def pretrained(kind: str, directory: str | Path, **kwargs: Any) -> Any:
    """``transformers.<kind>.from_pretrained(directory, ...)`` offline and without remote code; a caller
    cannot switch either back on (a conflicting keyword is a bug, so it raises TypeError). The folder's
    files and the model its config describes are checked against ``limits`` first."""
    clash = {k for k in kwargs if k in LOCKED and kwargs[k] != LOCKED[k]}
    if clash:
        raise TypeError(f"pretrained(): {', '.join(sorted(clash))} cannot be overridden")
    check_folder(Path(directory))
    factory = getattr(transformers_module(), kind)
    loaded = factory.from_pretrained(str(directory), **{**kwargs, **LOCKED})
    if kind == "AutoConfig":
        check_config_size(loaded, Path(directory))
    return loaded


def from_config(kind: str, config: Any) -> Any:
    """``transformers.<kind>.from_config(config)`` without remote code (a config can carry ``auto_map``)."""
    check_config_size(config, Path(getattr(config, "_name_or_path", "") or "config"))
    return getattr(transformers_module(), kind).from_config(config, trust_remote_code=False)


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def check_folder(directory: Path) -> None:
    """A folder's config and tokenizer files within ``limits`` before transformers reads them whole."""
    from ..errors import InputError
    from ..fileio import LIMITS

    for name, limit in (("config.json", LIMITS.hf_config_bytes),
                        *((n, LIMITS.tokenizer_file_bytes) for n in TOKENIZER_FILES)):
        path = directory / name
        if path.is_file() and path.stat().st_size > limit:
            raise InputError(f"{path}: {path.stat().st_size} bytes; edgekd reads a {name} of at most {limit} bytes")


def check_config_size(config: Any, where: Path) -> None:
    """Refuse a config that describes a model too large to build here, before anything is allocated:
    ``num_hidden_layers: 100000`` hung, ``vocab_size: 4e8`` asked for 51 GB."""
    from ..errors import InputError
    from ..fileio import LIMITS

    def number(key: str) -> int:
        value = getattr(config, key, 0) or 0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise InputError(f"{where}: config key {key!r} is {value!r}; expected a non-negative number")
        return int(value)

    layers, hidden, vocab = number("num_hidden_layers"), number("hidden_size"), number("vocab_size")
    inner = number("intermediate_size") or 4 * hidden
    if layers > LIMITS.hf_layers:
        raise InputError(f"{where}: num_hidden_layers {layers} is over the limit of {LIMITS.hf_layers}")
    estimate = vocab * hidden + layers * (4 * hidden * hidden + 2 * hidden * inner)
    if estimate > LIMITS.hf_parameters:
        raise InputError(f"{where}: its config describes about {estimate:.2e} parameters (vocab_size {vocab}, "
                         f"hidden_size {hidden}, {layers} layers); edgekd builds at most {LIMITS.hf_parameters:.0e}")
