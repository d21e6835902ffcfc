"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class TaxiError(Exception):
    """Base class: the message says what happened and what was kept."""


class ConfigError(TaxiError):
    """The environment does not describe a usable set-up."""


class NotPublishedError(TaxiError):
    """The source has no file for that taxi type and month (HTTP 404)."""


class DownloadError(TaxiError):
    """The download failed (after its retries; at once if the host name does not resolve); no file was kept."""


class BadFileError(TaxiError):
    """The file is not a complete, well-formed month file; nothing was loaded from it."""


class LoadError(TaxiError):
    """A load failed and was rolled back; the month's previous rows are untouched."""


class CheckError(TaxiError):
    """A check of ERROR severity failed: the store does not hold what its ledger says it loaded."""
