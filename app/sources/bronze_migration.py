"""Moving a stream checkpoint written by Spark's file source over to the listing source, in place.

A checkpoint of the file source (``COINLAKE_BRONZE_SOURCE=files``, every release before the
listing source) logs the files of every batch under ``<checkpoint>/sources/0``. The listing source
cannot resume from it, so when the stream starts on such a checkpoint it

1. reads which files the committed batches read (the files of a batch planned but not committed
   count as unread) and lists all of bronze once,
2. writes the listing source's first offset (:func:`app.sources.bronze_offsets.seed_offset`) into
   a new folder ``.<name>.migrating`` beside the checkpoint,
3. renames the old checkpoint to ``<name>.filesource-<UTC time>`` (kept, never read again) and the
   new folder to ``<name>``.

The new checkpoint starts from that offset: no committed file is read again, none is skipped. It
has a new query id, so its batches carry a new idempotence id (Delta ``txnAppId``, the warehouse
ledger) and count from 0. That is why a checkpoint whose last batch was planned but not committed
(the stream stopped inside it) is not migrated: some of that batch's writes may have committed
under the old id, and only its re-run under that id completes the rest (anomalies, gold, the
warehouse), so the start stops with a message to finish that batch with the file source first. A crash between the steps is finished by the next start (a checkpoint
folder missing beside a ``.migrating`` one completes step 3; an old checkpoint still in place is
migrated again from step 1).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import ConfigError
from app.logs import log_event
from app.paths import local_path
from app.sources.bronze_offsets import LANDING_SLACK_SECONDS, BronzeOffset, file_key, seed_offset
from app.sources.bronze_source import DAY_PREFIX, SEED_FILE, day_times, list_day, list_days, recent_file_times

logger = logging.getLogger(__name__)

FILE_SOURCE_LOG = os.path.join("sources", "0")


@dataclass(frozen=True)
class Migration:
    """What a migration did: the old checkpoint's new name, files it had committed, the seed."""

    moved_to: str
    committed_files: int
    unread_below_high_water: int
    seed: BronzeOffset


def is_file_source_checkpoint(checkpoint: str) -> bool:
    """Whether ``checkpoint`` was written by Spark's file source (it has a ``sources/0`` log)."""
    folder = os.path.join(local_path(checkpoint), FILE_SOURCE_LOG)
    return os.path.isdir(folder) and any(not n.startswith(".") for n in os.listdir(folder))


def is_listing_checkpoint(checkpoint: str) -> bool:
    """Whether ``checkpoint`` has offsets but no file source log (the listing source wrote it)."""
    offsets = os.path.join(local_path(checkpoint), "offsets")
    has_offsets = os.path.isdir(offsets) and any(n.isdigit() for n in os.listdir(offsets))
    return has_offsets and not is_file_source_checkpoint(checkpoint)


def uncommitted_batch(checkpoint: str) -> int | None:
    """The batch the checkpoint planned (``offsets/<n>``) but did not commit, or None."""
    root = local_path(checkpoint)
    planned = [int(n) for n in _names(os.path.join(root, "offsets")) if n.isdigit()]
    committed = [int(n) for n in _names(os.path.join(root, "commits")) if n.isdigit()]
    if planned and max(planned) > max(committed, default=-1):
        return max(planned)
    return None


