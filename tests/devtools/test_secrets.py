"""The local stack's secrets file: generated once, kept, read as a dotenv file (python-dotenv)."""

from __future__ import annotations

import stat
from pathlib import Path

from plantmon_dev.stack import SECRET_NAMES, load_or_create_secrets


def test_the_first_start_generates_every_secret_unquoted_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets.env"
    values = load_or_create_secrets(path)
    assert sorted(values) == sorted(SECRET_NAMES)
    assert all(len(value) >= 24 for value in values.values())
    assert len(set(values.values())) == len(SECRET_NAMES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    # Unquoted NAME=value lines: `grep NAME secrets.env | cut -d= -f2` (docs/operations.md) gives the value.
    assert lines == [f"{name}={values[name]}" for name in SECRET_NAMES]


def test_the_next_start_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    first = load_or_create_secrets(path)
    written = path.read_text()
    assert load_or_create_secrets(path) == first
    assert path.read_text() == written, "nothing rewritten when nothing is missing"


def test_a_hand_edited_file_is_read_as_dotenv_and_only_the_missing_secrets_are_added(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text(
        "# my own values\n"
        "\n"
        "PG_SUPERUSER_PASSWORD = spaced-out\n"
        "export DB_WRITER_PASSWORD=exported\n"
        "DB_ALERTS_PASSWORD='single quoted # not a comment'\n"
        'DB_READER_PASSWORD="double quoted"\n'
        "SENSORS_ADMIN_TOKEN=plain # a comment\n"
        "ALERTS_API_TOKEN=\n"
        "NOT_A_SECRET_OF_OURS\n"
    )
    values = load_or_create_secrets(path)
    assert values["PG_SUPERUSER_PASSWORD"] == "spaced-out"
    assert values["DB_WRITER_PASSWORD"] == "exported"
    assert values["DB_ALERTS_PASSWORD"] == "single quoted # not a comment"
    assert values["DB_READER_PASSWORD"] == "double quoted"
    assert values["SENSORS_ADMIN_TOKEN"] == "plain"
    assert len(values["ALERTS_API_TOKEN"]) >= 24, "an empty value is generated"
    assert "NOT_A_SECRET_OF_OURS" not in values
    assert all(values[name] for name in SECRET_NAMES)
    assert load_or_create_secrets(path) == values, "the rewritten file reads back the same"
    assert "DB_ALERTS_PASSWORD='single quoted # not a comment'" in path.read_text()


def test_a_kept_value_with_quotes_and_backslashes_survives_the_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("PG_SUPERUSER_PASSWORD='it\\'s a \\\\ path'\n")
    values = load_or_create_secrets(path)
    assert values["PG_SUPERUSER_PASSWORD"] == "it's a \\ path"
    assert load_or_create_secrets(path) == values
