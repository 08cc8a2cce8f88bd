"""Models in one place: checkpoints and the trust gate, architecture specs (edgekd's zoo, torchvision, timm,
Hugging Face, factories), the embedded default teacher and its assets, text encoders, feature hooks."""
