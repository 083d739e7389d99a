"""Which OCR engine reads a page: the one rule the ingress and the OCR replica share.

The ingress checks a request against the engines the application deploys before it
reads the document (and segments pages first for engines that read baseline lines);
the OCR replica resolves `auto` against the engines its node really has installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.kernel.errors import InvalidInput

# Request languages that make `auto` choose tesseract (German and Fraktur print).
GERMAN_OR_FRAKTUR = frozenset({"deu", "ger", "de", "frk", "fraktur"})


@dataclass(frozen=True)
class OcrEngines:
    """The OCR engines an application deploys, in order: the first answers `auto`."""

    names: tuple[str, ...]
    # Engines that recognise the baseline lines the Segmentation deployment finds.
    baseline_readers: frozenset[str] = frozenset()

    @property
    def default(self) -> str:
        return self.names[0]

    def check(self, asked: str) -> str:
        """422 naming the deployed engines when the asked one is not among them."""
        if asked != "auto" and asked not in self.names:
            available = ["auto", *self.names]
            raise InvalidInput(
                f"OCR engine {asked!r} is not deployed here; available: {', '.join(available)}",
                {"field": "engine", "available": available},
            )
        return asked

    def reads_baselines(self, asked: str) -> bool:
        """Whether the pages of this request must be segmented first."""
        return (self.default if asked == "auto" else asked) in self.baseline_readers

    def resolve(self, asked: str, languages: list[str],
                unavailable: Mapping[str, str]) -> str:
        """The engine that runs: `auto` is tesseract for German or Fraktur where it is
        installed, else the default; a named engine must be installed on this node."""
        installed = [name for name in self.names if name not in unavailable]
        if asked == "auto":
            german = {language.lower() for language in languages} & GERMAN_OR_FRAKTUR
            asked = "tesseract" if german and "tesseract" in installed else self.default
        if asked not in installed:
            why = unavailable.get(asked, "it is not deployed here")
            raise InvalidInput(f"OCR engine {asked!r} is not available: {why}",
                               {"field": "engine", "available": ["auto", *installed]})
        return asked
