"""A noise-aware test for a sustained decline: a log-linear trend fitted to daily counts.

Pure arithmetic, no I/O: ``alerts/evaluate.py`` (the ``drop`` rule with
``statistic: trend``) picks the days and calls :func:`fit_trend`, then :func:`declined`.

The model: the metric on day ``x`` is ``exp(a + b x)`` on average, with Poisson-like
noise whose size is measured, not assumed (quasi-Poisson: the variance is the mean
times a dispersion read from the residuals, never taken below 1). It is fitted by
iteratively reweighted least squares, a few passes of O(days) each. A decline is
reported when the fitted change across the window is at least a material drop **and**
the slope is significant at ``min_z`` standard errors, so a small account's natural
scatter, or two days off, is not taken for a trend.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from stream import metrics

__all__ = ["TrendFit", "declined", "fit_trend", "trend_points"]

_PASSES = 12  # IRLS from a flat start: the slopes met here converge in 3-5 passes


@dataclass(frozen=True, slots=True)
class TrendFit:
    """A fitted log-linear trend over some days."""

    change: float
    """Fitted value on the last day against the first, minus 1 (-0.6: down 60%)."""
    z: float
    """The slope over its standard error (negative: falling)."""
    start: float
    """The fitted value on the first day."""
    end: float
    """The fitted value on the last day."""
    level: float
    """The mean of the fitted values (the metric's usual size over the window)."""
    days: int
    """How many days were fitted."""


def trend_points(
    values: Mapping[date, float], weekdays: Collection[int], end: date, days: int
) -> list[tuple[float, float]]:
    """``(x, value)`` of the ``days`` ending on ``end`` (x: days before ``end``, negated)
    that have a value, fall on one of ``weekdays`` and saw any activity at all: a day
    without any is a break (the silence rules' business), not a lower level of use."""
    get = values.get
    return [
        (float(-back), value)
        for back, day, weekday in zip(
            range(days - 1, -1, -1),
            metrics.window(end, days),
            metrics.window_weekdays(end, days),
            strict=True,
        )
        if weekday in weekdays and (value := get(day)) is not None and value > 0
    ]


def fit_trend(points: Sequence[tuple[float, float]]) -> TrendFit | None:
    """:func:`_fit` of ``points``, remembered: the windows a rule fits on one day (today's
    and the days before, ``for_days``) come back the next day with the same points."""
    return _fit(tuple(points))


@lru_cache(maxsize=8192)
def _fit(points: tuple[tuple[float, float], ...]) -> TrendFit | None:
    """Fit ``(x, y)`` points (day offset, a value >= 0); ``None`` when there is nothing
    to fit: fewer than three points, one day only, or all values zero."""
    n = len(points)
    if n < 3:  # a line and a dispersion need three
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    span = max(x for x, _ in points) - min(x for x, _ in points)
    if mean_y <= 0 or span <= 0:
        return None
    centred = [(x - mean_x, y) for x, y in points]
    exp = math.exp
    a, b = math.log(mean_y), 0.0
    for _ in range(_PASSES):
        sw = swx = swxx = swz = swxz = 0.0
        for x, y in centred:
            eta = a + b * x
            mu = exp(eta)
            z = eta + (y - mu) / mu
            mx = mu * x
            sw += mu
            swx += mx
            swxx += mx * x
            swz += mu * z
            swxz += mx * z
        det = sw * swxx - swx * swx
        if det <= 0:
            return None
        a = (swxx * swz - swx * swxz) / det
        b, previous = (sw * swxz - swx * swz) / det, b
        if abs(b) * span > 50:  # a collapse to nothing: no finite fit
            return None
        if abs(b - previous) * span < 1e-6:  # converged: the fitted change moves no more
            break
    sw = swx = swxx = pearson = 0.0
    for x, y in centred:
        mu = math.exp(a + b * x)
        sw += mu
        swx += mu * x
        swxx += mu * x * x
        pearson += (y - mu) ** 2 / mu
    det = sw * swxx - swx * swx
    if det <= 0:
        return None
    dispersion = max(1.0, pearson / (n - 2))
    se = math.sqrt(dispersion * sw / det)
    low = min(x for x, _ in centred)
    return TrendFit(
        change=math.expm1(b * span),
        start=math.exp(a + b * low),
        end=math.exp(a + b * (low + span)),
        z=b / se if se > 0 else (-math.inf if b < 0 else math.inf),
        level=sw / n,
        days=n,
    )


def declined(
    fit: TrendFit | None, drop: float, min_z: float, min_level: float, min_days: int
) -> bool:
    """Down by ``drop`` or more across the window, significantly (``z <= -min_z``), for a
    metric whose usual size is at least ``min_level``, fitted over ``min_days`` or more."""
    if fit is None or fit.days < min_days or fit.level < min_level:
        return False
    return fit.change <= -drop and fit.z <= -min_z
