"""``python -m edgekd`` (and ``torchrun --nproc_per_node=N -m edgekd compress ...``)."""

from .cli import main

if __name__ == "__main__":
    main()
