"""The door, tried from outside: API keys, tokens and upload-base paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import serve_app.security as security
from serve_app.kernel.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from serve_app.security import check_api_key, check_token, read_upload_file

INSIDE = b"%PDF-1.7 inside the base"
SECRET = b"outside: must never be read"


def test_api_key_must_match() -> None:
    check_api_key("right", "right")
    for wrong in (None, "", "wrong", "right ", "RIGHT", "righ", "right\x00"):
        with pytest.raises(Unauthorized):
            check_api_key(wrong, "right")


def test_network_isolation_mode_checks_nothing() -> None:
    check_api_key(None, None)


def test_training_token_fails_closed() -> None:
    with pytest.raises(Unavailable, match="disabled"):
        check_token("anything", None, "X-Training-Token")
    with pytest.raises(Unauthorized, match="X-Training-Token"):
        check_token("wrong", "right", "X-Training-Token")
    check_token("right", "right", "X-Training-Token")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An upload base with files, links in and out, a FIFO; secrets beside it."""
    base = tmp_path / "uploads"
    (base / "inbox" / "sub").mkdir(parents=True)
    (base / "inbox" / "a.pdf").write_bytes(INSIDE)
    (base / "inbox" / "sub" / "b.pdf").write_bytes(INSIDE)
    (base / "inbox" / "empty").mkdir()
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "c.pdf").write_bytes(SECRET)
    (tmp_path / "uploads-evil").mkdir()
    (tmp_path / "uploads-evil" / "d.pdf").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", base / "inbox" / "link-out")
    os.symlink("../../secret.txt", base / "inbox" / "rel-link-out")
    os.symlink(base / "inbox" / "a.pdf", base / "inbox" / "link-in")
    os.symlink(tmp_path / "outside", base / "inbox" / "dirlink-out")
    os.symlink(base / "inbox" / "sub", base / "inbox" / "dirlink-in")
    os.symlink("/dev/zero", base / "inbox" / "dev-zero")
    os.symlink("loop-b", base / "inbox" / "loop-a")
    os.symlink("loop-a", base / "inbox" / "loop-b")
    os.mkfifo(base / "inbox" / "fifo")
    return base


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch, tree: Path) -> Iterator[list[str]]:
    """Every path the reader opens, resolved, so a test can assert none is outside."""
    paths: list[str] = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        where = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        paths.append(os.path.normpath(os.path.join(where, os.fsdecode(path))))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(security.os, "open", recording_open)
    yield paths
    base = os.path.realpath(tree)
    assert all(p == base or p.startswith(base + os.sep) for p in paths), paths


ALLOWED = [
    "inbox/a.pdf", "./inbox/a.pdf", "inbox//a.pdf", "inbox/./a.pdf", "inbox/sub/../a.pdf",
    "inbox/sub/b.pdf", "inbox/link-in", "inbox/dirlink-in/b.pdf", "inbox/empty/../a.pdf",
]

REFUSED: list[tuple[str, type[ServiceError]]] = [
    # climbing out
    ("..", Forbidden), ("../secret.txt", Forbidden), ("../../secret.txt", Forbidden),
    ("inbox/../../secret.txt", Forbidden), ("inbox/./../../secret.txt", Forbidden),
    ("inbox//..//..//secret.txt", Forbidden), ("./../secret.txt", Forbidden),
    ("inbox/sub/../../../secret.txt", Forbidden), ("~/../../secret.txt", Forbidden),
    ("inbox/../../outside/c.pdf", Forbidden), ("../uploads-evil/d.pdf", Forbidden),
    # absolute paths outside the base
    ("/etc/passwd", Forbidden), ("/", Forbidden), ("/proc/self/environ", Forbidden),
    ("/dev/zero", Forbidden), ("/inbox/a.pdf", Forbidden), ("//etc/passwd", Forbidden),
    # links that lead out
    ("inbox/link-out", Forbidden), ("inbox/rel-link-out", Forbidden),
    ("inbox/dirlink-out/c.pdf", Forbidden), ("inbox/dev-zero", Forbidden),
    # encodings are names, not escapes: they do not decode into traversal
    ("%2e%2e/secret.txt", NotFound), ("%252e%252e/secret.txt", NotFound),
    ("..%2fsecret.txt", NotFound), ("..%252fsecret.txt", NotFound),
    ("%2e%2e%2f%2e%2e%2fsecret.txt", NotFound), ("..%c0%afsecret.txt", NotFound),
    ("\\..\\secret.txt", NotFound), ("inbox\\..\\..\\secret.txt", NotFound),
    ("....//secret.txt", NotFound), ("..;/secret.txt", NotFound),
    ("inbox/ａ.pdf", NotFound), ("inbox/A.PDF", NotFound),
    # missing, not a file, loops
    ("inbox/missing.pdf", NotFound), ("inbox/a.pdf/x", NotFound),
    ("inbox/loop-a", Forbidden),
    ("inbox", InvalidInput), ("inbox/", InvalidInput), (".", InvalidInput),
    ("inbox/empty", InvalidInput), ("inbox/fifo", InvalidInput),
    # malformed
    ("", InvalidInput), ("   ", InvalidInput), ("inbox/a.pdf\x00.png", InvalidInput),
    ("\x00", InvalidInput), ("a" * 5000, InvalidInput), ("inbox/" + "x" * 300, InvalidInput),
]


