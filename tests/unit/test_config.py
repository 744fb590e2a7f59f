"""Settings from flags and environment: precedence and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobserver.cli import build_parser
from jobserver.config import (
    ConfigError,
    Settings,
    is_loopback,
    load_settings,
    read_config_file,
)


def settings(
    argv: list[str], env: dict[str, str] | None = None, file: dict[str, str] | None = None
) -> Settings:
    return load_settings(vars(build_parser().parse_args(["serve", *argv])), env or {}, file)


def test_defaults() -> None:
    s = settings([])
    assert (s.db, s.host, s.port, s.concurrency, s.durability) == (
        "jobserver.db", "127.0.0.1", 8000, 16, "full",
    )  # fmt: skip


def test_a_flag_beats_the_environment_which_beats_the_default() -> None:
    env = {"JOBSERVER_PORT": "9001", "JOBSERVER_CONCURRENCY": "4"}
    s = settings(["--port", "9002"], env)
    assert s.port == 9002  # flag
    assert s.concurrency == 4  # environment


def test_repeatable_and_comma_separated_lists() -> None:
    s = settings(["--tasks", "a.tasks", "--tasks", "b.tasks,c.tasks"])
    assert s.tasks == ("a.tasks", "b.tasks", "c.tasks")
    assert settings([], {"JOBSERVER_TASKS": "x, y"}).tasks == ("x", "y")


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--port", "http"], {}, "--port"),
        (["--port", "70000"], {}, "--port"),
        ([], {"JOBSERVER_CONCURRENCY": "0"}, "JOBSERVER_CONCURRENCY"),
        ([], {"JOBSERVER_DURABILITY": "sometimes"}, "JOBSERVER_DURABILITY"),
        (["--grace-period", "-1"], {}, "--grace-period"),
        (["--lease-ttl", "nan"], {}, "--lease-ttl"),
        (["--log-format", "xml"], {}, "--log-format"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings(argv, env)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")


def test_a_config_file_sits_below_the_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "jobserver.toml"
    path.write_text(
        'port = 9100\nconcurrency = 3\ntasks = ["a.tasks", "b.tasks"]\nlog-level = "debug"\n'
    )
    values = read_config_file(str(path))
    s = settings([], {"JOBSERVER_CONCURRENCY": "5"}, values)
    assert s.port == 9100  # file
    assert s.concurrency == 5  # environment beats the file
    assert s.tasks == ("a.tasks", "b.tasks") and s.log_level == "debug"
    assert settings(["--port", "9200"], {}, values).port == 9200  # a flag beats both


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("port = 'http'", r"port \(config file\): must be an integer"),
        ("colour = 'red'", "colour: not a setting"),
        ("port = ", "not valid TOML"),
    ],
)
def test_a_bad_config_file_names_the_setting(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        settings([], {}, read_config_file(str(path)))


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize("secret", ["whsec_!!!", "whsec_", "whsec_a b"])
def test_a_webhook_secret_that_would_sign_with_an_empty_or_garbled_key_is_refused(
    secret: str,
) -> None:
    """base64 left to itself drops what is not base64: `whsec_!!!` signed with an empty key,
    a signature anyone could make."""
    with pytest.raises(ConfigError, match="webhook-secret"):
        settings(["--webhook-secret", secret])
    assert settings(["--webhook-secret", "whsec_c2VjcmV0"]).webhook_secret == "whsec_c2VjcmV0"


def test_signing_keys() -> None:
    from jobserver.signing import signing_key

    assert signing_key("whsec_c2VjcmV0") == b"secret"  # base64, padding optional
    assert signing_key("whsec_c2VjcmV0MQ") == b"secret1"
    assert signing_key("plain text") == b"plain text"
    for bad in ("", "whsec_", "whsec_!!!"):
        with pytest.raises(ValueError):
            signing_key(bad)


def test_external_tasks_are_declared_with_their_queue_and_options() -> None:
    from jobserver.cli import external_tasks

    resize, plain = external_tasks(["resize=images timeout=60 max_retries=5", "mail"])
    assert (resize.name, resize.external_queue, resize.timeout_s, resize.max_retries) == (
        "resize", "images", 60.0, 5,
    )  # fmt: skip
    assert (plain.name, plain.external_queue, plain.timeout_s) == ("mail", "external", None)
    for bad in ("resize colour=red", "resize timeout=soon", "resize timeout=0"):
        with pytest.raises(ValueError, match="timeout"):
            external_tasks([bad])
