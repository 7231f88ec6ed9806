"""Doctor looks without touching: no folder, database or secret is created."""

from __future__ import annotations

from pathlib import Path

import keyring
from keyring.backends import fail

from app.config import resolve_config
from app.services.doctor import Status, check_credential_store, check_folder, diagnose
from tests.support.memory_keyring import MemoryKeyring


def test_a_folder_that_does_not_exist_yet_is_fine_and_is_not_created(tmp_path: Path) -> None:
    check = check_folder("data folder", tmp_path / "new" / "school")
    assert check.status is Status.OK
    assert "created on first start" in check.detail
    assert not (tmp_path / "new").exists()


def test_a_folder_under_a_file_cannot_be_used(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    check = check_folder("data folder", tmp_path / "taken" / "school")
    assert check.status is Status.ERROR
    assert "--data-dir" in check.fix


def test_the_credential_store_is_only_read(memory_keyring: MemoryKeyring) -> None:
    assert check_credential_store().status is Status.OK
    assert memory_keyring.entries == {}


def test_no_credential_store_is_a_warning_with_the_fix() -> None:
    keyring.set_keyring(fail.Keyring())
    check = check_credential_store()
    assert check.status is Status.WARNING
    assert "GNOME Keyring" in check.fix


def test_diagnosing_an_untouched_data_folder_leaves_it_untouched(tmp_path: Path) -> None:
    report = diagnose(resolve_config(str(tmp_path / "school"), environ={}))
    assert report.ok
    assert not (tmp_path / "school").exists()
