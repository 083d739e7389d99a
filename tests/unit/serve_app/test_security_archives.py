"""Training archives: unsafe entries, bombs and lies are refused, and nothing remains."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from serve_app.kernel.errors import (
    InvalidInput,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from serve_app.security import ArchiveLimits, extract_zip

LIMITS = ArchiveLimits(max_entries=50, max_total_bytes=2_000_000, max_ratio=50)


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for name, data in entries:
            zipped.writestr(name, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


GOOD = [("page1.png", b"\x89PNG fake"), ("page1.xml", b"<PcGts/>"), ("sub/page2.xml", b"<x/>")]

BAD: list[tuple[str, list[tuple[str | zipfile.ZipInfo, bytes]], type[ServiceError]]] = [
    ("dotdot", [("../evil.txt", b"x")], InvalidInput),
    ("nested-dotdot", [("a/../../evil.txt", b"x")], InvalidInput),
    ("absolute", [("/tmp/evil.txt", b"x")], InvalidInput),
    ("drive-letter", [("C:/evil.txt", b"x")], InvalidInput),
    ("backslash-traversal", [("..\\..\\evil.txt", b"x")], InvalidInput),
    ("unc", [("\\\\server\\share\\evil.txt", b"x")], InvalidInput),
    ("symlink", [(symlink_entry("link"), b"/etc/passwd")], InvalidInput),
    ("nested-zip", [("inner.zip", b"PK\x03\x04")], InvalidInput),
    ("nested-tar", [("inner.tar.gz", b"x")], InvalidInput),
    ("duplicate", [("a.xml", b"1"), ("a.xml", b"2")], InvalidInput),
    ("file-then-dir", [("a", b"1"), ("a/b.xml", b"2")], InvalidInput),
    ("too-many", [(f"f{i}.xml", b"x") for i in range(51)], PayloadTooLarge),
    ("too-big", [(f"f{i}.bin", bytes(range(256)) * 1000) for i in range(9)], PayloadTooLarge),
    ("bomb", [("zeros.xml", b"\x00" * 1_500_000)], PayloadTooLarge),
]


def test_a_clean_archive_is_extracted_privately(tmp_path: Path) -> None:
    target = extract_zip(make_zip(tmp_path / "ok.zip", GOOD), tmp_path, LIMITS)
    assert (target / "sub" / "page2.xml").read_bytes() == b"<x/>"
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


@pytest.mark.parametrize(("name", "entries", "error"), BAD, ids=[case[0] for case in BAD])
def test_unsafe_archives_are_refused_and_leave_nothing(
    tmp_path: Path, name: str, entries: list[tuple[str | zipfile.ZipInfo, bytes]],
    error: type[ServiceError],
) -> None:
    archive = make_zip(tmp_path / f"{name}.zip", entries)
    parent = tmp_path / "work"
    parent.mkdir()
    with pytest.raises(error):
        extract_zip(archive, parent, LIMITS)
    assert list(parent.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_encrypted_entries_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile cannot write encrypted entries; mark one as such the way a reader sees it."""
    archive = make_zip(tmp_path / "enc.zip", GOOD)
    real_infolist = zipfile.ZipFile.infolist

    def encrypted(self: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
        infos = real_infolist(self)
        infos[0].flag_bits |= 0x1
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", encrypted)
    with pytest.raises(InvalidInput, match="encrypted"):
        extract_zip(archive, tmp_path, LIMITS)


@pytest.mark.parametrize("data", [b"not a zip", b"PK\x03\x04truncated", b""])
def test_non_zip_is_415(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "a.zip").write_bytes(data)
    with pytest.raises(UnsupportedMediaType):
        extract_zip(tmp_path / "a.zip", tmp_path, LIMITS)


def test_an_entry_larger_than_its_header_says_is_stopped(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Headers can lie: zipfile stops at the declared size and fails the CRC; we count
    the bytes written too. Either way the archive is refused and nothing remains."""
    archive = make_zip(tmp_path / "liar.zip", [("a.xml", b"y" * 5000)])
    real_infolist = zipfile.ZipFile.infolist

    def lying_infolist(self: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 10
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    parent = tmp_path / "work"
    parent.mkdir()
    with pytest.raises(ServiceError):
        extract_zip(archive, parent, LIMITS)
    assert list(parent.iterdir()) == []


def test_zip_bytes_in_memory_are_not_needed(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("a.xml", b"<a/>")
    (tmp_path / "m.zip").write_bytes(buffer.getvalue())
    assert (extract_zip(tmp_path / "m.zip", tmp_path, LIMITS) / "a.xml").exists()
