"""Text models (Hugging Face encoders, loaded offline) and text data, for issue 16.

Inside edgekd a tokenized sample travels as one int64 tensor (3, S): ``input_ids``, ``attention_mask``,
``token_type_ids`` stacked, so the loaders, teacher-output caches and stages that move image tensors
move text unchanged; ``TextModel`` unpacks it, and exported files take the three named inputs that
tokenizers produce (``PACKED_INPUTS``).
"""

PACKED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def is_packed(x) -> bool:
    """Whether ``x`` (torch or numpy) is a batch of packed text samples: (N, 3, S) integers."""
    return len(x.shape) == 3 and x.shape[1] == len(PACKED_INPUTS) and str(x.dtype) in ("torch.int64", "int64")


def packed_feed(x, names: list[str]) -> dict:
    """Named inputs for a file from a batch ``x``: a packed text batch split into the inputs the file
    takes (an exporter drops one the model never reads), anything else as the file's one input."""
    if is_packed(x) and (len(names) > 1 or names[0] in PACKED_INPUTS):
        return {n: x[:, PACKED_INPUTS.index(n)] for n in names if n in PACKED_INPUTS}
    return {names[0]: x}


def export_signature(example, input_name: str, output_name: str) -> tuple[tuple, list[str], dict | None]:
    """(args, input names, dynamic axes) for ``torch.onnx.export``: an image model takes one input at
    batch 1; a text model its three named inputs, with dynamic batch and sequence axes."""
    if not is_packed(example):
        return (example,), [input_name], None
    axes = {n: {0: "batch", 1: "sequence"} for n in PACKED_INPUTS}
    return tuple(example.unbind(1)), list(PACKED_INPUTS), {**axes, output_name: {0: "batch"}}
