"""Member preprocessing specs as graph operations: ONNX nodes for export, a torch module for eager runs.

A member's ``preprocess_spec`` (``{"reshape": [1, 8, 8]}``, ``"flatten"``,
``{"image": {"mean": [...], "std": [...]}}`` or a list of these; see
:func:`modelfusion.data.build_preprocessor`) says what happens to a batch before the member
sees it. Here the same steps become graph operations, so one fused graph takes the shared
input and each member gets its own view of it. Text tokenisation and image resizing have no
exact graph form; they raise :class:`ExportError` naming the member and the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from modelfusion.runtime.errors import ExportError
from modelfusion.runtime.graph import GraphBuilder

_IMAGE_KEYS = ("size", "mean", "std", "channels_first", "input_layout")


def member_preprocess_spec(member: Any) -> Any:
    """The member's preprocessing spec, or ExportError when it only has an opaque callable."""
    spec = getattr(member, "preprocess_spec", None)
    if getattr(member, "preprocess", None) is not None and spec is None:
        raise ExportError(
            f"member {member.name!r} has a preprocess callable with no spec, so it cannot be written as graph "
            "operations; give it as a spec (e.g. {'reshape': [1, 8, 8]}) via build_preprocessor and set "
            "member.preprocess_spec, or bake the preprocessing into the model"
        )
    return spec


