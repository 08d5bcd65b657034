"""chatd/options.py: each option declared once; twistd options, ServerConfig, docs derived."""

import dataclasses
from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from chatd.options import OPTIONS, Option, OptionError, ServerConfig, markdown, update_readme
from chatd.tap import Options

README = Path(__file__).resolve().parents[1] / "README.md"


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options.config()


def test_every_option_is_a_twistd_option_and_a_config_field_with_its_default():
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    assert fields == {option.attribute for option in OPTIONS}
    parsed, built = parse(), ServerConfig()
    for option in OPTIONS:
        expected = list(option.default) if option.type is list else option.default
        assert getattr(parsed, option.attribute) == expected == getattr(built, option.attribute)
    help_text = str(Options())
    assert all(f"--{option.name}" + ("" if option.type is bool else "=") in help_text
               for option in OPTIONS)


def test_numbers_are_typed_and_bounded_from_the_declaration():
    for option in OPTIONS:
        if option.type not in (int, float):
            continue
        with pytest.raises(UsageError, match=f"--{option.name} must be a"):
            parse(f"--{option.name}", "lots")
        low = option.at_least - 1 if option.at_least is not None else option.above
        with pytest.raises(UsageError, match=f"--{option.name} must be {option.bounds}"):
            parse(f"--{option.name}", str(low))
    assert parse("--flood-rate", "2.5", "--max-line", "256").flood_rate == 2.5
    with pytest.raises(UsageError, match="must be a number"):
        parse("--flood-rate", "inf")


def test_an_option_with_choices_names_them():
    durability = Option("durability", str, "commit", "When a message is acknowledged.",
                        choices=("commit", "relay"))
    assert durability.parse("relay") == "relay"
    assert durability.describe().endswith("Must be one of commit, relay.")
    with pytest.raises(OptionError, match="--durability must be one of commit, relay, not 'x'"):
        durability.parse("x")


def test_repeatable_and_dependent_options():
    assert parse("--admin", "alice", "--admin", "bob").admins == ["alice", "bob"]
    with pytest.raises(UsageError, match="--manhole needs --manhole-keys FILE"):
        parse("--manhole", "tcp:2222")


def test_the_default_listen_address_is_said_in_help_and_readme():
    assert "every network interface" in str(Options())
    assert "every network interface" in README.read_text()


def test_the_readme_lists_every_option_as_declared(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text())
    assert not update_readme(copy), "README is stale: python -m chatd.options --update-readme"
    stale = copy.read_text().replace("--max-line BYTES", "--max-lines BYTES")
    copy.write_text(stale)
    assert update_readme(copy) and copy.read_text() == README.read_text()
    assert markdown() in README.read_text()
