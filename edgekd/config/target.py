"""What a target file says: the backend, its device, how latency is measured, and the backend's options.

``Target`` holds the keys every target has; each backend extends it with its own options
(``OnnxRuntimeTarget``, ``OpenVINOTarget``, ... beside the backend that reads them), and
``backends.load_target`` validates a file against its backend's model and ``Capabilities``. Nothing
here imports a backend, so the backends can import it without a circle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..fileio import file_name_problem


class _Strict(BaseModel):
    # NaN and infinity are never a meaningful setting or limit (a NaN budget line passed everything)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LatencySpec(_Strict):
    """How latency is measured (issue 6): warm-up by count *and* time, then timed runs by count *and*
    time, each a single synchronous batch-1 call; then throughput at ``batch`` for ``throughput_seconds``."""

    warmup_runs: int = Field(10, ge=1)
    warmup_seconds: float = Field(0.2, ge=0.0)
    runs: int = Field(200, ge=1)
    min_seconds: float = Field(3.0, ge=0.0)
    batch: int = Field(8, ge=1, description="throughput is also measured at this batch size; 1 measures batch 1 only")
    throughput_seconds: float = Field(1.0, ge=0.0)
    repeats: int = Field(1, ge=1, le=100, description="time every file this many times, interleaved across the "
                         "variants (or targets); each row keeps every repeat's p50 and the spread between them")
    max_drift: float = Field(0.05, gt=0.0, description="flag a measurement whose p50 moved more than this between "
                             "five consecutive blocks of its calls (or its p90 more than twice this): the machine "
                             "really was unstable while it was measured; one stall among thousands moves neither")
    max_spread: float | None = Field(0.25, gt=0.0, description="also flag a robust per-call spread (1.4826 x MAD / "
                                     "median) above this: calls so scattered that one p50 says little; sub-ms calls "
                                     "jitter 5-10% on a quiet machine (null: not checked)")
    max_cov: float | None = Field(None, gt=0.0, description="also flag a coefficient of variation above this "
                                  "(std / mean: one outlier moves it); null: not checked")
    int8_max_ratio: float | None = Field(
        1.0, gt=0.0, description="an INT8 variant whose p50, timed interleaved with its FP32 file, is above this "
                                 "times that file's p50 is failed (slower than FP32: of no use here); null: not checked")


COMMON_TARGET_KEYS = ("name", "description", "backend", "device", "threads", "latency")


def _file_name(value: str) -> str:
    """A name that becomes a file name (``measurements/<variant>@<target>.json``, ``runs/<recipe>``)."""
    problem = file_name_problem(value)
    if problem is not None:
        from ..fileio import NAME_RULE

        raise ValueError(f"{value!r} cannot name files: {problem} (a name has {NAME_RULE})")
    return value


FileName = Annotated[str, AfterValidator(_file_name)]


class Target(_Strict):
    """A hardware target: a backend, its device and the keys every target has (``COMMON_TARGET_KEYS``).
    A backend's own options are fields of its subclass (``Backend.target_model``); ``backends.checked_target``
    builds that subclass and refuses a key its backend does not read, a device or precision it lacks."""

    name: FileName
    description: str = ""
    backend: str
    device: str = "CPU"
    threads: int = Field(2, ge=1)
    latency: LatencySpec = LatencySpec()

    def with_latency(self, **keys: object) -> "Target":
        """A copy whose latency spec has ``keys`` (``runs``, ``min_seconds``, ...; None: left as it is),
        validated as a target file's would be (``compress --runs/--seconds``)."""
        given = {k: v for k, v in keys.items() if v is not None}
        if not given:
            return self
        return self.model_copy(update={"latency": LatencySpec(**{**self.latency.model_dump(), **given})})

    def with_options(self, **options: object) -> "Target":
        """A copy with those of ``options`` that this target's backend reads set (others are ignored: a
        measurement asks every target for "no spinning" or "no cache" without knowing its backend)."""
        return self.model_copy(update={k: v for k, v in options.items() if k in type(self).model_fields})
