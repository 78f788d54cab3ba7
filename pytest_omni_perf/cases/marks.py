"""A case row's ``mark``: mark names and the cards count, checked (stdlib only).

Two layouts occur in vLLM-Omni's case files: a list of names and ``{"hardware_marks": ...}``
objects, and one object ``{"hardware_marks": ..., "marks": [...]}``. ``hardware_marks``
(``res``: platform -> SKU or list of SKUs, ``num_cards``) gives platform marks (cuda, npu,
rocm), SKU marks (H100, A3, ...) and the row's card count.
"""

from __future__ import annotations

from pytest_omni_perf.numeric import Range


class MarkError(ValueError):
    """A ``mark`` entry is malformed; the message names the file, row and field."""


_WHOLE_POSITIVE = Range(1, whole=True)


def read_marks(raw: object, where: str) -> tuple[tuple[str, ...], int | None]:
    """``mark`` as mark names and the cards count.

    Two layouts occur: a list of names and ``{"hardware_marks": ...}`` objects, and one
    object ``{"hardware_marks": ..., "marks": [...]}``. ``hardware_marks`` gives platform
    marks (its ``res`` keys), SKU marks (their values, a name or a list) and ``num_cards``.
    """
    if raw is None:
        return (), None
    if isinstance(raw, dict):
        extra = set(raw) - {"hardware_marks", "marks"}
        if extra:
            raise MarkError(f"{where}: unknown key(s) {', '.join(sorted(extra))} (known: "
                            "hardware_marks, marks)")
        items: list[object] = [{"hardware_marks": raw["hardware_marks"]}] \
            if "hardware_marks" in raw else []
        listed = raw.get("marks", [])
        if not isinstance(listed, list):
            raise MarkError(f"{where}.marks: expected a list of mark names")
        items += listed
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise MarkError(f"{where}: expected a list or an object, got {type(raw).__name__}")
    names: list[str] = []
    cards: int | None = None
    for k, item in enumerate(items):
        if isinstance(item, str) and item.isidentifier():
            names.append(item)
        elif isinstance(item, dict) and set(item) == {"hardware_marks"}:
            if cards is not None:
                raise MarkError(f"{where}[{k}]: a second hardware_marks (one row, one "
                                "cards_<n> mark)")
            platform_skus, cards = _hardware_marks(item["hardware_marks"],
                                                   f"{where}[{k}].hardware_marks")
            names += platform_skus
        else:
            raise MarkError(f"{where}[{k}]: expected a mark name (an identifier) or "
                            f"{{\"hardware_marks\": ...}}, got {item!r}"[:300])
    return tuple(dict.fromkeys(names)), cards


def _hardware_marks(raw: object, where: str) -> tuple[list[str], int]:
    if not isinstance(raw, dict) or set(raw) - {"res", "num_cards"}:
        raise MarkError(f"{where}: expected an object with res and num_cards")
    cards = int(_WHOLE_POSITIVE.check(raw.get("num_cards"), f"{where}.num_cards", MarkError))
    res = raw.get("res", {})
    if not isinstance(res, dict):
        raise MarkError(f"{where}.res: expected an object of platform -> SKU")
    names: list[str] = []
    for platform, skus in res.items():
        listed = skus if isinstance(skus, list) else [skus]
        if not platform.isidentifier() or not listed or not all(
                isinstance(s, str) and s.isidentifier() for s in listed):
            raise MarkError(f"{where}.res.{platform}: expected a SKU name or a list of them "
                            f"(like \"H100\"), got {skus!r}")
        names += [platform, *listed]
    return names, cards
