"""Shared test helpers."""


def assert_config_round_trip(obj):
    """get_config -> from_config -> get_config gives the same config (habit 12)."""
    config = obj.get_config()
    rebuilt = type(obj).from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def with_tensor_grids(tflite_bytes: bytes, grids: dict) -> bytes:
    """The .tflite with new quantization on some tensors: {tensor index: (scales, zero points)}
    (the scales stored as float32, as the converter stores them). Tests use it to reach
    quantization parameters that calibration rarely gives (real multipliers above 1, near-ties)."""
    import numpy as np

    from export.tflite_file import read_model, write_model

    model = read_model(tflite_bytes)
    tensors = model.subgraphs[0].tensors
    for index, (scales, zero_points) in grids.items():
        quantization = tensors[index].quantization
        quantization.scale = [float(np.float32(scale)) for scale in np.atleast_1d(scales)]
        quantization.zeroPoint = [int(zero) for zero in np.atleast_1d(zero_points)]
    return write_model(model)


def with_constant(tflite_bytes: bytes, tensor_index: int, values) -> bytes:
    """The .tflite with a constant tensor's values replaced (same shape, the tensor's own type):
    tests use it to place an accumulator exactly on a rounding boundary."""
    import numpy as np

    from export.tflite_file import read_model, write_model

    model = read_model(tflite_bytes)
    tensor = model.subgraphs[0].tensors[tensor_index]
    dtype = {9: np.int8, 2: np.int32}[tensor.type]   # the schema's TensorType INT8, INT32
    data = np.asarray(values, dtype).reshape([int(d) for d in tensor.shape])
    model.buffers[tensor.buffer].data = np.frombuffer(data.tobytes(), np.uint8)
    return write_model(model)


def default_sigint() -> None:
    """A `preexec_fn` for a child the tests interrupt: SIGINT at its default action, as in a
    process started from a terminal. A non-interactive shell starts a background job (a CI run
    launched with `&`) with SIGINT ignored; every child inherits that, Python then installs no
    KeyboardInterrupt handler, and a test's SIGINT does nothing (such a run saw exit 0, not 130)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
