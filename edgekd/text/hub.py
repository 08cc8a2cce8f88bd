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
    cannot switch either back on (a conflicting keyword is a bug, so it raises TypeError)."""
    clash = {k for k in kwargs if k in LOCKED and kwargs[k] != LOCKED[k]}
    if clash:
        raise TypeError(f"pretrained(): {', '.join(sorted(clash))} cannot be overridden")
    factory = getattr(transformers_module(), kind)
    return factory.from_pretrained(str(directory), **{**kwargs, **LOCKED})


def from_config(kind: str, config: Any) -> Any:
    """``transformers.<kind>.from_config(config)`` without remote code (a config can carry ``auto_map``)."""
    return getattr(transformers_module(), kind).from_config(config, trust_remote_code=False)
