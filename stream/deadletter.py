"""Dead letters: what was rejected, why, and exactly where it came from.

The record keeps the original bytes (base64) so nothing rejected is lost: fix the
producer, then re-publish ``original_b64`` to the events topic.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from stream import codec

__all__ = ["DEAD_LETTER_SCHEMA", "DeadLetter", "SourcePosition"]

DEAD_LETTER_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a message was read: enough to find it again in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message with its reason, ready for the dead-letter topic."""

    reason: str
    detail: str
    original: bytes
    source: SourcePosition
    rejected_at: datetime

    def to_json(self) -> bytes:
        key = self.source.key
        return codec.dumps(
            {
                "schema": DEAD_LETTER_SCHEMA,
                "reason": self.reason,
                "detail": self.detail,
                "source": {
                    "topic": self.source.topic,
                    "partition": self.source.partition,
                    "offset": self.source.offset,
                    # Readable key for people, exact bytes for re-publishing.
                    "key": key.decode("utf-8", "replace") if key is not None else None,
                    "key_b64": base64.b64encode(key).decode("ascii") if key is not None else None,
                    "timestamp_ms": self.source.timestamp_ms,
                },
                "original_b64": base64.b64encode(self.original).decode("ascii"),
                "rejected_at": self.rejected_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetter:
        """Read a record back (tools and tests); the inverse of :meth:`to_json`."""
        obj = codec.loads(data)
        src = obj["source"]
        key = base64.b64decode(src["key_b64"]) if src["key_b64"] is not None else None
        return cls(
            reason=obj["reason"],
            detail=obj["detail"],
            original=base64.b64decode(obj["original_b64"]),
            source=SourcePosition(
                src["topic"], src["partition"], src["offset"], key, src["timestamp_ms"]
            ),
            rejected_at=datetime.fromisoformat(obj["rejected_at"]),
        )
