"""The wire format for arrays (DESIGN.md §4).

An array travels as JSON ``{"dtype", "shape", "data"}`` where ``data`` is the
base64 of the raw C-order little-endian bytes. Decoding is strict: the byte
count must equal ``prod(shape) * itemsize`` and no NaN or Inf may appear, so a
malformed array is refused at the boundary with the field that carried it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

__all__ = ["DTYPES", "MAX_DIMS", "ArrayModel", "decode_array", "encode_array"]

#: Wire dtype name -> little-endian numpy dtype.
DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "complex64": np.dtype("<c8"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}
MAX_DIMS = 6
# Refuse absurd shapes before multiplying them out (the body limit bounds the
# real size; this only stops an overflow in prod(shape)).
_MAX_ELEMENTS = 1 << 31

Dim = Annotated[int, Field(ge=0, le=1 << 24)]


def decode_array(dtype: str, shape: list[int], data: str) -> np.ndarray:
    """Decode a wire array; raise ``ValueError`` with a readable reason."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    npdtype = DTYPES[dtype]
    count = 1
    for n in shape:
        count *= n
        if count > _MAX_ELEMENTS:
            raise ValueError("shape has too many elements")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("data is not valid base64") from exc
    expected = count * npdtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"data holds {len(raw)} bytes but shape {list(shape)} of {dtype} needs {expected}"
        )
    array = np.frombuffer(raw, dtype=npdtype).reshape(shape)
    if dtype == "bool" and raw and max(raw) > 1:
        raise ValueError("bool data must hold only bytes 0 and 1")
    if npdtype.kind in "fc" and not np.all(np.isfinite(array)):
        raise ValueError("data contains NaN or Inf")
    # A native-endian writable copy: frombuffer views are read-only.
    return array.astype(npdtype.newbyteorder("="), copy=True)


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """Encode a numpy array for the wire (float64 is sent as float32)."""
    array = np.asarray(array)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.complex128:
        array = array.astype(np.complex64)
    names = {v.newbyteorder("="): k for k, v in DTYPES.items()}
    name = names.get(array.dtype.newbyteorder("="))
    if name is None:
        raise TypeError(f"dtype {array.dtype} has no wire form")
    raw = np.ascontiguousarray(array, dtype=DTYPES[name]).tobytes()
    return {"dtype": name, "shape": list(array.shape), "data": base64.b64encode(raw).decode()}


class ArrayModel(BaseModel):
    """An n-d array: dtype, shape and base64 of the raw little-endian bytes."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"dtype": "float32", "shape": [2, 2], "data": "AACAPwAAAEAAAEBAAACAQA=="}]
        },
    )

    dtype: Literal["float32", "complex64", "uint8", "bool"]
    shape: list[Dim] = Field(max_length=MAX_DIMS)
    data: str

    _array: np.ndarray | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _decode(self) -> ArrayModel:
        self._array = decode_array(self.dtype, self.shape, self.data)
        return self

    @property
    def array(self) -> np.ndarray:
        """The decoded array (validated on construction)."""
        assert self._array is not None
        return self._array

    @classmethod
    def of(cls, array: np.ndarray) -> ArrayModel:
        return cls.model_validate(encode_array(array))
