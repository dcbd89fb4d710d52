"""``.env.template`` names every variable the compose files use, explains each one, and ships no
working secret: every password and token is a CHANGE_ME placeholder the services refuse."""

from __future__ import annotations

import re

import pytest
from plantmon_common.settings import PlaceholderSecretError, require_secret
from pydantic import SecretStr

from tests.deploy.deploy_files import BASE, ENV_TEMPLATE, PI, SIM, template_values

SECRET_SUFFIXES = ("_PASSWORD", "_TOKEN")
OPTIONAL_SECRETS = {"ALERTS_EVENTHUB_CONNECTION_STRING"}  # empty switches the feature off


def compose_variables() -> set[str]:
    text = "\n".join(path.read_text(encoding="utf-8") for path in (BASE, SIM, PI))
    text = re.sub(r"(^|\s)#.*$", "", text, flags=re.MULTILINE)  # comments
    text = text.replace("$$", "")  # escaped dollars are the container's, not compose's
    return set(re.findall(r"\$\{(\w+)", text)) | set(re.findall(r"\$(\w+)", text))


def optional_compose_variables() -> set[str]:
    """Variables the compose files pass as ``${NAME:-}``: empty or absent, the service's default applies."""
    return set(re.findall(r"\$\{(\w+):-\}", "\n".join(p.read_text(encoding="utf-8") for p in (BASE, SIM, PI))))


def commented_variables() -> set[str]:
    """``# NAME=default`` lines: documented settings the template leaves at the service's default."""
    text = ENV_TEMPLATE.read_text(encoding="utf-8")
    return set(re.findall(r"^# ?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_template_lists_every_variable_the_compose_files_use() -> None:
    # A variable is listed as NAME=value, or, when compose passes it as ${NAME:-}, commented with its default.
    missing = compose_variables() - set(template_values()) - (commented_variables() & optional_compose_variables())
    assert not missing, f"add to .env.template: {sorted(missing)}"


def test_template_has_no_variable_the_compose_files_ignore() -> None:
    unused = set(template_values()) - compose_variables()
    assert not unused, f"not used by any compose file: {sorted(unused)}"


def test_template_names_each_variable_once() -> None:
    names = [
        line.split("=", 1)[0]
        for line in ENV_TEMPLATE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(names) == len(set(names))


def test_every_variable_is_explained_by_a_comment_in_a_group() -> None:
    lines = ENV_TEMPLATE.read_text(encoding="utf-8").splitlines()
    group = None
    explained = False
    for line in lines:
        if line.startswith("# ---"):
            group, explained = line, False
        elif not line.strip():
            explained = False
        elif line.startswith("#"):
            explained = True
        else:
            name = line.split("=", 1)[0]
            assert group is not None, f"{name} is in no group"
            assert explained, f"{name} has no comment above it"


@pytest.mark.parametrize(
    "name", sorted(name for name in template_values() if name.endswith(SECRET_SUFFIXES) or name in OPTIONAL_SECRETS)
)
def test_template_ships_no_working_secret(name: str) -> None:
    value = template_values()[name]
    if name in OPTIONAL_SECRETS:
        assert value == ""
        return
    assert value.startswith("CHANGE_ME_"), f"{name}={value!r} is not a placeholder"
    with pytest.raises(PlaceholderSecretError):
        require_secret(name, SecretStr(value))


def test_template_keeps_the_safe_defaults() -> None:
    values = template_values()
    assert values["OPC_SERVER_DEV_MODE"] == "false"
    assert values["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert values["PROMETHEUS_BIND"] == "127.0.0.1"
    assert values["PGDATABASE"] == "plantmon"
