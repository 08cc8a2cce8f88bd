"""The prune stage and the helpers only it uses: the latency table (latency_lut) and GCP's sparse training."""

from . import stage  # noqa: F401  (registration)
