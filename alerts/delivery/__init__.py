"""Delivering alert events to people and tools: routing, retries, a durable ledger.

The pure parts (``routing``, ``policy``, ``schedule``) decide *where* and *when*; the
adapters (``outbox`` in Redis, ``senders`` over the transports, ``notifier`` in the
worker) do the I/O. docs/delivery.md is the user's guide.
"""
