"""The parts of the server's OpenAPI schema FastAPI cannot infer: the ``/predict`` body in every
content type it accepts, the response models and the documented error answers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PredictResponse(BaseModel):
    """``POST /predict``: one prediction per row, and the class probabilities with ``?proba=true``."""

    predictions: list[Any] = Field(description="A class label (or value, for regression) per row")
    probabilities: list[list[float]] | None = Field(
        default=None, description="Class probabilities [rows, classes], in the order of /metadata's classes"
    )


class HealthResponse(BaseModel):
    """``GET /health``: 200 when warmed up and ready, 503 while warming up."""

    status: str
    live: bool
    ready: bool
    engine: str | None = None
    queued_rows: int | None = None


class MetadataResponse(BaseModel):
    """``GET /metadata``: what the bundle is and what it takes."""

    bundle: str
    sha256: str
    task: str
    classes: list[Any] | None
    strategy: str
    members: list[dict[str, Any]]
    input: dict[str, Any]
    engine: str
    versions: dict[str, str]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="What was wrong and what was expected")
    status: int


def response_models() -> dict[str, type[BaseModel]]:
    """The response model of each endpoint, by name."""
    return {"predict": PredictResponse, "health": HealthResponse, "metadata": MetadataResponse}


_NUMBER = {"type": ["number", "null"]}
_ROWS = {
    "oneOf": [
        {"type": "array", "minItems": 1, "items": {"type": "array", "items": _NUMBER}, "description": "rows"},
        {"type": "array", "minItems": 1, "items": _NUMBER, "description": "one row"},
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "additionalProperties": _NUMBER},
            "description": "records with named columns",
        },
        {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "texts"},
        {
            "type": "object",
            "properties": {
                "instances": {"type": "array"},
                "inputs": {"type": "array"},
                "texts": {"type": "array"},
            },
            "description": "rows, records or texts under a key",
        },
    ]
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

#: The query parameters of ``POST /predict``.
PREDICT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "proba",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "Add the class probabilities to the answer",
    }
]

#: The request body of ``POST /predict``, in every content type it accepts.
PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": _ROWS, "example": [[0.0] * 4]},
        "application/x-npy": _BINARY,
        "application/octet-stream": _BINARY,
        "image/png": _BINARY,
        "image/jpeg": _BINARY,
        "text/plain": {"schema": {"type": "string", "description": "one text per line"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "description": "files (images, .npy, JSON) and text fields, each read by its own content type",
            }
        },
    },
}

_ERROR = {"model": ErrorResponse}
#: The documented error answers of ``POST /predict``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "Malformed body (invalid JSON, not a .npy array)"},
    413: {**_ERROR, "description": "Body over the size limit"},
    415: {**_ERROR, "description": "Content type the model cannot take"},
    422: {**_ERROR, "description": "Rows of the wrong width or dtype, missing values, unknown columns"},
    503: {
        **_ERROR,
        "description": "Queue full or shutting down: retry after the Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

__all__ = [
    "ERROR_RESPONSES",
    "PREDICT_BODY",
    "ErrorResponse",
    "HealthResponse",
    "MetadataResponse",
    "PredictResponse",
    "response_models",
]
