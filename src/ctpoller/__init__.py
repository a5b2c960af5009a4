"""ctpoller: CT dose notifications from an OpenREM database, exactly once."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctpoller")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
