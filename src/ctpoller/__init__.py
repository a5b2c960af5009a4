"""ctpoller: CT dose notifications from an OpenREM database, exactly once."""


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed package's metadata only when asked (start-up time)."""
    if name != "__version__":
        raise AttributeError(f"module 'ctpoller' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ctpoller")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
