"""What a safety filter is, and the registry the chain is built from.

Every filter has two hooks, both optional:

- ``supervise(ctx)`` (first pass, all filters in order): inspect the inputs, latch a
  fault, request a mode (`StepContext.request`; the most severe request wins).
- ``apply(ctx)`` (second pass, all filters in order, after the mode has picked where the
  target comes from): move the command toward the filter's limit.

So a fault seen at step k already shapes step k's output, and every shaping filter sees
the target the mode asked for (policy, ramp, hold pose or measured pose). A filter
reports an intervention with ``ctx.intervene(name, magnitude)``; the chain accumulates
``count``, ``last_time`` and ``max_magnitude`` per filter.

Position targets are shaped by intervals (`StepContext.constrain`): rate, position,
velocity and torque each add one, and the target is clipped into the feasible interval.
Where two cannot both hold (e.g. the robot was pushed far from its previous target), the
higher priority wins: position limits > target rate (these two depend on the command alone
and always hold together) > velocity bound > torque bound. Where the gains travel with the
command, the torque bound is then met by scaling them (`TorqueLimit.bound_gains`); with the
robot's fixed gains the target is the point of the higher-priority interval nearest to it.

The chain runs on the robot every control period, on vectors of a few to a few dozen
values, where numpy's per-call overhead dominates: the filters take the usual case (finite
inputs, nothing to clip) with as few numpy calls as possible and fall back to the general
code only when it is needed. `all_finite` / `same_values` answer on the Python floats of a
vector; 3-vectors and quaternions are Python floats; per-period limits are computed once
per dt; `np.minimum(np.maximum(...))` stands for `np.clip`, which costs three times as much.

The chain's filters are the classes decorated with `register`: each declares its place in
the order (`order`), the ``safety:`` limits it enforces (`enforces`, dotted keys of
`roboreal.robots.safety_spec.SafetySpec`) and how it is built for one chain (`build`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from roboreal.sim2real.safety.types import StepContext

if TYPE_CHECKING:
    from roboreal.sim2real.safety.chain import SafetyChain


class SafetyFilter:
    """Base class: a named step of the chain. Override `supervise` and/or `apply`; a
    registered filter also sets `order` and `enforces` and overrides `build`."""

    name = "filter"
    order: int | None = None  # place in the chain (ascending); None: not a registered filter
    enforces: tuple[str, ...] = ()  # the safety limits (dotted SafetySpec keys) this filter owns

    @classmethod
    def build(cls, chain: SafetyChain) -> SafetyFilter | None:
        """This filter configured for `chain` (its spec, limits and derived arrays), or None
        where it has nothing to do on that robot."""
        raise NotImplementedError(f"{cls.__name__}.build")

    def supervise(self, ctx: StepContext) -> None:
        pass

    def apply(self, ctx: StepContext) -> None:
        pass

    def reset(self) -> None:
        """Clear latched state (called by `SafetyChain.reset`; the e-stop ignores it)."""

    @property
    def latched(self) -> str | None:
        """Why this filter holds the robot in a safe mode until reset, or None."""
        return None


class LatchingFilter(SafetyFilter):
    """A filter that latches a fault: `_reason` says why until `reset` clears it."""

    _reason: str | None = None

    @property
    def latched(self) -> str | None:
        return self._reason

    def reset(self) -> None:
        self._reason = None

    def latch(self, reason: str) -> None:
        """Latch with `reason`, unless already latched (the first reason is the one kept)."""
        if self._reason is None:
            self._reason = reason


# filter name -> class; every `SafetyChain` builds one of each, in `order`
FILTERS: dict[str, type[SafetyFilter]] = {}


def register(cls: type[SafetyFilter]) -> type[SafetyFilter]:
    """Class decorator: every chain built from now on runs `cls` at its `order`."""
    if cls.order is None:
        raise ValueError(f"{cls.__name__} sets no order (its place in the chain)")
    for other in FILTERS.values():
        if other is not cls and other.name == cls.name:
            raise ValueError(f"{cls.__name__}: a filter named {cls.name!r} is registered already ({other.__name__})")
        if other is not cls and other.order == cls.order:
            raise ValueError(f"{cls.__name__}: order {cls.order} is taken by {other.__name__}")
    FILTERS[cls.name] = cls
    return cls


def registered_filters() -> list[type[SafetyFilter]]:
    """The registered filter classes in chain order."""
    return sorted(FILTERS.values(), key=lambda c: c.order)


def summarize(reasons: Sequence[str], most: int = 3) -> str:
    """The first `most` reasons, and how many more there were."""
    more = f" (and {len(reasons) - most} more)" if len(reasons) > most else ""
    return "; ".join(reasons[:most]) + more
