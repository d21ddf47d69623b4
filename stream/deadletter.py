"""Dead letters: what was rejected, why, and exactly where it came from.

The record keeps the original bytes (base64) so nothing rejected is lost: fix the
producer, then re-publish ``original_b64`` to the events topic. An original bigger
than :data:`MAX_ORIGINAL_BYTES` keeps only its first bytes (with its size and SHA-256):
whole, its letter would be more than a topic takes by default (1 MB), the send would
fail, and the reader, which commits nothing past a lost dead letter, would stop on it
at every start. The whole message stays at its source position in Kafka.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from stream import codec

__all__ = ["DEAD_LETTER_SCHEMA", "MAX_ORIGINAL_BYTES", "DeadLetter", "SourcePosition"]

DEAD_LETTER_SCHEMA = 1
MAX_ORIGINAL_BYTES = 512 * 1024
"""The most of an original a letter keeps: in base64 with the rest of the letter, well
under the 1 MB a Kafka topic takes by default (``max.message.bytes``)."""


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
    truncated_from: int | None = None
    """The original's size when ``original`` holds only its first bytes (read back
    from a letter that kept only those)."""

    @property
    def is_truncated(self) -> bool:
        return self.truncated_from is not None or len(self.original) > MAX_ORIGINAL_BYTES

    def to_json(self) -> bytes:
        key = self.source.key
        kept = self.original[:MAX_ORIGINAL_BYTES]
        truncated = None
        if len(self.original) > MAX_ORIGINAL_BYTES:
            truncated = {
                "bytes": len(self.original),
                "sha256": hashlib.sha256(self.original).hexdigest(),
            }
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
                "original_b64": base64.b64encode(kept).decode("ascii"),
                **({"original_truncated": truncated} if truncated else {}),
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
            truncated_from=(obj.get("original_truncated") or {}).get("bytes"),
        )
