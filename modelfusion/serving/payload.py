"""Turning a ``POST /predict`` body into the rows a fused model takes, or a clear 4xx.

Accepted bodies, by ``Content-Type``:

* ``application/json``: rows (``[[...], [...]]``), one row (``[...]``), records with named
  columns (``[{"pixel_0_0": 0.0, ...}]``, ordered by the bundle's feature names), any of those
  under ``"instances"`` / ``"inputs"``, or texts (``["a review", ...]`` / ``{"texts": [...]}``)
  for a bundle whose members take text; ``null`` and ``NaN`` are missing values;
* ``application/x-npy`` or ``application/octet-stream``: a ``.npy`` file (never a pickle);
* ``image/png``, ``image/jpeg``, ...: one image, for a bundle that takes ``[channels, height,
  width]`` rows, decoded and resized to that shape with values in [0, 1];
* ``text/plain``: one text per non-empty line, for a bundle whose members take text;
* ``multipart/form-data`` (``curl -F image=@cat.png``, browser forms): every part read by its own
  content type as above (image files, ``.npy`` files, JSON, text fields), rows in part order.
"""

from __future__ import annotations

import io
import json
import math
import tokenize
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelfusion.errors import DataError, InputError
from modelfusion.inputs import align_inputs

JSON_TYPES = ("application/json",)
NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff")
TEXT_TYPES = ("text/plain",)
MULTIPART_TYPES = ("multipart/form-data",)
CONTENT_TYPES = JSON_TYPES + NPY_TYPES + IMAGE_TYPES + TEXT_TYPES + MULTIPART_TYPES
_ROW_KEYS = ("instances", "inputs")
#: The largest image a request may send (width x height), checked before it is decoded.
MAX_IMAGE_PIXELS = 40_000_000


