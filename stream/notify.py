"""The notifier inside a worker: an agent on the alerts topic, one loop per receiver.

The agent hands each alert event to :class:`~alerts.delivery.notifier.Notifier`,
which queues it in Redis; the event's offset is committed only after that, so a crash
loses nothing and re-reading queues nothing twice. The receiver loops run in every
worker, but only the holder of a receiver's lease sends (alerts/delivery/outbox.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import faust
import redis.asyncio as aioredis
from mode import Service

from alerts.delivery.config import DEFAULT_RECEIVERS, DeliveryConfig, load_receivers
from alerts.delivery.notifier import DeliveryMetrics, Notifier, SilenceLookup
from alerts.delivery.outbox import Outbox
from alerts.delivery.senders import Sender, build_sender, render_options
from config.settings import Settings

__all__ = ["delivery_config", "receivers_path", "register_notifier"]

log = logging.getLogger(__name__)


def delivery_config(settings: Settings) -> DeliveryConfig:
    """The receivers file the settings name, validated (a bad one fails at start)."""
    return load_receivers(receivers_path(settings))


def receivers_path(settings: Settings) -> Path:
    """The receivers file the settings name, or the shipped one."""
    return Path(settings.receivers_file) if settings.receivers_file else DEFAULT_RECEIVERS


def register_notifier(
    app: faust.App,
    settings: Settings,
    alerts_topic: Any,
    alert_dead_letter_topic: Any,
    *,
    now: Callable[[], datetime],
    metrics: DeliveryMetrics,
    silence_for: SilenceLookup | None = None,
) -> None:
    """Add the notifier agent and its delivery service to ``app``."""
    config = delivery_config(settings)
    metrics.declare_receivers([receiver.name for receiver in config.receivers])
    triage_url = (
        settings.public_url
        or settings.advertised_url
        or (f"http://{settings.web_host}:{settings.web_port}")
    )
    redis = aioredis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    outbox = Outbox(redis, settings.topic_prefix)

    async def dead_letter(record: Mapping[str, Any]) -> None:
        key = str(record.get("message_id", "")).encode()
        await alert_dead_letter_topic.send(
            key=key,
            value=json.dumps(record, separators=(",", ":")).encode(),
            headers={"reason": str(record.get("reason", "")).encode()},
        )

    senders: dict[str, Sender] = {}
    notifier = Notifier(
        config,
        outbox,
        senders,
        dead_letter=dead_letter,
        now=now,
        metrics=metrics,
        silence_for=silence_for,
    )

    @app.agent(alerts_topic, name="notifier")
    async def notify(stream: Any) -> None:
        """Queue every alert event for its receivers; offsets commit after queueing."""
        async for value in stream:
            try:
                event = json.loads(value)
            except (TypeError, ValueError):
                log.error("notifier: an alert event that is not JSON; skipped")
                continue
            await notifier.accept(event)

    class DeliveryService(Service):
        """Runs one delivery loop per receiver for as long as the worker runs."""

        async def on_start(self) -> None:
            self.session = aiohttp.ClientSession()
            options = render_options(now, triage_url)
            for receiver in config.receivers:
                senders[receiver.name] = build_sender(receiver, self.session, options)
            self.loops = [
                asyncio.ensure_future(notifier.run_receiver(receiver.name))
                for receiver in config.receivers
            ]

        async def on_stop(self) -> None:
            notifier.stop()
            longest = max((r.timeout for r in config.receivers), default=0.0) * 3 + 5
            _, unfinished = await asyncio.wait(self.loops, timeout=longest)
            for loop in unfinished:
                loop.cancel()
            await asyncio.gather(*self.loops, return_exceptions=True)
            await self.session.close()
            await redis.aclose()

    app.service(DeliveryService)
