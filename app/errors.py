"""The error hierarchy of coinlake: one base class and a few leaves.

Transient errors may succeed when retried (network blips, 429, 5xx, a warehouse that is briefly
down); terminal errors will not (bad credentials, missing objects, invalid settings).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error coinlake raises on purpose."""


class ConfigError(PipelineError, ValueError):
    """A setting is missing or malformed; the message names the key and the bad value."""


class SourceTransientError(PipelineError):
    """The source failed in a way that may succeed on retry (429, 5xx, timeout, bad body)."""


class SourceTerminalError(PipelineError):
    """The source refused the request for good (auth, unknown coin, invalid currency)."""


class DataQualityError(PipelineError, ValueError):
    """An expectation with action ``fail`` was violated, so the batch stops."""


class LoadTransientError(PipelineError):
    """Writing to a sink failed in a way that may succeed on retry."""


class LoadTerminalError(PipelineError):
    """Writing to a sink failed for good (auth, missing objects, invalid identifiers)."""


class EnvironmentSetupError(PipelineError):
    """The runtime is unusable (Java missing or too old, Delta jars unresolvable)."""
