"""The loss registry: unlearning objectives are registered by name and looked up by the trainer."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .base import UnlearningLoss

_LOSSES: dict[str, type[UnlearningLoss]] = {}
LossT = TypeVar("LossT", bound="type[UnlearningLoss]")


def register_loss(name: str, *, override: bool = False) -> Callable[[LossT], LossT]:
    """Class decorator that registers an [`UnlearningLoss`] subclass under `name`.

    ```python
    from hf_unlearn import register_loss
    from hf_unlearn.losses import ForgetLoss

    @register_loss("my_ga")
    class MyGA(ForgetLoss):
        def __call__(self, ctx):
            return -ctx.mean_nll("forget").mean()
    ```

    Registering a name twice raises, unless `override=True` (useful when reloading a module in a notebook).
    """
    from .base import UnlearningLoss

    if not name or not isinstance(name, str) or name != name.strip():
        raise ValueError(f"A loss name must be a non-empty string without surrounding spaces, got {name!r}.")

    def decorator(cls: LossT) -> LossT:
        if not (isinstance(cls, type) and issubclass(cls, UnlearningLoss)):
            raise TypeError(f"@register_loss({name!r}) decorates a subclass of ForgetLoss or RetainLoss, got {cls!r}.")
        if cls.kind not in ("forget", "retain"):
            raise TypeError(f"{cls.__name__} must subclass ForgetLoss or RetainLoss (its kind is {cls.kind!r}).")
        if name in _LOSSES and not override and _LOSSES[name] is not cls:
            raise ValueError(
                f"A loss named {name!r} is already registered ({_LOSSES[name].__qualname__}); "
                "choose another name or pass override=True."
            )
        cls.name = name
        _LOSSES[name] = cls
        return cls

    return decorator


def get_loss(name: str, kind: str | None = None) -> type[UnlearningLoss]:
    """Return the loss class registered as `name`; `kind` ("forget" or "retain") checks its role.

    An unknown name raises a `KeyError`-like `ValueError` listing the registered names and the closest match.
    """
    if name not in _LOSSES:
        candidates = list_losses(kind) or list_losses()
        close = difflib.get_close_matches(str(name), candidates, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown loss {name!r}.{hint} Registered losses: {', '.join(candidates)}.")
    cls = _LOSSES[name]
    if kind is not None and cls.kind != kind:
        raise ValueError(
            f"{name!r} is a {cls.kind} loss and cannot be used as the {kind} loss. "
            f"{kind.capitalize()} losses: {', '.join(list_losses(kind))}."
        )
    return cls


def list_losses(kind: str | None = None) -> list[str]:
    """Sorted names of the registered losses, optionally only the "forget" or the "retain" ones."""
    if kind not in (None, "forget", "retain"):
        raise ValueError(f"kind must be None, 'forget' or 'retain', got {kind!r}.")
    return sorted(name for name, cls in _LOSSES.items() if kind is None or cls.kind == kind)
