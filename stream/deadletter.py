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

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "MAX_KEY_BYTES",
    "MAX_ORIGINAL_BYTES",
    "DeadLetter",
    "SourcePosition",
]

DEAD_LETTER_SCHEMA = 1
MAX_ORIGINAL_BYTES = 512 * 1024
"""The most of an original a letter keeps: in base64 with the rest of the letter, well
under the 1 MB a Kafka topic takes by default (``max.message.bytes``)."""
MAX_KEY_BYTES = 4096
"""The most of the original's key a letter keeps (and is keyed by): a valid key is an
account id of at most 128 characters; a key of hundreds of kilobytes, written twice
(as the letter's key and in base64), would again make a letter no topic takes."""


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
    key_truncated_from: int | None = None
    """The same for the source's key."""

    @property
    def is_truncated(self) -> bool:
        """Only the first bytes of the original or of its key are kept: republishing
        them would send something else."""
        key = self.source.key or b""
        return (
            self.truncated_from is not None
            or self.key_truncated_from is not None
            or len(self.original) > MAX_ORIGINAL_BYTES
            or len(key) > MAX_KEY_BYTES
        )

    @property
    def kafka_key(self) -> bytes | None:
        """What the letter is keyed by on the dead-letter topic (its source's key, or
        the first :data:`MAX_KEY_BYTES` of it)."""
        key = self.source.key
        return key[:MAX_KEY_BYTES] if key is not None else None

    def to_json(self) -> bytes:
        key = self.kafka_key
        kept = self.original[:MAX_ORIGINAL_BYTES]
        truncated = _truncation(self.original) if len(self.original) > MAX_ORIGINAL_BYTES else None
        whole_key = self.source.key
        key_truncated = (
            _truncation(whole_key)
            if whole_key is not None and len(whole_key) > MAX_KEY_BYTES
            else None
        )
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
                    **({"key_truncated": key_truncated} if key_truncated else {}),
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
            key_truncated_from=(src.get("key_truncated") or {}).get("bytes"),
        )


def _truncation(whole: bytes) -> dict[str, int | str]:
    """What a letter says of something it keeps only the first bytes of."""
    return {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
