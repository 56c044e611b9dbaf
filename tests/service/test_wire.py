"""The wire codec for arrays (DESIGN.md §4)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from service.wire import DTYPES, ArrayModel, decode_array, encode_array

SAMPLES = {
    "float32": np.array([[0.0, -1.5], [3.25, 1e-30]], dtype=np.float32),
    "complex64": np.array([1 + 2j, -3.5j, 0], dtype=np.complex64),
    "uint8": np.arange(0, 255, 17, dtype=np.uint8).reshape(3, 5),
    "bool": np.array([[True, False, True]]),
}


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_round_trip_every_dtype(dtype: str) -> None:
    array = SAMPLES[dtype]
    wire = encode_array(array)
    assert wire["dtype"] == dtype and wire["shape"] == list(array.shape)
    back = decode_array(**wire)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    assert back.flags.writeable


@pytest.mark.parametrize("shape", [[], [0], [3, 0, 2], [1, 1, 1, 1, 1, 1]])
def test_round_trip_edge_shapes(shape: list[int]) -> None:
    array = np.ones(shape, dtype=np.float32)
    assert np.array_equal(ArrayModel.of(array).array, array)


def test_bytes_are_little_endian_c_order() -> None:
    big_endian_fortran = np.asfortranarray(np.arange(6, dtype=">f4").reshape(2, 3))
    data = base64.b64decode(encode_array(big_endian_fortran)["data"])
    assert data == np.arange(6, dtype="<f4").tobytes()


def test_float64_is_sent_as_float32_and_int64_has_no_wire_form() -> None:
    assert encode_array(np.zeros(2))["dtype"] == "float32"
    with pytest.raises(TypeError, match="no wire form"):
        encode_array(np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("data", ["not base64!", "AAA", "AAAA=AAA"])
def test_invalid_base64_is_refused(data: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        decode_array("uint8", [3], data)


@pytest.mark.parametrize(("shape", "nbytes"), [([2, 2], 15), ([2, 2], 17), ([0], 1), ([], 0)])
def test_byte_count_must_match_shape(shape: list[int], nbytes: int) -> None:
    data = base64.b64encode(b"\0" * nbytes).decode()
    with pytest.raises(ValueError, match="bytes but shape"):
        decode_array("float32", shape, data)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_nan_and_inf_are_refused(bad: float, dtype: str) -> None:
    array = np.zeros(3, dtype=dtype)
    if dtype == "complex64":
        array[1] = complex(0.0, bad)  # in the imaginary part only
    else:
        array[1] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        decode_array(**encode_array(array))


def test_bool_bytes_must_be_0_or_1() -> None:
    with pytest.raises(ValueError, match="bytes 0 and 1"):
        decode_array("bool", [2], base64.b64encode(b"\x01\x02").decode())


def test_array_model_names_the_problem_and_refuses_extra_fields() -> None:
    wire = encode_array(SAMPLES["float32"])
    with pytest.raises(ValidationError, match="bytes but shape"):
        ArrayModel.model_validate({**wire, "shape": [5]})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ArrayModel.model_validate({**wire, "order": "F"})
    with pytest.raises(ValidationError, match="dtype"):
        ArrayModel.model_validate({**wire, "dtype": "float64"})
