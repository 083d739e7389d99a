"""ocr-graph's HTTP side: settings, contract, validation, composition. Never imports torch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ocr-graph")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