@pytest.mark.parametrize("path", ALLOWED)
def test_files_inside_the_base_are_read(tree: Path, opened: list[str], path: str) -> None:
    assert read_upload_file(tree, path, 1000) == INSIDE


def test_absolute_path_inside_the_base_is_read(tree: Path, opened: list[str]) -> None:
    assert read_upload_file(tree, str(tree / "inbox" / "a.pdf"), 1000) == INSIDE


@pytest.mark.parametrize(("path", "error"), REFUSED, ids=[repr(p)[:40] for p, _ in REFUSED])
def test_attack_paths_are_refused(tree: Path, opened: list[str], path: str,
                                  error: type[ServiceError]) -> None:
    assert len(ALLOWED) + len(REFUSED) >= 40
    with pytest.raises(error):
        read_upload_file(tree, path, 1000)


def test_absolute_path_to_the_secret_is_refused(tree: Path, opened: list[str]) -> None:
    with pytest.raises(Forbidden):
        read_upload_file(tree, str(tree.parent / "secret.txt"), 1000)


def test_file_over_the_limit_is_413(tree: Path) -> None:
    with pytest.raises(PayloadTooLarge):
        read_upload_file(tree, "inbox/a.pdf", 5)


def test_directory_swapped_for_a_link_after_the_check_is_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str]
) -> None:
    """The race: `swap/` is a real directory when checked, a symlink out when opened."""
    (tree / "swap").mkdir()
    (tree / "swap" / "c.pdf").write_bytes(INSIDE)
    check = security.resolve_upload_path

    def check_then_swap(base: Path, user_path: str) -> Path:
        resolved = check(base, user_path)
        (tree / "swap" / "c.pdf").unlink()
        (tree / "swap").rmdir()
        os.symlink(tree.parent / "outside", tree / "swap")
        return resolved

    monkeypatch.setattr(security, "resolve_upload_path", check_then_swap)
    with pytest.raises(Forbidden, match="symbolic link"):
        read_upload_file(tree, "swap/c.pdf", 1000)


def test_file_swapped_for_a_link_after_the_check_is_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str]
) -> None:
    check = security.resolve_upload_path

    def check_then_swap(base: Path, user_path: str) -> Path:
        resolved = check(base, user_path)
        (tree / "inbox" / "a.pdf").unlink()
        os.symlink(tree.parent / "secret.txt", tree / "inbox" / "a.pdf")
        return resolved

    monkeypatch.setattr(security, "resolve_upload_path", check_then_swap)
    with pytest.raises(Forbidden):
        read_upload_file(tree, "inbox/a.pdf", 1000)


PIECES = st.sampled_from(["..", ".", "inbox", "sub", "a.pdf", "link-out", "rel-link-out",
                          "dirlink-out", "dirlink-in", "link-in", "c.pdf", "secret.txt",
                          "%2e%2e", "~", "", "\\..", "outside", "uploads-evil", "d.pdf"])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(PIECES, max_size=8), absolute=st.booleans())
def test_no_generated_path_reads_outside_the_base(tree: Path, parts: list[str],
                                                  absolute: bool) -> None:
    """Whatever the path, the answer is the inside content or a refusal, never the secret."""
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        data = read_upload_file(tree, path, 1000)
    except ServiceError:
        return
    assert data == INSIDE
