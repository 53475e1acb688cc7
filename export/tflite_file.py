"""A .tflite flatbuffer as LiteRT's generated object API (`schema_py_generated.ModelT`): read,
changed in place, written back. The one place softedge (and its tests) rewrite a converted file
(`float_layers.run_in_float`); the integer reference reads its own copy (`reference.graph`), as
it must run without softedge."""

from __future__ import annotations

__all__ = ["read_model", "schema", "write_model"]


def schema():
    """LiteRT's generated flatbuffer schema module (its enums: BuiltinOperator, TensorType, ...)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read_model(tflite_bytes: bytes):
    """The `ModelT` of a .tflite file's bytes (a copy: changing it leaves the bytes as they are)."""
    return schema().ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)


def write_model(model) -> bytes:
    """The .tflite bytes of a `ModelT`, with TFLite's file identifier."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
