"""One stored value: what every OPC UA notification becomes on the client side."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True, unsafe_hash=True)
class Sample:
    """One notification: the tag's value, OPC UA status code and source timestamp.

    Treat it as immutable. It is not ``frozen`` only because a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``: 1.3 µs instead of 0.26 µs per sample, at
    tens of thousands of samples a second.
    """

    path: str
    value: float | None
    status: int
    source_time: datetime

    @property
    def is_good(self) -> bool:
        return (self.status & 0xC0000000) == 0