def committed_file_keys(checkpoint: str) -> set[str]:
    """Keys (``day/name``) of the files the file source's committed batches read.

    The log holds, per batch, ``v1`` then one JSON object per file (``path``, ``batchId``); every
    tenth batch a ``.compact`` file repeats all earlier entries. A batch counts when
    ``commits/<batch>`` exists.
    """
    root = local_path(checkpoint)
    commits = [int(n) for n in _names(os.path.join(root, "commits")) if n.isdigit()]
    last = max(commits) if commits else -1
    keys: set[str] = set()
    log = os.path.join(root, FILE_SOURCE_LOG)
    for name in _names(log):
        stem = name.removesuffix(".compact")
        if not stem.isdigit():
            continue
        with open(os.path.join(log, name), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        for line in lines[1:]:
            if not line.strip():
                continue
            entry = json.loads(line)
            if int(entry["batchId"]) <= last:
                key = _key_of(str(entry["path"]))
                if key is not None:
                    keys.add(key)
    return keys


def migrate_checkpoint(
    checkpoint: str,
    bronze_root: str,
    *,
    late_minutes: float,
    start_key: str = "",
    now: datetime | None = None,
) -> Migration | None:
    """Move a file source checkpoint over to the listing source (see the module docstring).

    Args:
        checkpoint: the stream's checkpoint folder.
        bronze_root: ``Layout.bronze_root``.
        late_minutes: the listing source's admission window.
        start_key: where a new checkpoint starts (a lookback); older unread files stay unread.
        now: the time in the old checkpoint's new name (default: now).

    Returns:
        The migration, or None when there was nothing to migrate.

    Raises:
        ConfigError: the checkpoint's log cannot be read, or its last batch is not committed.
    """
    root = local_path(checkpoint).rstrip("/")
    staging = os.path.join(os.path.dirname(root), f".{os.path.basename(root)}.migrating")
    if not os.path.exists(root) and os.path.isdir(staging):
        os.rename(staging, root)  # a migration stopped between its two renames
        log_event(logger, "bronze.migration_completed", checkpoint=checkpoint)
        return None
    if not is_file_source_checkpoint(checkpoint):
        return None
    pending = uncommitted_batch(checkpoint)
    if pending is not None:
        raise ConfigError(
            f"the stream checkpoint {checkpoint} was written by Spark's file source and its batch "
            f"{pending} was planned but not committed (the stream stopped inside it); finish it with "
            f"the file source first, which re-runs it under the same idempotence id: "
            f"`COINLAKE_BRONZE_SOURCE=files coinlake stream --trigger available-now`, then start "
            f"again to move over to the listing source"
        )
    try:
        committed = committed_file_keys(checkpoint)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"the stream checkpoint {checkpoint} was written by Spark's file source and its log "
            f"cannot be read ({type(exc).__name__}: {exc}); keep reading it with "
            f"COINLAKE_BRONZE_SOURCE=files, or start over with `coinlake replay --from-scratch`"
        ) from exc
    listed = [k for day in list_days(bronze_root) for k in list_day(bronze_root, day)]
    seed = seed_for(bronze_root, committed, listed, late_minutes=late_minutes, start_key=start_key)
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    with open(os.path.join(staging, SEED_FILE), "w", encoding="utf-8") as fh:
        json.dump(seed.to_json(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    moved_to = f"{root}.filesource-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"
    os.rename(root, moved_to)
    os.rename(staging, root)
    unread = sum(1 for k in listed if k not in committed and k <= seed.hw)
    log_event(
        logger,
        "bronze.checkpoint_migrated",
        checkpoint=checkpoint,
        moved_to=moved_to,
        committed_files=len(committed),
        unread_below_high_water=unread,
        high_water=seed.hw,
    )
    return Migration(
        moved_to=moved_to, committed_files=len(committed), unread_below_high_water=unread, seed=seed
    )


def seed_for(
    bronze_root: str,
    processed: set[str] | list[str],
    listed: list[str],
    *,
    late_minutes: float,
    start_key: str = "",
) -> BronzeOffset:
    """The listing source's first offset after ``processed`` (:func:`seed_offset`), with the
    file system's time of this listing and the times of the files landed just before it."""
    folders = day_times(bronze_root)
    known = [t for t in folders.values() if t != math.inf]
    at = max(known) if known else None
    times = recent_file_times(bronze_root, folders, at - LANDING_SLACK_SECONDS) if at is not None else {}
    return seed_offset(processed, listed, late_minutes=late_minutes, start_key=start_key, at=at, mtimes=times)


def seed_file(checkpoint: str) -> str:
    """Where a migrated checkpoint keeps the listing source's first offset."""
    return f"{checkpoint.rstrip('/')}/{SEED_FILE}"


def _names(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def _key_of(uri: str) -> str | None:
    """``day/name`` of a logged bronze file URI (``file:///r/dt=2026-01-01/a.json``), None otherwise."""
    from urllib.parse import unquote

    parts = unquote(uri).rstrip("/").split("/")
    if len(parts) < 2 or not parts[-2].startswith(DAY_PREFIX):
        return None
    return file_key(parts[-2][len(DAY_PREFIX) :], parts[-1])
