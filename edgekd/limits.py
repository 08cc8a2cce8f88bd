"""Every resource limit edgekd puts on what it reads, stated once.

Hostile or broken input should end as a one-line error (exit 2), not as a hang, a 51 GB allocation or
an abort inside a native library. Each reader checks its input against the number here *before* the
expensive step (expanding YAML, decoding an image, allocating a model, handing a line to a tokenizer),
so the limit is also what the README's promise table and the property-based tests quote.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    yaml_bytes: int = 1 << 20             # a recipe, target or budget file
    yaml_aliases: int = 64                # anchors reused a few times are fine; a "billion laughs" is not
    yaml_nodes: int = 100_000             # nodes after aliases are expanded (1.5 KB expanded to 2^33 before)
    text_field_chars: int = 100_000       # one CSV field / JSONL text (a 100 MB line aborted the tokenizer)
    text_file_bytes: int = 2 << 30        # a CSV/JSONL data file
    label_max: int = 1_000_000            # the largest integer class label (1e12 made a 1e12-class model)
    tokenizer_file_bytes: int = 64 << 20  # tokenizer.json/vocab files (a 300 MB one was read whole)
    hf_config_bytes: int = 1 << 20        # config.json
    hf_layers: int = 256                  # num_hidden_layers (100 000 hung while building)
    hf_parameters: int = 8_000_000_000    # estimated from config.json before anything is allocated
    image_pixels: int = 89_478_485        # Pillow's own decompression-bomb threshold, refused rather than warned
    image_file_bytes: int = 512 << 20


LIMITS = Limits()  # a constant, not state: nothing assigns to it
