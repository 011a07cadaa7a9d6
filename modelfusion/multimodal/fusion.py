"""MultimodalFusion: the base class of feature-level fusion models (encoders -> fused features -> head)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import torch
from torch import nn

from modelfusion.errors import FeatureWidthError, NumClassesError, ParameterError
from modelfusion.multimodal.projection import check_widths


class MultimodalFusion(nn.Module):
    """Base class of models that fuse the features of several encoders (image, text, ...).

    Subclass it, assign the encoders in ``__init__`` and write ``forward``; ``self.classifier``
    is a linear head whose input width is inferred on the first call (``nn.LazyLinear``), so
    concatenating features of any widths just works. Calling ``super().__init__()`` is
    optional: ``nn.Module`` is initialised before your ``__init__`` runs.

    The number of classes comes from the class attribute ``num_classes``, the constructor
    argument ``num_classes=`` (even when your ``__init__`` does not take it) or
    ``self.num_classes = N`` in your ``__init__``. Without any of them, using
    ``self.classifier`` raises :class:`NumClassesError` saying how to set it. Assigning your
    own ``self.classifier`` replaces the built-in head.

    Class attributes
    ----------------
    num_classes : int or None — width of the classifier's output.
    expected_widths : ``{encoder attribute: feature width}`` or None. When set, each named
        encoder's output is checked on every call and a mismatch raises
        :class:`~modelfusion.multimodal.FeatureWidthError` naming the encoder.

    Built directly, ``MultimodalFusion(encoders={"image": ImageEncoder(...), "text":
    TextEncoder(...)}, fusion="gated", dim=256, num_classes=10)`` is the whole model: each
    encoder's features (widths probed), a fusion operator by name
    (:func:`~modelfusion.multimodal.build_fusion`), the head; ``model({"image": x, "text": t})``.

    Examples
    --------
    >>> class MultimodalModel(MultimodalFusion):
    ...     num_classes = 3
    ...     def __init__(self):
    ...         self.image_model = image_encoder      # [batch, 1024]
    ...         self.text_model = text_encoder        # [batch, 512]
    ...     def forward(self, image, text):
    ...         fused_feat = torch.cat([self.image_model(image), self.text_model(text)], dim=1)
    ...         return self.classifier(fused_feat)
    >>> MultimodalModel()(images, token_ids).shape
    torch.Size([8, 3])
    """

    num_classes: int | None = None
    expected_widths: ClassVar[Mapping[str, int] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _module_initialised_first(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        encoders: Mapping[str, nn.Module] | None = None,
        fusion: str = "concat",
        dim: int = 256,
        fusion_options: Mapping[str, Any] | None = None,
        head: Mapping[str, Any] | None = None,
        missing_embeddings: bool = False,
    ):
        if "_modules" not in self.__dict__:  # a second call (super().__init__() in a subclass) keeps modules
            super().__init__()
            self._width_checks: dict[str, Any] = {}
            if self.expected_widths:
                self.register_forward_pre_hook(_check_expected_encoders_exist)
        if encoders is not None:
            self._build(
                encoders, fusion, dim, dict(fusion_options or {}), _head_spec(head), missing_embeddings
            )
        if num_classes is not None:
            self.num_classes = num_classes
        elif self.num_classes is not None and "classifier" not in self._modules:
            self.num_classes = self.num_classes  # the class attribute: builds the head

    def _build(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: str,
        dim: int,
        options: dict[str, Any],
        head: dict[str, Any],
        missing_embeddings: bool = False,
    ) -> None:
        """``encoders`` -> ``build_fusion(fusion)`` -> the head: the model :meth:`forward` runs.
        With ``missing_embeddings``, each modality also learns the features that stand in for it
        in rows where it is missing (``inputs["present"]``)."""
        from modelfusion.multimodal.operators import build_fusion

        unknown = [n for n, e in encoders.items() if not isinstance(getattr(e, "width", None), int)]
        if unknown:
            raise FeatureWidthError(
                f"encoders {unknown} have no probed width: wrap them, e.g. ModuleEncoder(module, example=...)"
            )
        self.encoders = nn.ModuleDict(dict(encoders))
        widths = {name: int(getattr(e, "width")) for name, e in encoders.items()}  # noqa: B009
        self.fusion = build_fusion(fusion, widths, **({} if fusion == "concat" else {"dim": dim}), **options)
        if missing_embeddings:
            self.missing = nn.ParameterDict(
                {name: nn.Parameter(torch.zeros(w)) for name, w in widths.items()}
            )
        self.fusion_spec = {
            "fusion": fusion,
            "dim": dim,
            "fusion_options": options,
            "head": head,
            "missing_embeddings": bool(missing_embeddings),
        }

    def spec(self) -> dict[str, Any]:
        """The model as plain values: each encoder's spec, the fusion, the number of classes.

        :meth:`from_spec` rebuilds it (untrained); :meth:`save` writes it with the weights.
        """
        if "encoders" not in self._modules:
            raise ParameterError(
                f"{type(self).__name__} was not built with MultimodalFusion(encoders=...), so it has no spec; "
                "save its state_dict with safetensors and rebuild it in your code"
            )
        if not getattr(self._modules.get("classifier"), "_modelfusion_auto_head", False):
            raise ParameterError(
                f"{type(self).__name__}.classifier was replaced by your own module, which a spec cannot "
                "describe; use MultimodalFusion(..., head={'hidden': [128], 'dropout': 0.1}) instead"
            )
        encoders = {name: cast(Any, encoder).spec() for name, encoder in self.encoders.items()}
        return {"encoders": encoders, **self.fusion_spec, "num_classes": self.num_classes}

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], *, files: Any = None, trust: bool = False
    ) -> MultimodalFusion:
        """The (untrained) model a :meth:`spec` describes; ``files`` as for
        :func:`~modelfusion.multimodal.specs.build_encoder` (one folder per encoder).

        Examples
        --------
        >>> twin = MultimodalFusion.from_spec(model.spec())
        """
        from pathlib import Path

        from modelfusion.multimodal.specs import build_encoder

        encoders = {
            name: build_encoder(
                options,
                files=Path(files) / name if files is not None else None,
                trust=trust,
                owner=f"model.encoders.{name}",
            )
            for name, options in dict(spec.get("encoders") or {}).items()
        }
        if not encoders:
            raise ParameterError("model.encoders: name at least one encoder")
        return cls(
            spec.get("num_classes"),
            encoders=encoders,
            fusion=spec.get("fusion", "concat"),
            dim=spec.get("dim", 256),
            fusion_options=spec.get("fusion_options"),
            head=spec.get("head"),
            missing_embeddings=bool(spec.get("missing_embeddings", False)),
        )

    def save(self, path: Any, **options: Any) -> Any:
        """Write the model as a bundle folder (spec, safetensors weights, tokenizer files);
        see :func:`~modelfusion.multimodal.saving.save_multimodal` for ``options``."""
        from modelfusion.multimodal.saving import save_multimodal

        return save_multimodal(self, path, **options)

    @classmethod
    def load(cls, path: Any, *, trust: bool = False) -> MultimodalFusion:
        """A model written by :meth:`save`, in eval mode: checksums verified, nothing unpickled or
        downloaded; ``trust`` allows architectures outside the allow-list. Raises BundleError for a
        tampered, incomplete or foreign folder."""
        from pathlib import Path

        from modelfusion.multimodal.saving import load_saved_weights, read_manifest

        manifest = read_manifest(path)
        model = cls.from_spec(manifest["model"], files=Path(path) / "encoders", trust=trust)
        load_saved_weights(model, path)
        model.classes_ = list(manifest.get("classes") or [])
        return model.eval()

    def forward(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """``{modality: batch}`` -> logits, for a model built with ``encoders=`` (subclasses write their own).

        ``inputs["present"]`` (``{modality: bool [batch]}``, as a MultimodalDataset with
        ``missing="embed"`` gives) marks the rows where a modality is missing: a model built with
        ``missing_embeddings=True`` uses its learned stand-in features there."""
        if "encoders" not in self._modules:
            raise NotImplementedError(
                f"{type(self).__name__} has no forward: write one in the subclass, or build it with "
                "MultimodalFusion(encoders={...}, fusion=..., num_classes=...)"
            )
        missing = [n for n in self.encoders if n not in inputs]
        if missing:
            raise FeatureWidthError(
                f"the model fuses {list(self.encoders)}; the batch has no {missing} (it has {list(inputs)})"
            )
        features = {name: encoder(inputs[name]) for name, encoder in self.encoders.items()}
        return self.fuse_features(features, inputs.get("present"))

    def fuse_features(
        self, features: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Encoded features -> logits: missing rows replaced (see :meth:`forward`), fused, classified."""
        if present:
            if "missing" not in self._modules:
                raise FeatureWidthError(
                    f"the batch marks missing modalities ({sorted(present)}) but the model has no stand-in "
                    "for them: build it with MultimodalFusion(..., missing_embeddings=True)"
                )
            stand_ins: Any = self.missing
            features = dict(features)
            for name, rows in present.items():
                feat = features[name]
                keep = torch.as_tensor(rows, device=feat.device).to(torch.bool)
                keep = keep.reshape(-1, *([1] * (feat.dim() - 1)))
                features[name] = torch.where(keep, feat, stand_ins[name].to(feat.dtype))
        return self.classifier(self.fusion(features))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "num_classes":
            value = _check_num_classes(value)
            super().__setattr__(name, value)
            head = self._modules.get("classifier")
            if value is not None and (head is None or getattr(head, "_modelfusion_auto_head", False)):
                fusion = self._modules.get("fusion")
                width = getattr(fusion, "out_features", None)
                self.classifier = _head(
                    value,
                    width if isinstance(width, int) else None,
                    getattr(self, "fusion_spec", {}).get("head"),
                )
            return
        super().__setattr__(name, value)
        if self.expected_widths and name in self.expected_widths and isinstance(value, nn.Module):
            old = self._width_checks.pop(name, None)
            if old is not None:
                old.remove()
            hook = functools.partial(_check_encoder_width, name=name, width=int(self.expected_widths[name]))
            self._width_checks[name] = value.register_forward_hook(hook)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name != "classifier":
                raise
        if self.num_classes is not None:  # set on the class after this instance was built
            self.num_classes = self.num_classes
            return self._modules["classifier"]
        cls = type(self).__name__
        raise NumClassesError(
            f"{cls}.classifier needs the number of classes, which {cls} was not given: set the class "
            f"attribute `num_classes = N` in {cls}, pass {cls}(num_classes=N), or assign "
            "self.num_classes = N (or your own self.classifier) in __init__"
        )


