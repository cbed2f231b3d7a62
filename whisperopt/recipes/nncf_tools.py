"""NNCF static post-training quantisation, shared by the recipes that calibrate with it: ``openvino-int8-ptq``
(OpenVINO IR) and ``onnx-int8-static`` with ``quantizer=nncf`` (ONNX graphs).

One call, ``nncf_static``, with the settings those recipes expose as options: SmoothQuant's alpha on MatMuls, the
preset (``performance``: symmetric int8 activations; ``mixed``: asymmetric), fast bias correction, and the nodes kept
out of quantisation (``nncf.IgnoredScope``, by name or by pattern). The model type is always TRANSFORMER (NNCF's
scheme for attention blocks: no quantiser on the softmax path, per-channel weights).
"""

from __future__ import annotations

PRESETS = ("performance", "mixed")


def smooth_quant_alpha(value) -> str | None:
    """Option check for a SmoothQuant alpha: a number in [0, 1], or -1 to turn smoothing off."""
    return None if 0 <= value <= 1 or value == -1 else "expected a number in [0, 1] or -1 (off)"


def nncf_static(model, samples: list, *, alpha: float, preset: str = "performance", fast_bias_correction: bool = True,
                ignored_names: list[str] | None = None, ignored_patterns: list[str] | None = None):
    """``nncf.quantize`` of ``model`` (an ``openvino.Model`` or an ``onnx.ModelProto``) calibrated on ``samples`` (the
    model's input dicts, every one used); the quantised model of the same kind."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    nncf.set_log_level(logging.WARNING)  # its INFO lines name every node it cannot size; the progress bars stay

    ignored = None
    if ignored_names or ignored_patterns:
        ignored = nncf.IgnoredScope(names=list(ignored_names or []), patterns=list(ignored_patterns or []),
                                    validate=False)
    return nncf.quantize(
        model, nncf.Dataset(samples), subset_size=len(samples),
        preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=fast_bias_correction, ignored_scope=ignored,
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)))
