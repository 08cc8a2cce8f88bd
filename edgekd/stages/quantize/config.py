"""The quantize stage's recipe keys, and per-layer precision overrides."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ...config.schema import LossTerms, StageConfig, Strict, TrainingConfig, stage_config, training_keys


class LayerOverride(Strict):
    """A precision for the layers whose names match ``match`` (fnmatch pattern; ``@first`` and ``@last``
    name the first and last conv/linear layer): other weight bits, or ``float: true`` to keep them in float."""

    match: str
    weight_bits: Literal[8, 4] | None = None
    float: bool = False

    @model_validator(mode="after")
    def _one_choice(self) -> "LayerOverride":
        if (self.weight_bits is None) == (not self.float):
            raise ValueError("give either 'weight_bits' (8 or 4) or 'float: true'")
        return self


@stage_config("quantize")
class QuantizeConfig(TrainingConfig, training_keys(3, 1e-4, 0.0, min_epochs=0), StageConfig):
    """INT8 quantization through Brevitas: ``qat`` trains with fake quantization against the teacher
    (quantized distillation, Polino et al.) when ``teacher`` is true; ``ptq`` only calibrates."""

    stage: Literal["quantize"]
    order: ClassVar[int] = 2
    mode: Literal["qat", "ptq"] = "qat"
    weight_bits: Literal[8, 4] = Field(8, description="8: W8A8; 4: W4A8 (4-bit weights stored as INT8)")
    act_bits: Literal[8] = 8
    teacher: bool = True
    reduce_range: bool = Field(False, description="7-bit weights: avoids int16 saturation in ONNX Runtime's "
                               "int8 kernels on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake)")
    calibration_batches: int = Field(8, ge=1)
    calibration: Literal["percentile", "minmax", "mse"] = Field(
        "percentile", description="activation scales: a percentile of |x|, the observed max, or the MSE-optimal clip")
    percentile: float = Field(99.999, gt=50.0, le=100.0, description="for calibration: percentile")
    bias_correction: bool = Field(False, description="Brevitas bias correction after calibration")
    overrides: list[LayerOverride] = Field(default_factory=list, description="per-layer precision, first match wins")
    input_quant: Literal["auto", "signed", "unsigned"] = Field(
        "auto", description="auto: signed when a recipe target runs TensorRT, else UINT8 when the data is never "
        "negative (best on x86 CPUs without VNNI); signed: INT8 symmetric, zero point 0, as TensorRT's explicit "
        "quantization requires; unsigned: UINT8 (CPU backends only)")
    embeddings: Literal["int8", "float"] = Field(
        "int8", description="lookup tables (a text model's token, position and segment embeddings): int8 stores them "
        "as INT8 weights, one scale per row, read row by row at run time (a MiniLM's 47 MB word table becomes "
        "12 MB); float keeps them FP32")
    learned_scales: bool = Field(False, description="qat: train the weight scales too (activation scales always train)")
    hardswish: Literal["auto", "fused", "split"] = Field(
        "auto", description="fused: one quantized Hardswish (OpenVINO's fastest); split: x * hardsigmoid(x) with the "
        "product quantized, which ONNX Runtime runs as QLinearMul (its fastest; OpenVINO 1.3-1.8x slower on "
        "mobilenet_v3); auto: split when every target runs ONNX Runtime, else fused")
    max_accuracy_drop: float | None = Field(None, ge=0.0, le=1.0, description="accuracy-driven mixed precision: "
                                            "keep the fewest layers in float so validation accuracy drops at most this")
    fail_drop: float | None = Field(0.10, ge=0.0, le=1.0, description="the stage fails, saving nothing, when the "
                                    "INT8 model's validation accuracy is more than this below the float model's "
                                    "(a QAT at a bad learning rate collapsed 0.52 -> 0.11 and shipped); null: never")

    def trained_losses(self) -> list[tuple[str, LossTerms]]:
        return [("loss", self.loss)] if self.mode == "qat" else []  # ptq only calibrates