def load_multimodal(path: Any, *, trust: bool = False) -> MultimodalFusion:
    """:meth:`MultimodalFusion.load`: a model written by :func:`~modelfusion.multimodal.saving.save_multimodal`."""
    return MultimodalFusion.load(path, trust=trust)


def _module_initialised_first(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a subclass ``__init__`` so that ``nn.Module.__init__`` has run before it."""
    params = inspect.signature(init).parameters.values()
    passes_num_classes = any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)

    @functools.wraps(init)
    def __init__(self: MultimodalFusion, *args: Any, **kwargs: Any) -> None:
        num_classes = kwargs.get("num_classes") if passes_num_classes else kwargs.pop("num_classes", None)
        MultimodalFusion.__init__(self, num_classes=num_classes)
        init(self, *args, **kwargs)

    return __init__


def _check_num_classes(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"num_classes must be a positive int, got {value!r}")
    return value


def _head_spec(head: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"hidden": [widths of hidden layers], "dropout": p}``, checked."""
    spec = dict(head or {})
    unknown = set(spec) - {"hidden", "dropout"}
    if unknown:
        raise ParameterError(
            f"head: unknown keys {sorted(unknown)}; it takes hidden (a list of widths) and dropout"
        )
    hidden = spec.get("hidden") or []
    if isinstance(hidden, int):
        hidden = [hidden]
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ParameterError(f"head.hidden: expected a list of positive widths, got {spec.get('hidden')!r}")
    dropout = spec.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ParameterError(f"head.dropout: expected a probability in [0, 1), got {dropout!r}")
    return {"hidden": list(hidden), "dropout": float(dropout)}


def _head(num_classes: int, width: int | None, spec: Mapping[str, Any] | None = None) -> nn.Module:
    """The classifier: ``Linear(width, num_classes)`` after the hidden layers of ``spec``, or a lazy
    linear when the fused width is known only on the first call (subclasses)."""
    head: nn.Module
    hidden = list((spec or {}).get("hidden") or [])
    if width is None:
        head = nn.LazyLinear(num_classes)
    elif hidden:
        layers: list[nn.Module] = []
        for w_in, w_out in zip([width, *hidden], hidden):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(), nn.Dropout(float((spec or {}).get("dropout", 0.0)))]
        head = nn.Sequential(*layers, nn.Linear(hidden[-1], num_classes))
    else:
        head = nn.Linear(width, num_classes)
    head.__dict__["_modelfusion_auto_head"] = True  # a plain flag, not a parameter or submodule
    if isinstance(head, nn.LazyLinear):
        head.register_forward_pre_hook(_check_head_width)
    return head


def _check_head_width(head: nn.Module, args: tuple[Any, ...]) -> None:
    # Runs after LazyLinear's own hook, so in_features is the width seen on the first call.
    width = args[0].shape[-1]
    if width != head.in_features:
        raise FeatureWidthError(
            f"classifier was built for fused features of width {head.in_features} on the first call, "
            f"got width {width}; keep every encoder's output width fixed (see Projection)"
        )


def _check_encoder_width(
    encoder: nn.Module, args: Any, output: torch.Tensor, *, name: str, width: int
) -> None:
    check_widths({name: output}, {name: width})


def _check_expected_encoders_exist(model: MultimodalFusion, args: Any) -> None:
    missing = [n for n in model.expected_widths or {} if n not in model._modules]
    if missing:
        raise FeatureWidthError(
            f"{type(model).__name__}.expected_widths names {missing}, which are not submodules of the "
            f"model (submodules: {list(model._modules)})"
        )
