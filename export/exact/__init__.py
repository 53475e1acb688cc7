"""The exact simulation: an int8 .tflite computed in TensorFlow, bit for bit as a kernel family.

    exact = ExactModel(tflite_bytes, "xnnpack")
    values = exact.run(device_inputs)        # == Graph(tflite_bytes).run(device_inputs, "xnnpack")
    outputs = exact.outputs(device_inputs)   # the graph's outputs only, as LiteRT returns them

The numpy integer reference (`export.device.reference`) states what each family computes and
runs on a device with numpy alone; it is slow on a host (Python per op, int64 numpy). This is the
same arithmetic as TensorFlow ops in one compiled graph, for the host: validation, benchmarks and
the drift report's exact link. It reads the reference's rules and static facts and never states a
rule of its own:

    fixed_point   the requantization rules (double, upward, high-truncated, upward-shift-last,
                  float32, float64) on int64 tensors
    kernels       CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (exact dot products in float32
                  below 2^24, float64 above), pools, MEAN, moves, QUANTIZE, DEQUANTIZE
    tables        LOGISTIC, TANH, HARD_SWISH, int8 QUANTIZE, ADD, MUL: tables filled by the
                  reference's own kernel on every possible input, gathered
    model         `ExactModel`; any other op of the reference (SOFTMAX, PACK, STRIDED_SLICE, ...)
                  runs its numpy kernel inside the graph (tf.numpy_function)

Tests: every tensor of every zoo model at W2/W3/W4/W8 and int4 weights, in every family, equals
the numpy reference (`tests/export/test_exact_model.py`).
"""

from export.exact.model import ExactModel

__all__ = ["ExactModel"]
