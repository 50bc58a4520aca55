"""The one error hierarchy front ends catch (defined in tools.errors so tools need no agent)."""
from tools.errors import (  # noqa: F401  (re-exported)
    BackendError,
    Cancelled,
    DiskFull,
    ImagentError,
    InvalidInput,
    ModelNotFound,
    SafetyBlocked,
)


class ConfigError(ImagentError):
    exit_code = 2


class LLMError(ImagentError):
    """The LLM was unreachable, too slow, or answered junk it could not repair."""

    exit_code = 6
