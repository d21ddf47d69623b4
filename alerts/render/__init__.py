"""Rendering alert events into messages: Slack, e-mail, Alertmanager, PagerDuty and
signed webhooks.

Pure, like the rest of the core: these build payloads and never send them, and "now"
is passed in, so the same event always renders the same message and every channel can
be tested without a network.
"""
