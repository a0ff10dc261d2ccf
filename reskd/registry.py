"""A name -> definition table, the pattern of :func:`reskd.models.register_model`, for every extensible concept:
residual losses (:data:`reskd.reskd.RESIDUAL_LOSSES`), exit criteria (:data:`reskd.adaptive.CRITERIA`) and
learning-rate schedules (:data:`reskd.train.SCHEDULES`).

Adding one is one decorated definition beside the others::

    @RESIDUAL_LOSSES.register("l1", "mean absolute error between s and r")
    def l1(s, previous, teacher, y, *, temperature, ce_weight, kd_weight):
        return {"l1": F.l1_loss(s, teacher - previous)}
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named definitions of one kind (``kind`` names it in errors), kept in registration order, each with a
    one-line description. Iterating gives the names; ``registry[name]`` the definition."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator adding ``definition`` under ``name`` (a name may be registered once)."""

        def decorator(definition: T) -> T:
            if name in self._items:
                raise ValueError(f"a {self.kind} named {name!r} is already registered; choose another name.")
            self._items[name] = definition
            self._descriptions[name] = description
            return definition

        return decorator

    def check(self, name: str, *, extra: tuple[str, ...] = ()) -> str:
        """``name`` if it is registered (or one of ``extra``), else a ValueError listing the known names."""
        if name in self._items or name in extra:
            return name
        known = ", ".join([*(repr(e) for e in extra), *self._items]) if extra else ", ".join(self._items)
        raise ValueError(f"unknown {self.kind} {name!r}; choose one of {known}.")

    def __getitem__(self, name: str) -> T:
        return self._items[self.check(name)]

    def description(self, name: str) -> str:
        return self._descriptions[self.check(name)]

    def descriptions(self) -> dict[str, str]:
        """``{name: description}`` in registration order."""
        return dict(self._descriptions)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
