"""Names of the TFLite flatbuffer schema's enums (operators, tensor types), read from ai-edge-litert's schema.

Shared by the compatibility checks and the kernel probes; each table is built once per process.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


@lru_cache(maxsize=None)
def tensor_type_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def opcode_names(model) -> list[str]:
    """The op name of each entry of a (packed) model's operator-code table; ``CUSTOM:<code>`` for custom ops."""
    names = builtin_names()
    out = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, f"BUILTIN_{builtin}")
        out.append(f"CUSTOM:{(code.CustomCode() or b'').decode()}" if name == "CUSTOM" else name)
    return out
