"""The distill stage: a student trained against the teacher with the recipe's losses."""

from . import stage  # noqa: F401  (registration)
