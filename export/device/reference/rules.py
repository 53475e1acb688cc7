"""One rules record per kernel family: how it requantizes, rounds ties and multiplies. The op
modules read these fields; no op asks which family it runs.

Every field was read off LiteRT 2.3 (and the tflite-micro wheel) on x86-64, and off LiteRT's
aarch64 wheel under QEMU user-mode emulation (`make arm64`), by probing: the tests compare every
tensor of every zoo model with the runtime (`tests/export/test_reference.py`,
`test_trained_graph.py`, `test_micro.py`, and on the emulated CPU models
`tests/app/test_arm64_families.py`), so a wrong field fails there. The names of the
requantization rules are those of `requantize.requantize`:

    "double"   fixed point (M, e) with double rounding: gemmlowp's SaturatingRoundingDoublingHighMul,
               then RoundingDivideByPOT (TFLite's MultiplyByQuantizedMultiplier)
    "upward"   fixed point (M, e), two roundings with ties toward +infinity (ruy's x86 rule)
    "high-truncated"  fixed point (M, e): ruy's ARM64 NEON rule: the high half truncated where a
               right shift follows (sqdmulh), then that shift rounded with ties toward +infinity
               (srshl); with no right shift, the high half rounded (as "upward")
    "upward-shift-last"  as "upward", but a left shift (e > 0) after the rounded high half (the
               ARM64 builtin depthwise kernels)
    "float32"  float32(acc) * float32(multiplier), ties to even (XNNPACK)
    "float64"  round_half_away(acc * double multiplier) (BUILTIN_REF's FULLY_CONNECTED)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

try:  # inside softedge, or copied beside families.py as a package of its own
    from ..families import KernelFamily
except ImportError:  # pragma: no cover - exercised by tests/export/test_reference_package.py
    from families import KernelFamily

__all__ = ["RULES", "FamilyRules", "rules_of"]


@dataclass(frozen=True)
class FamilyRules:
    family: KernelFamily
    # CONV_2D: the requantization of the int32 accumulators.
    conv_requantize: str
    # DEPTHWISE_CONV_2D: the same (LiteRT's builtin depthwise kernels are not ruy's GEMM).
    depthwise_requantize: str
    # FULLY_CONNECTED: the requantization, and whether a per-tensor multiplier is taken from the
    # float32 product float32(s_in s_w) / s_out (LiteRT's optimized kernels:
    # GetQuantizedConvolutionMultipler) or from the double product (LiteRT's BUILTIN_REF kernels
    # and TFLite Micro; per-channel everywhere). BUILTIN_REF's was wrong here until a trained
    # autoencoder (bench-zoo, W8) put two accumulators between the two products: 49 elements.
    fc_requantize: str
    fc_float32_scale_product: bool
    # XNNPACK does not take CONV_2D / DEPTHWISE_CONV_2D with packed int4 weights: LiteRT runs
    # them on this family's kernels instead (it does take an int4 FULLY_CONNECTED).
    int4_convs_run_as: KernelFamily | None
    # LiteRT's builtin depthwise kernel requantizes whole blocks of 8 output channels with SIMD
    # ("upward") and the channels after the last whole block one by one in "double".
    depthwise_scalar_tail: bool
    # LiteRT's aarch64 3x3 depthwise kernel (NEON assembly, taken where TFLite's
    # Fast3x3FilterKernelSupported holds; see conv.fast_3x3_depthwise): its requantization, or
    # None where the family has no such kernel.
    depthwise_3x3_requantize: str | None
    # Fused activation bounds quantized with ties to even (lrintf) rather than away from zero.
    bounds_ties_even: bool
    # ADD: "20-bit" (XNNPACK: 20-bit multipliers and one shift), "single-double" (inputs rescaled with one
    # rounding, the output with two) or "double" (every rescale with two roundings).
    add: str
    # MUL: "float32" (XNNPACK: float32(s_a s_b) / s_out, ties to even) or "double" (fixed point).
    mul: str
    # int8 -> int8 QUANTIZE (a requantization): "8-bit" (XNNPACK: an 8-bit multiplier
    # rint(256 s_in / s_out), (x m + 0x80) >> 8) or "double" (fixed point).
    requantize_int8: str
    # MEAN: "float32" (XNNPACK: float32 scale and folded bias, ties to even) or "fixed-point"
    # (TFLite's QuantizedMeanOrSum).
    mean: str
    # MEAN with keep_dims over height and width of a 4-D tensor: "raw-sum-bias" (LiteRT's
    # optimized kernel for it: the raw int8 sum requantized, the zero points as one bias) or "mean"
    # (as MEAN above).
    mean_keep_dims_hw: str
    # float32 -> int8 QUANTIZE: "half-away" (x / s rounded half away from zero, AffineQuantize)
    # or "reciprocal-even" (x * float32(1 / s), ties to even).
    quantize_float: str
    # DEQUANTIZE: "difference" (q - z) s, or "product-difference-in-8s": q s - z s over whole
    # blocks of 8 elements (the builtin kernel's SIMD loop), (q - z) s after the last one.
    dequantize: str
    # LOGISTIC and TANH tables: entries rounded with ties to even (True) or half away from zero.
    table_ties_even: bool
    # SOFTMAX: "fixed-point" (gemmlowp, TFLite's reference kernel), "float-table" (LiteRT's
    # optimized x86 kernel; XNNPACK takes only float softmax) or "uint16-table" (LiteRT's
    # optimized aarch64 kernel, SoftmaxInt8LUT).
    softmax: str


RULES: dict[KernelFamily, FamilyRules] = {
    KernelFamily.REFERENCE: FamilyRules(
        KernelFamily.REFERENCE, depthwise_3x3_requantize=None, conv_requantize="double", depthwise_requantize="double", fc_requantize="float64", fc_float32_scale_product=False,
        int4_convs_run_as=None, depthwise_scalar_tail=False, bounds_ties_even=False, add="double", mul="double", requantize_int8="double",
        mean="fixed-point", mean_keep_dims_hw="mean", quantize_float="half-away", dequantize="difference", table_ties_even=False,
        softmax="fixed-point"),
    KernelFamily.BUILTIN: FamilyRules(
        KernelFamily.BUILTIN, depthwise_3x3_requantize=None, conv_requantize="upward", depthwise_requantize="upward", fc_requantize="upward", fc_float32_scale_product=True,
        int4_convs_run_as=None, depthwise_scalar_tail=True, bounds_ties_even=False, add="single-double", mul="double", requantize_int8="double",
        mean="fixed-point", mean_keep_dims_hw="raw-sum-bias", quantize_float="reciprocal-even", dequantize="product-difference-in-8s", table_ties_even=False,
        softmax="float-table"),
    KernelFamily.XNNPACK: FamilyRules(
        KernelFamily.XNNPACK, depthwise_3x3_requantize=None, conv_requantize="float32", depthwise_requantize="float32", fc_requantize="float32", fc_float32_scale_product=True,
        int4_convs_run_as=KernelFamily.BUILTIN, depthwise_scalar_tail=False, bounds_ties_even=True, add="20-bit",
        mul="float32", requantize_int8="8-bit", mean="float32", mean_keep_dims_hw="mean", quantize_float="reciprocal-even", dequantize="difference",
        table_ties_even=True, softmax="float-table"),
}
# LiteRT on ARM64 (probed on QEMU's cortex-a35, -a53, -a57, -a72, -a76, neoverse-n1 and a64fx;
# the same integers on each): ruy's NEON output stage for CONV_2D and FULLY_CONNECTED, a 3x3
# depthwise kernel of its own, the uint16-table SOFTMAX; every other builtin kernel computes as
# on x86-64. XNNPACK computes as on x86-64, and hands what it does not take to these builtin
# kernels: int4 convolutions and the int8 SOFTMAX.
RULES[KernelFamily.BUILTIN_ARM64] = replace(RULES[KernelFamily.BUILTIN], family=KernelFamily.BUILTIN_ARM64,
                                            conv_requantize="high-truncated", fc_requantize="high-truncated",
                                            depthwise_3x3_requantize="upward-shift-last",
                                            softmax="uint16-table")
RULES[KernelFamily.XNNPACK_ARM64] = replace(RULES[KernelFamily.XNNPACK], family=KernelFamily.XNNPACK_ARM64,
                                            int4_convs_run_as=KernelFamily.BUILTIN_ARM64,
                                            softmax=RULES[KernelFamily.BUILTIN_ARM64].softmax)
# TFLite Micro: the reference family, but FULLY_CONNECTED is MultiplyByQuantizedMultiplier (double
# rounding) with the double product's multiplier.
RULES[KernelFamily.MICRO] = replace(RULES[KernelFamily.REFERENCE], family=KernelFamily.MICRO, fc_requantize="double",
                                    fc_float32_scale_product=False)


def rules_of(family) -> FamilyRules:
    """The rules of `family` (a KernelFamily or its name); ValueError names the known ones."""
    try:
        return RULES[KernelFamily(family)]
    except ValueError:
        raise ValueError(f"Unknown kernel family {family!r}; expected one of "
                         f"{', '.join(f.value for f in KernelFamily)}.") from None
