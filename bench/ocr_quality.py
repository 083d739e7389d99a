"""OCR accuracy through the service vs each engine run directly on the original file.

    python bench/ocr_quality.py [--page tests/fixtures/real/kant_0020.tif]

The baseline is the best a user could do without us, on the original file: the
tesseract binary on the TIFF itself (`tesseract page.tif stdout -l LANG`), rapidocr on
the image as PIL decodes it. The service gets the same file as an upload, with its
defaults. CER = Levenshtein distance / reference length after collapsing whitespace,
against the page's hand-made PAGE-XML ground truth (historical characters such as ſ
kept). The service must be at least as good: no engine's CER higher than direct by more
than 0.005. The ensemble engine (tesseract Fraktur, tesseract frk and rapidocr voting)
must read better than the best engine does directly. `engine=auto` with no languages is
measured too (it must find the script from the page itself). Also kraken's line count
against the ground truth's. Written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from tests.fixtures.cluster import running_app  # noqa: E402 - after the path setup
from tests.fixtures.documents import REAL_PAGE  # noqa: E402
from tests.fixtures.ocr_truth import (  # noqa: E402
    cer,
    ground_truth,
    rapidocr_on_file,
    tesseract_on_file,
)

# (engine as the service names it, request languages); direct: the engine on the file.
ENGINES = [("tesseract", ["fraktur"]), ("tesseract", ["frk"]), ("tesseract", ["deu"]),
           ("rapidocr", [])]
# Measured through the service only: they have no direct equivalent.
COMBINED = [("ensemble", []), ("auto", [])]


def direct(page: Path) -> dict[tuple[str, str], tuple[float, str]]:
    """Each engine on the original file, as a user would call it without us."""
    results = {}
    for name, languages in ENGINES:
        started = time.perf_counter()
        if name == "tesseract":
            model = {"fraktur": "Fraktur", "frk": "frk", "deu": "deu"}[languages[0]]
            text = tesseract_on_file(page, model)
        else:
            text = rapidocr_on_file(page)
        results[(name, ",".join(languages))] = (time.perf_counter() - started, text)
    return results


def served(page: Path) -> tuple[dict[tuple[str, str], tuple[float, str]], int]:
    import httpx

    small = {"ray_actor_options": {"num_cpus": 0.5}}
    args = {"embedding_model": None, "rerank_model": None, "training_model": None,
            "ocr_engines": ["tesseract", "ensemble"], "settings": {"RESIDENCY_PROFILE": "cpu-only"},
            "deployment_options": {name: small for name in
                                   ("OCR", "Segmentation", "Ingress", "ResidencyController")}}
    results = {}
    with running_app(args) as (url, key), httpx.Client(
        base_url=url, headers={"X-API-Key": key}, timeout=900
    ) as client:
        for name, languages in [*ENGINES, *COMBINED]:
            options = json.dumps({"engine": name, "languages": languages, "formats": ["text"]})
            started = time.perf_counter()
            response = client.post("/v1/ocr/upload", files={"file": (page.name, page.read_bytes())},
                                   data={"options": options})
            response.raise_for_status()
            results[(name, ",".join(languages))] = (time.perf_counter() - started,
                                                   response.json()["text"])
        segmented = client.post("/v1/segment/upload",
                                files={"file": (page.name, page.read_bytes())})
        segmented.raise_for_status()
        return results, len(segmented.json()["pages"][0]["lines"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path,
                        default=REAL_PAGE)
    args = parser.parse_args()
    reference, line_count = ground_truth(args.page.with_suffix(".xml"))
    here = direct(args.page)
    there, found_lines = served(args.page)
    rows, worst = [], 0.0
    for key in here:
        direct_cer, service_cer = cer(here[key][1], reference), cer(there[key][1], reference)
        worst = max(worst, service_cer - direct_cer)
        rows.append(f"| {key[0]} | {key[1] or '-'} | {direct_cer:.3f} | {service_cer:.3f} | "
                    f"{here[key][0]:.1f} | {there[key][0]:.1f} |")
    best_direct = min(cer(text, reference) for _, text in here.values())
    combined = {name: cer(there[(name, "")][1], reference) for name, _ in COMBINED}
    rows.append(f"| ensemble (tesseract Fraktur, frk, rapidocr voting) | - | best engine "
                f"direct: {best_direct:.3f} | **{combined['ensemble']:.3f}** | - | "
                f"{there[('ensemble', '')][0]:.1f} |")
    rows.append(f"| auto (nothing but the file) | - | best engine direct: {best_direct:.3f} | "
                f"{combined['auto']:.3f} | - | {there[('auto', '')][0]:.1f} |")
    report = (
        f"`{args.page.name}` (real Fraktur print, 1784), CER against its PAGE-XML ground "
        "truth. Direct: the tesseract binary on the TIFF, rapidocr on the PIL-decoded image; "
        "service: the same file uploaded, the service's defaults.\n\n| engine | languages | "
        "CER direct on the original | CER through the service | s direct | s service |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"kraken blla through the service: {found_lines} lines found, ground truth "
        f"{line_count}. Largest CER loss through the service: {worst:+.3f} (target <= 0.005). "
        f"The ensemble against the best engine direct: {combined['ensemble'] - best_direct:+.3f} "
        "(target < 0).\n"
    )
    print(report)
    write_report(report, "ocr_quality")
    return 0 if worst <= 0.005 and combined["ensemble"] < best_direct else 1


if __name__ == "__main__":
    sys.exit(main())
