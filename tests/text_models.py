"""A tiny BERT folder (config, safetensors, WordPiece tokenizer) and a small labelled corpus, made
locally for the text tests (nothing downloaded)."""

from __future__ import annotations

import json
import random
from pathlib import Path

GOOD = ["good", "great", "fine", "happy", "nice", "calm"]
BAD = ["bad", "awful", "sad", "angry", "poor", "ugly"]
FILLER = ["the", "a", "day", "film", "food", "was", "is", "very", "and", "it", "my", "our", "team", "room"]


def bert_folder(root: Path, layers: int = 4, heads: int = 4, hidden: int = 32) -> Path:
    """``root`` as a Hugging Face folder of a random-weight BERT sequence classifier and its tokenizer."""
    import torch
    import transformers

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + GOOD + BAD + FILLER
    wordpiece(vocab, root).save_pretrained(root)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * hidden,
                                     max_position_embeddings=64, num_labels=2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(root)
    return root


def wordpiece(vocab: list[str], root: Path):
    """A BERT WordPiece tokenizer of ``vocab``: transformers 5 takes the vocabulary itself, 4.x a file
    (given to 5 as ``vocab_file`` it is silently ignored, leaving 5 special tokens)."""
    import inspect

    import transformers

    if "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters:
        return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"), do_lower_case=True)


def reviews(path: Path, n: int = 240, labels: bool = True) -> Path:
    """``n`` short "reviews" as JSONL: label 1 holds a positive word, label 0 a negative one."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            label = i % 2
            words = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
            for _ in range(rng.randint(1, 2)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if label else BAD))
            f.write(json.dumps({"text": " ".join(words), **({"label": label} if labels else {})}) + "\n")
    return path
