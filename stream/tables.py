"""Faust tables keyed by ``account_id`` bytes, seen by the core as ``str``-keyed mappings.

Why bytes: a table declared with ``key_type=str`` serialises keys as JSON
(``"acme"`` with quotes), so its changelog would partition ``"acme"`` rather than
``acme`` and an account's state would land on another partition than its events.
With ``key_type=bytes`` the changelog key is exactly the events' key.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["AccountKeyed"]


class AccountKeyed(MutableMapping[str, Any]):
    """A ``str``-keyed view of a Faust table whose keys are UTF-8 bytes."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, account_id: str) -> Any:
        return self.table[account_id.encode()]

    def get(self, account_id: str, default: Any = None) -> Any:
        return self.table.get(account_id.encode(), default)

    def __setitem__(self, account_id: str, value: Any) -> None:
        self.table[account_id.encode()] = value

    def __delitem__(self, account_id: str) -> None:
        del self.table[account_id.encode()]

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in self.table)

    def __len__(self) -> int:
        return len(self.table)
