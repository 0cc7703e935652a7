"""The JSON codec writes and reads exactly what the json module does: its
shortcut for ints changes nothing a reader elsewhere sees."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute._codecs import JsonCodec

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(_json_values)
def test_items_are_written_as_json_writes_them_and_read_back(item):
    codec = JsonCodec()
    data = codec.encode(item)
    assert data == json.dumps(item, separators=(",", ":"), allow_nan=False).encode()
    assert codec.decode(data) == json.loads(data)


@given(st.binary(max_size=8) | st.text(alphabet="0123456789-+. e", max_size=8).map(str.encode))
def test_bytes_are_read_as_json_reads_them(data):
    # What another writer may have stored: valid JSON or not, the same answer.
    codec = JsonCodec()
    try:
        expected = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(type(exc)):
            codec.decode(data)
    else:
        assert codec.decode(data) == expected


@pytest.mark.parametrize("data", [b"0", b"7", b"10", b"007", b"-0", b"0x1", b"1e3", "٣".encode()])
def test_digits_read_as_json_reads_them(data):
    try:
        expected = json.loads(data.decode())
    except ValueError as exc:
        with pytest.raises(type(exc)):
            JsonCodec().decode(data)
    else:
        assert JsonCodec().decode(data) == expected


def test_an_int_too_long_for_text_is_refused_as_json_refuses_it():
    big = 10**5000
    with pytest.raises(ValueError):
        json.dumps(big)
    with pytest.raises(ValueError):
        JsonCodec().encode(big)
    with pytest.raises(ValueError):
        JsonCodec().decode(b"1" * 5000)