class PayloadError(InputError):
    """A request body the model cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputSchema:
    """What one request row must look like.

    ``shape``: a sample's shape (``[64]``, ``[1, 28, 28]``), None when the bundle does not
    record it; ``feature_names``: the columns records may name; ``takes_text``: rows are
    strings; ``allow_nan``: whether NaN / null values may reach the model.

    Examples
    --------
    >>> rows = parse_payload(b"[[0, 1]]", "application/json", InputSchema(shape=(2,)))
    >>> rows.shape, rows.dtype
    ((1, 2), dtype('float32'))
    """

    shape: tuple[int, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    takes_text: bool = False
    allow_nan: bool = False

    def describe(self) -> dict[str, Any]:
        """The schema as ``GET /metadata`` shows it."""
        return {
            "kind": "text" if self.takes_text else "array",
            "shape": None if self.shape is None else ["batch", *self.shape],
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "dtype": "string" if self.takes_text else "float32",
            "allow_nan": self.allow_nan,
            "content_types": list(CONTENT_TYPES),
        }


def parse_payload(body: bytes, content_type: str | None, schema: InputSchema) -> np.ndarray:
    """The rows of ``body`` checked against ``schema``: float32 [n, *shape], or an object array of
    strings [n] for text; PayloadError (400 malformed, 415 unknown type, 422 wrong content)."""
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        return _from_json(body, schema)
    if kind in NPY_TYPES:
        return check_rows(_from_npy(body), schema)
    if kind in IMAGE_TYPES:
        return _from_image(body, schema)
    if kind in TEXT_TYPES:
        return _from_text(body, schema)
    if kind in MULTIPART_TYPES:
        return _from_multipart(body, content_type or "", schema)
    raise PayloadError(
        f"Content-Type {kind!r} is not supported; send one of {', '.join(CONTENT_TYPES)}", status=415
    )


def check_rows(x: np.ndarray, schema: InputSchema) -> np.ndarray:
    """``x`` as float32 rows [n, *shape]: one sample gets a batch axis; PayloadError when the
    dtype, the shape or a missing value is wrong.

    Examples
    --------
    >>> check_rows(np.zeros(3), InputSchema(shape=(3,))).shape
    (1, 3)
    """
    if schema.takes_text:
        raise PayloadError(
            "this model takes text: send a JSON list of strings or text/plain lines", status=415
        )
    if x.dtype.kind not in "biuf":
        raise PayloadError(
            f"rows must be numbers, got values of dtype {x.dtype} (e.g. strings or nested lists)"
        )
    if schema.shape is not None and tuple(x.shape) == schema.shape:
        x = x[None]
    if x.ndim < 2 or x.size == 0:
        raise PayloadError(
            f"expected rows [n, {', '.join(map(str, schema.shape or ('features',)))}], got an array of shape {list(x.shape)}"
        )
    try:
        x = align_inputs(
            x, None if schema.shape is None else {"shape": list(schema.shape)}, source="the request"
        )
    except DataError as exc:
        raise PayloadError(str(exc)) from None
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not schema.allow_nan:
        bad = ~np.isfinite(x)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise PayloadError(
                f"row {int(where[0])} has a missing or infinite value at position {[int(i) for i in where[1:]]}; "
                "this server refuses NaN (start it with --allow-nan when the members handle missing values)"
            )
    return x


def _from_json(body: bytes, schema: InputSchema) -> np.ndarray:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}", status=400) from None
    if isinstance(value, dict):
        value = _unwrap(value, schema)
    if not isinstance(value, list) or not value:
        raise PayloadError(
            'expected a non-empty JSON list of rows, of records or of strings (or {"instances": [...]})'
        )
    if all(isinstance(v, str) for v in value):
        return _texts(value, schema)
    if all(isinstance(v, dict) for v in value):
        return check_rows(_records(value, schema), schema)
    return check_rows(_numbers(value), schema)


def _unwrap(value: dict[str, Any], schema: InputSchema) -> Any:
    for key in (*_ROW_KEYS, "texts"):
        if key in value:
            return value[key]
    if schema.feature_names and set(value) <= set(schema.feature_names):
        return [value]  # one record
    raise PayloadError(
        "a JSON object must hold the rows under 'instances' (or 'inputs', or 'texts' for text), or be one "
        f"record of the columns {_few(schema.feature_names)}; got the keys {_few(list(value))}"
    )


def _numbers(value: list[Any]) -> np.ndarray:
    try:
        x = np.asarray(value, dtype=np.float64)  # JSON null -> NaN
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise PayloadError(
            "rows must be lists of numbers of one length each (null for a missing value)"
        ) from None
    return x


def _records(records: list[dict[str, Any]], schema: InputSchema) -> np.ndarray:
    names = schema.feature_names
    if not names:
        raise PayloadError("this model records no column names: send rows (lists of numbers), not records")
    given = {k for r in records for k in r}
    unknown = sorted(given - set(names))
    if unknown:
        raise PayloadError(f"unknown column(s) {_few(unknown)}; the model's columns are {_few(names)}")
    for i, record in enumerate(records):
        missing = [n for n in names if n not in record]
        if missing:
            raise PayloadError(f"record {i} lacks the column(s) {_few(missing)}")
    return _numbers([[r[n] for n in names] for r in records])


def _texts(texts: list[str], schema: InputSchema) -> np.ndarray:
    if not schema.takes_text:
        raise PayloadError(
            f"this model takes numeric rows {_shape(schema)}, not text: send a JSON list of lists of numbers"
        )
    rows = np.empty(len(texts), dtype=object)
    rows[:] = texts
    return rows


def _from_npy(body: bytes) -> np.ndarray:
    """One ``.npy`` array; its header is checked against the body's length before anything is
    allocated (a header may claim any shape), and object arrays (pickles) and ``.npz`` are refused."""
    from numpy.lib import format as npy

    buffer = io.BytesIO(body)
    errors = (
        ValueError,
        OSError,
        EOFError,
        TypeError,
        SyntaxError,
        tokenize.TokenError,
    )  # numpy evals the header
    try:
        version = npy.read_magic(buffer)  # an .npz archive (a zip) fails here
    except errors as exc:
        raise _not_npy(str(exc)) from None
    if version not in ((1, 0), (2, 0)):
        raise _not_npy(f"format version {version}")
    try:
        shape, _, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(
            buffer
        )
    except errors as exc:
        raise _not_npy(str(exc)) from None
    if dtype.hasobject:
        raise _not_npy("it holds pickled objects")
    needed = math.prod(shape) * dtype.itemsize
    if needed > len(body):
        raise _not_npy(f"its header declares {needed} bytes of data, the body has {len(body)}")
    buffer.seek(0)
    try:
        return np.load(buffer, allow_pickle=False)
    except errors as exc:
        raise _not_npy(str(exc)) from None


def _not_npy(why: str) -> PayloadError:
    return PayloadError(f"the body is not a .npy array without pickled objects ({why})", status=400)


def _from_image(body: bytes, schema: InputSchema) -> np.ndarray:
    from modelfusion.data.images import decode_image

    shape = schema.shape
    if shape is None or len(shape) != 3 or shape[0] not in (1, 3):
        raise PayloadError(
            f"this model takes rows {_shape(schema)}, not images: send numbers as JSON or .npy", status=415
        )
    try:
        image = decode_image(
            body,
            image_size=shape[1:],
            channels=shape[0],
            name="the uploaded image",
            max_pixels=MAX_IMAGE_PIXELS,
        )
    except DataError as exc:
        raise PayloadError(str(exc)) from None
    return check_rows(image[None], schema)


def _from_text(body: bytes, schema: InputSchema) -> np.ndarray:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("a text/plain body must be UTF-8", status=400) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise PayloadError("the text/plain body holds no text (one text per line)")
    return _texts(lines, schema)


def _from_multipart(body: bytes, content_type: str, schema: InputSchema) -> np.ndarray:
    """Every part of a form parsed by its own content type (stdlib ``email``: no extra dependency)."""
    from email import policy
    from email.parser import BytesParser

    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    try:
        message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
        parts = list(message.iter_parts()) if message.is_multipart() else []
    except (ValueError, TypeError, LookupError, IndexError) as exc:
        raise PayloadError(f"the multipart body does not parse ({exc})", status=400) from None
    if not parts:
        raise PayloadError("the multipart body has no parts (is the boundary right?)", status=400)
    rows = []
    for i, part in enumerate(parts):
        name = part.get_filename() or part.get_param("name", header="content-disposition") or f"#{i}"
        kind = part.get_content_type()
        if kind.startswith("multipart/"):
            raise PayloadError(f"part {name!r}: nested multipart bodies are not supported", status=415)
        data = part.get_payload(decode=True)
        try:
            rows.append(parse_payload(data if isinstance(data, bytes) else b"", kind, schema))
        except PayloadError as exc:
            raise PayloadError(f"part {name!r}: {exc}", status=exc.status) from None
    if len({(r.shape[1:], r.dtype.kind) for r in rows}) > 1:
        shapes = ", ".join(f"{list(r.shape[1:])}" for r in rows)
        raise PayloadError(f"the parts hold rows of different shapes ({shapes}); send one shape per request")
    return rows[0] if len(rows) == 1 else np.concatenate(rows)


def _shape(schema: InputSchema) -> str:
    return "[n, " + ", ".join(map(str, schema.shape)) + "]" if schema.shape else "of numbers"


def _few(names: Any, limit: int = 6) -> str:
    names = list(names or [])
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "(none)"


def finite_or_none(values: list[Any]) -> list[Any]:
    """``values`` (nested lists) with NaN/inf as None: JSON has no NaN.

    Examples
    --------
    >>> finite_or_none([[0.5, float("nan")]])
    [[0.5, None]]
    """
    return [
        finite_or_none(v)
        if isinstance(v, list)
        else (None if isinstance(v, float) and not math.isfinite(v) else v)
        for v in values
    ]


__all__ = ["CONTENT_TYPES", "InputSchema", "PayloadError", "check_rows", "finite_or_none", "parse_payload"]