def preprocess_steps(spec: Any, member: str = "?") -> list[tuple[str, Any]]:
    """A spec as an ordered list of ``(step, options)`` pairs."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [(spec, True)]
    if isinstance(spec, Mapping):
        return list(spec.items())
    if isinstance(spec, (list, tuple)):
        return [step for item in spec for step in preprocess_steps(item, member)]
    raise ExportError(f"member {member!r}: preprocess spec {spec!r} is not a string, a mapping or a list")


# -- ONNX -------------------------------------------------------------------------------------


def preprocess_to_onnx(
    spec: Any, b: GraphBuilder, x: str, shape: tuple[int, ...], *, member: str, dtype: np.dtype
) -> tuple[str, tuple[int, ...]]:
    """Append the spec's steps to ``b``; return the output name and the per-sample shape after them.

    ``shape`` is the per-sample shape of ``x`` (no batch axis); ``dtype`` the shared input's dtype.
    """
    for step, value in preprocess_steps(spec, member):
        if step == "flatten":
            x, shape = b.op("Flatten", x, axis=1), (int(np.prod(shape)),)
        elif step == "reshape":
            target = tuple(int(v) for v in value)
            if int(np.prod(target)) != int(np.prod(shape)):
                raise ExportError(
                    f"member {member!r}: preprocess reshape {list(target)} holds {int(np.prod(target))} values "
                    f"but each input sample {list(shape)} has {int(np.prod(shape))}"
                )
            x, shape = b.op("Reshape", x, b.const("shape", np.array([-1, *target], np.int64))), target
        elif step == "image":
            x, shape = _image_to_onnx(dict(value or {}), b, x, shape, member=member, dtype=dtype)
        elif step == "text":
            raise ExportError(
                f"member {member!r}: preprocess step 'text' (tokenisation) has no ONNX form; run this member "
                "through the member executor (engine='members') or export it with its tokenizer separately"
            )
        else:
            raise ExportError(f"member {member!r}: preprocess step {step!r} has no ONNX form")
    return x, shape


def _image_to_onnx(
    opts: dict[str, Any], b: GraphBuilder, x: str, shape: tuple[int, ...], *, member: str, dtype: np.dtype
) -> tuple[str, tuple[int, ...]]:
    unknown = [k for k in opts if k not in _IMAGE_KEYS]
    if unknown:
        raise ExportError(f"member {member!r}: unknown preprocess.image option(s) {unknown}")
    if np.dtype(dtype) == np.uint8:
        raise ExportError(
            f"member {member!r}: the image step scales uint8 pixels by 1/255, and the fused graph takes float "
            "input; pass float images (e.g. example_input=images.astype('float32') / 255) and drop the uint8 path"
        )
    if len(shape) == 2:
        x, shape = b.op("Unsqueeze", x, b.const("axes", np.array([1], np.int64))), (1, *shape)
    if len(shape) != 3:
        raise ExportError(
            f"member {member!r}: an image sample must be [C, H, W] or [H, W, C], got {list(shape)}"
        )
    layout = _layout(opts.get("input_layout", "auto"), shape, member)
    if layout == "NHWC":
        x, shape = b.op("Transpose", x, perm=[0, 3, 1, 2]), (shape[2], shape[0], shape[1])
    size = opts.get("size")
    if size is not None:
        size = [int(size)] * 2 if np.ndim(size) == 0 else [int(s) for s in size]
        if size != list(shape[1:]):
            raise ExportError(
                f"member {member!r}: preprocess image size {size} resizes {list(shape[1:])} images with "
                "torchvision's antialiased resize, which has no exact ONNX form; resize the images before "
                "they reach the fused model and drop size="
            )
    mean, std = opts.get("mean"), opts.get("std")
    if mean is not None or std is not None:
        mean = np.atleast_1d(np.asarray([0.0] if mean is None else mean, np.float32))
        std = np.atleast_1d(np.asarray([1.0] if std is None else std, np.float32))
        if len(mean) not in (1, shape[0]) or len(std) != len(mean):
            raise ExportError(
                f"member {member!r}: image mean/std have {len(mean)}/{len(std)} values for {shape[0]}-channel images"
            )
        x = b.op("Sub", x, b.const("mean", mean.reshape(1, -1, 1, 1)))
        x = b.op("Div", x, b.const("std", std.reshape(1, -1, 1, 1)))
    if opts.get("channels_first", True) is False:
        x, shape = b.op("Transpose", x, perm=[0, 2, 3, 1]), (shape[1], shape[2], shape[0])
    return x, shape


def _layout(layout: str, shape: tuple[int, ...], member: str) -> str:
    """Same rule as ImagePreprocessor: channels-first when the first axis could be channels."""
    if layout in ("NCHW", "NHWC"):
        return layout
    if shape[0] in (1, 3, 4):
        return "NCHW"
    if shape[2] in (1, 3, 4):
        return "NHWC"
    raise ExportError(
        f"member {member!r}: cannot find the channel axis of image samples shaped {list(shape)}; "
        "set preprocess.image.input_layout to 'NCHW' or 'NHWC'"
    )


# -- torch ------------------------------------------------------------------------------------


class PreprocessModule(nn.Module):
    """Torch form of a preprocessing spec (flatten, reshape, image), for :class:`FusedModule`.

    Examples
    --------
    >>> PreprocessModule({"reshape": [1, 8, 8]})(torch.zeros(5, 64)).shape
    torch.Size([5, 1, 8, 8])
    """

    def __init__(self, spec: Any, member: str = "?"):
        super().__init__()
        self.steps = preprocess_steps(spec, member)
        for step, value in self.steps:
            if step not in ("flatten", "reshape", "image"):
                raise ExportError(f"member {member!r}: preprocess step {step!r} has no torch form")
            if step == "image" and any(k not in _IMAGE_KEYS for k in (value or {})):
                raise ExportError(f"member {member!r}: unknown preprocess.image option(s) in {value!r}")
        self.member = member

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step, value in self.steps:
            if step == "flatten":
                x = x.flatten(1)
            elif step == "reshape":
                x = x.reshape(x.shape[0], *value)
            else:
                x = self._image(x, dict(value or {}))
        return x

    def _image(self, x: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        layout = _layout(opts.get("input_layout", "auto"), tuple(x.shape[1:]), self.member)
        if layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        size = opts.get("size")
        if size is not None:
            from torchvision.transforms.v2 import functional as F

            size = [int(size)] * 2 if np.ndim(size) == 0 else [int(s) for s in size]
            x = F.resize(x, size, antialias=True)
        mean, std = opts.get("mean"), opts.get("std")
        if mean is not None or std is not None:
            mean_t = torch.as_tensor([0.0] if mean is None else mean, dtype=x.dtype, device=x.device)
            std_t = torch.as_tensor([1.0] if std is None else std, dtype=x.dtype, device=x.device)
            x = (x - mean_t.view(1, -1, 1, 1)) / std_t.view(1, -1, 1, 1)
        if opts.get("channels_first", True) is False:
            x = x.permute(0, 2, 3, 1)
        return x
