"""Alert outbox: alerts are delivered at least once, and at most once per key, metric and time.

Alerts of a batch are stored as *pending* before the anomalies are committed, delivered after the
commit, and *marked* delivered. A crash anywhere between leaves them pending; the next batch (or
the re-run of the same batch, which finds its anomalies committed and so has nothing new) delivers
them. An alert is identified by ``(coin_id, vs_currency, metric, observed_at)``: a second pending
copy replaces the first, and a delivered id is never sent again. A data-quality alert
(:mod:`app.alerts.dq`) carries its own ``alert_id`` (one per batch).

Files live under ``<data root>/alerts`` (``/dbfs`` on Databricks), written to a temporary name
and renamed, as the warehouse's pending ranges are: ``pending.json`` (id -> payload) and
``delivered.jsonl`` (one id per line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from app.paths import local_path

AlertKey = str
# Delivered ids older than this many are forgotten (the file stays small); an anomaly is alerted
# right after its batch, so an id this old is never pending again.
MAX_DELIVERED_IDS = 100_000


def alert_key(payload: Mapping[str, Any]) -> AlertKey:
    """The dedupe id of an alert: its ``alert_id`` if it has one, else key, metric and observation time."""
    if payload.get("alert_id") is not None:
        return str(payload["alert_id"])
    parts = (payload.get(k) for k in ("coin_id", "vs_currency", "metric", "observed_at"))
    return "|".join("" if p is None else str(p) for p in parts)


class AlertOutbox:
    """Pending and delivered alerts of one data root (one stream writes it at a time)."""

    def __init__(self, folder: str) -> None:
        self.folder = local_path(folder)
        self._pending = os.path.join(self.folder, "pending.json")
        self._delivered = os.path.join(self.folder, "delivered.jsonl")

    def pending(self) -> dict[AlertKey, dict[str, Any]]:
        """Alerts stored and not yet delivered, by id."""
        try:
            with open(self._pending, encoding="utf-8") as handle:
                return dict(json.load(handle))
        except FileNotFoundError:
            return {}

    def delivered(self) -> set[AlertKey]:
        """Ids already delivered."""
        try:
            with open(self._delivered, encoding="utf-8") as handle:
                return {line.rstrip("\n") for line in handle if line.strip()}
        except FileNotFoundError:
            return set()

    def add(self, payloads: Iterable[Mapping[str, Any]]) -> int:
        """Store alerts as pending (before their anomalies are committed); returns how many are new."""
        pending, done = self.pending(), self.delivered()
        added = 0
        for payload in payloads:
            key = alert_key(payload)
            if key in done:
                continue
            added += key not in pending
            pending[key] = json.loads(json.dumps(dict(payload), default=str))
        self._write_pending(pending)
        return added

    def deliver(self, send: Callable[[Sequence[Mapping[str, Any]]], Sequence[bool]]) -> tuple[int, int]:
        """Send every pending alert and mark the ones sent; returns ``(sent, still_pending)``.

        Args:
            send: posts a list of payloads and says, per payload, whether it was delivered.
        """
        pending = self.pending()
        if not pending:
            return 0, 0
        done = self.delivered()
        todo = {k: v for k, v in pending.items() if k not in done}
        keys = list(todo)
        results = list(send([todo[k] for k in keys])) if keys else []
        sent = [k for k, ok in zip(keys, results, strict=True) if ok]
        self._mark(sent, done)
        left = {k: todo[k] for k in keys if k not in set(sent)}
        self._write_pending(left)
        return len(sent), len(left)

    def mark_delivered(self, keys: Sequence[AlertKey]) -> None:
        """Mark alerts delivered without sending them (their log event was the whole channel)."""
        done = self.delivered()
        fresh = [k for k in keys if k not in done]
        self._mark(fresh, done)
        pending = self.pending()
        if any(k in pending for k in keys):
            self._write_pending({k: v for k, v in pending.items() if k not in set(keys)})

    def _mark(self, keys: list[AlertKey], done: set[AlertKey]) -> None:
        if not keys:
            return
        lines = [k for k in self._delivered_lines() if k] + keys
        self._atomic_write(self._delivered, "".join(f"{k}\n" for k in lines[-MAX_DELIVERED_IDS:]))

    def _delivered_lines(self) -> list[str]:
        try:
            with open(self._delivered, encoding="utf-8") as handle:
                return [line.rstrip("\n") for line in handle]
        except FileNotFoundError:
            return []

    def _write_pending(self, pending: Mapping[AlertKey, Any]) -> None:
        self._atomic_write(self._pending, json.dumps(pending, sort_keys=True))

    def _atomic_write(self, path: str, text: str) -> None:
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, f".{os.path.basename(path)}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
