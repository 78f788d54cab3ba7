"""Numbers checked where they enter: profile files, markers, options, ini keys, engine replies.

One rule type, ``Range``, says what a number may be (finite always; whole or not; bounds,
open or closed) and checks a value against it, with a message that names where the value
came from and what was allowed. NaN compares false with everything, so a hand-written
``value < minimum`` lets it through and a gate fed NaN never fires; every check here tests
finiteness first. Stdlib only, so every module may import it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers


# Whole numbers must fit in 64 bits, as TOML integers do (Python's reader takes any size).
_INT64 = 2**63


class NumberError(ValueError):
    """A number is missing its type, range or finiteness; the message names its source."""


@dataclasses.dataclass(frozen=True)
class Range:
    """What a number may be: finite, optionally whole, between ``low`` and ``high``.

    ``low_open``/``high_open`` exclude the end itself (``Range(0, low_open=True)`` is > 0).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False

    def describe(self) -> str:
        """``a finite number > 0``, ``a whole number >= 2``, ``a number in [0, 1]`` ..."""
        kind = "a whole number" if self.whole else "a finite number"
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return kind

    def contains(self, value: float) -> bool:
        """Whether a finite ``value`` lies within the bounds."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (
            value > self.high or (self.high_open and value == self.high))

    def check(self, value: object, where: str, error: type[Exception] = NumberError
              ) -> float:
        """``value`` as a float (an int for whole ranges, as ``int``), or ``error`` naming
        ``where`` (left out when empty), the allowed range and what was given.

        Accepts Python and numpy numbers (``numbers.Real``), never booleans or strings.
        """
        wrong = f"{_prefix(where)}expected {self.describe()}, got {_shown(value)}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise error(wrong)
        if self.whole:
            if not isinstance(value, numbers.Integral):
                raise error(wrong)
            whole = int(value)
            if not -_INT64 <= whole < _INT64 or not self.contains(whole):
                raise error(wrong)
            return whole
        try:
            number = float(value)
        except OverflowError:  # an int beyond float's range, e.g. 10**400 in a TOML file
            raise error(wrong) from None
        if not math.isfinite(number) or not self.contains(number):
            raise error(wrong)
        return number

    def parse(self, text: str, where: str, error: type[Exception] = NumberError) -> float:
        """A number typed as text (command line, ini file), checked as ``check`` does.

        ``nan``, ``inf`` and ``1e999`` are read by ``float`` but rejected here.
        """
        stripped = text.strip()
        try:
            value: float = int(stripped) if self.whole else float(stripped)
        except ValueError:
            raise error(f"{_prefix(where)}expected {self.describe()}, got {text!r}") from None
        return self.check(value, where, error)


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _shown(value: object) -> str:
    if isinstance(value, (str, bytes)) or isinstance(value, bool) \
            or not isinstance(value, numbers.Number):
        return f"{type(value).__name__} {value!r}"[:200]
    return repr(value)[:200]


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
UNIT_INTERVAL = Range(0, 1)
