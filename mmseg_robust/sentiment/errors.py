"""The sentiment data's expected error."""

from mmseg_robust.errors import MMRobustError


class SentimentDataError(MMRobustError):
    """A sentiment pickle cannot be read safely, or its contents break the format (one line naming
    the file, split and key)."""
