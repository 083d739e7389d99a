"""The door: API key, paths under the upload base, URL allowlist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve_app.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge, Unauthorized
from serve_app.security import check_api_key, check_url, read_upload_file


def test_api_key_must_match() -> None:
    check_api_key("right", "right")
    for wrong in (None, "", "wrong", "right ", "RIGHT"):
        with pytest.raises(Unauthorized):
            check_api_key(wrong, "right")


def test_network_isolation_mode_checks_nothing() -> None:
    check_api_key(None, None)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "uploads"
    (root / "inbox").mkdir(parents=True)
    (root / "inbox" / "a.pdf").write_bytes(b"%PDF-1.7 inside")
    (tmp_path / "secret.txt").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.txt", root / "inbox" / "link-out")
    os.symlink(root / "inbox" / "a.pdf", root / "inbox" / "link-in")
    return root


def test_reads_a_file_inside_the_base(base: Path) -> None:
    assert read_upload_file(base, "inbox/a.pdf", 1000) == b"%PDF-1.7 inside"
    assert read_upload_file(base, str(base / "inbox/a.pdf"), 1000) == b"%PDF-1.7 inside"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("../secret.txt", Forbidden),
        ("inbox/../../secret.txt", Forbidden),
        ("inbox/link-out", Forbidden),
        ("/inbox/a.pdf", Forbidden),
        ("/etc/passwd", Forbidden),
        ("inbox/missing.pdf", NotFound),
        ("inbox", InvalidInput),
        ("inbox/a.pdf\x00.png", InvalidInput),
        ("a" * 5000, InvalidInput),
    ],
    ids=["dotdot", "nested-dotdot", "symlink-out", "absolute-not-in-base", "absolute-etc",
         "missing", "directory", "nul", "overlong"],
)
def test_refuses_paths_that_are_not_files_in_the_base(
    base: Path, path: str, error: type
) -> None:
    with pytest.raises(error):
        read_upload_file(base, path, 1000)


def test_symlink_inside_the_base_is_resolved_to_its_target(base: Path) -> None:
    assert read_upload_file(base, "inbox/link-in", 1000) == b"%PDF-1.7 inside"


def test_file_over_the_limit_is_413(base: Path) -> None:
    with pytest.raises(PayloadTooLarge):
        read_upload_file(base, "inbox/a.pdf", 5)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://dms.example.org/a.pdf", InvalidInput),
        ("file:///etc/passwd", InvalidInput),
        ("https://evil.example.com/a.pdf", Forbidden),
        ("https://user:pw@dms.example.org/a.pdf", InvalidInput),
        ("https://dms.example.org.evil.com/a.pdf", Forbidden),
    ],
)
def test_urls_outside_the_allowlist_are_refused(url: str, error: type) -> None:
    with pytest.raises(error):
        check_url(url, ["dms.example.org"])


def test_allowlisted_url_passes() -> None:
    assert check_url("https://DMS.example.org/a.pdf", ["dms.example.org"])
