"""Configuration from the environment: every option of every command reads ``MAXAGE_*``.

Parse level for all options of all commands (walked from the real parser, so an option
added later is covered or this test says which sample it needs), the rules (the command
line wins, flags take 1/0/true/false, a bad value names its variable, ``--help`` lists
the variables), ``--db-file``, and one real ``maxage serve`` started from variables only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxage.cli import build_parser, env_var, primary_url
from tests.support.launcher import launch, python_m

# Arguments a command needs besides the option under test.
POSITIONALS = {"keys revoke": ["k1"], "config check": ["c.toml"]}
REQUIRED = {"keys create": ["--scopes", "admin"], "deadletters replay": ["--config", "c.toml"]}
# Sample values for options whose type needs a particular form.
SAMPLES = {
    ("cache-server", "--upstream"): "img:=http://127.0.0.1:9/{suffix}",
    ("cache-server", "--token"): "t" * 20,
    ("cache-server", "--port"): "8099",
}
BY_METAVAR = {"SIZE": "3MiB", "DURATION": "250ms", "N": "7"}
BY_TYPE = {"int": "7", "float": "0.5", "_port": "8099", "_positive_int": "7", "_staleness": "2s"}
INTERNAL = {"MAXAGE_SERVE_SETTINGS", "MAXAGE_FAULTS_FILE", "MAXAGE_TEST_SLOW_STORE_SECONDS"}


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAXAGE_"):
            monkeypatch.delenv(name)


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` for every command and action (``keys create``, ``config check``)."""
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in top.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            yield name, sub
        for action in nested:
            for action_name, action_parser in action.choices.items():
                yield f"{name} {action_name}", action_parser


def options() -> list[tuple[str, str]]:
    """Every ``(command, option)`` that reads a variable."""
    out = []
    for command, parser in commands(build_parser()):
        for action in parser._actions:
            if env_var(command, action):
                out.append((command, action.option_strings[-1]))
    return out


def sample(command: str, action: argparse.Action) -> str:
    option = action.option_strings[-1]
    if (command.split()[0], option) in SAMPLES:
        return SAMPLES[(command.split()[0], option)]
    if action.choices:
        return next(str(c) for c in action.choices if c != action.default)
    if action.metavar in BY_METAVAR:
        return BY_METAVAR[str(action.metavar)]
    kind = getattr(action.type, "__name__", "str")
    if kind in BY_TYPE:
        return BY_TYPE[kind]
    assert kind == "str", f"{command} {option}: add a sample value of type {kind} to SAMPLES"
    return "sample-text"


def parse(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        return build_parser().parse_args(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def find(command: str, option: str) -> argparse.Action:
    parser = dict(commands(build_parser()))[command]
    return next(a for a in parser._actions if option in a.option_strings)


def test_every_command_has_options_with_variables() -> None:
    found = {command for command, _ in options()}
    assert {"serve", "cache-server", "check", "keys create", "keys list", "keys revoke",
            "config check"} <= found  # fmt: skip
    assert len(options()) >= 60


@pytest.mark.parametrize(("command", "option"), options())
def test_each_option_reads_its_variable(command: str, option: str) -> None:
    """The variable gives the same value as the flag would."""
    action = find(command, option)
    var = env_var(command, action)
    assert var is not None
    argv = command.split() + POSITIONALS.get(command, [])
    if option not in REQUIRED.get(command, []):
        argv += REQUIRED.get(command, [])
    value = sample(command, action)
    flag = [option] if action.nargs == 0 else [option, value]
    from_flag = getattr(parse(argv + flag), action.dest)
    from_env = getattr(parse(argv, {var: "true" if action.nargs == 0 else value}), action.dest)
    assert from_env == from_flag
    if not action.required:
        assert from_env != getattr(parse(argv), action.dest), "the sample equals the default"


def test_variable_names_follow_the_rule() -> None:
    names: dict[str, dict[str, str]] = {}
    for command, parser in commands(build_parser()):
        for action in parser._actions:
            var = env_var(command, action)
            if var:
                names.setdefault(command, {})[action.option_strings[-1]] = var
    assert names["serve"]["--cache-bytes"] == "MAXAGE_CACHE_BYTES"
    assert names["serve"]["--port"] == "MAXAGE_PORT"
    assert names["serve"]["--pg-schema"] == "MAXAGE_PG_SCHEMA"  # the name tests always used
    assert names["serve"]["--db-file"] == "MAXAGE_DB_FILE"
    # colliding options carry the command's name; two older names are kept
    assert names["cache-server"]["--port"] == "MAXAGE_CACHE_SERVER_PORT"
    assert names["cache-server"]["--token"] == "MAXAGE_CACHE_TOKEN"
    assert names["check"]["--workers"] == "MAXAGE_CHECK_WORKERS"
    assert names["check"]["--api-key"] == "MAXAGE_API_KEY"
    assert names["config check"]["--against"] == "MAXAGE_CONFIG_AGAINST"
    # serve and keys share the primary, the config and the authorization bound
    for command in ("keys create", "keys list", "keys revoke"):
        for option in ("--db", "--db-file", "--data-dir", "--pg-schema"):
            assert names[command][option] == names["serve"][option]
    assert names["keys create"]["--config"] == names["serve"]["--config"]
    assert names["keys revoke"]["--auth-staleness"] == names["serve"]["--auth-staleness"]
    for command, table in names.items():
        assert len(set(table.values())) == len(table), command  # no two options share one
        assert not set(table.values()) & INTERNAL, command


def test_the_command_line_wins() -> None:
    args = parse(["serve", "--port", "9001", "--access-log", "all"],
                 {"MAXAGE_PORT": "9002", "MAXAGE_ACCESS_LOG": "off", "MAXAGE_WORKERS": "3"})  # fmt: skip
    assert (args.port, args.access_log, args.workers) == (9001, "all", 3)
    # a repeatable option: the command line's values replace the variable's
    env = {
        "MAXAGE_CACHE_SERVER_UPSTREAM": "a:=http://127.0.0.1:9/{suffix} b:=http://127.0.0.1:9/{key}"
    }
    assert [u.prefix for u in parse(["cache-server"], env).upstream] == ["a:", "b:"]
    args = parse(["cache-server", "--upstream", "c:=http://127.0.0.1:9/{key}"], env)
    assert [u.prefix for u in args.upstream] == ["c:"]
    # a required option is satisfied by its variable
    assert parse(["keys", "create"], {"MAXAGE_SCOPES": "read:*"}).scopes == "read:*"


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("true", True), ("TRUE", True), ("yes", True), ("0", False),
     ("false", False), ("no", False), ("", False)],
)  # fmt: skip
def test_flags_take_1_0_true_false(text: str, value: bool) -> None:
    assert parse(["serve"], {"MAXAGE_INSECURE_NO_AUTH": text}).insecure_no_auth is value
    assert parse(["check"], {"MAXAGE_CHECK_QUIET": text}).quiet is value


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["serve"], {"MAXAGE_PORT": "eighty"}, "MAXAGE_PORT"),
        (["serve"], {"MAXAGE_CACHE_BYTES": "lots"}, "MAXAGE_CACHE_BYTES"),
        (["serve"], {"MAXAGE_DEADLINE": "0s"}, "MAXAGE_DEADLINE"),
        (["serve"], {"MAXAGE_ACCESS_LOG": "loud"}, "MAXAGE_ACCESS_LOG"),
        (["serve"], {"MAXAGE_FAULT_INJECTION": "maybe"}, "MAXAGE_FAULT_INJECTION"),
        (["cache-server"], {"MAXAGE_CACHE_SERVER_PORT": "70000"}, "MAXAGE_CACHE_SERVER_PORT"),
        (["cache-server"], {"MAXAGE_CACHE_SERVER_UPSTREAM": "nonsense"}, "MAXAGE_CACHE_SERVER_UPSTREAM"),
        (["check"], {"MAXAGE_CHECK_STALENESS": "0ms"}, "MAXAGE_CHECK_STALENESS"),
    ],
)  # fmt: skip
def test_a_bad_value_exits_2_naming_the_variable(
    argv: list[str], env: dict[str, str], says: str
) -> None:
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
        parse(argv, env)
    assert exc.value.code == 2
    assert says in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_a_bad_value_is_harmless_when_the_flag_is_given() -> None:
    assert parse(["serve", "--port", "1234"], {"MAXAGE_PORT": "eighty"}).port == 1234


@pytest.mark.parametrize(
    "command", ["serve", "cache-server", "check", "keys create", "config check"]
)
def test_help_lists_the_variables(command: str) -> None:
    out = subprocess.run(python_m(*command.split(), "--help"), capture_output=True, text=True,
                         timeout=30, env={k: v for k, v in os.environ.items()
                                          if not k.startswith("MAXAGE_")})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "the command line wins" in out.stdout
    parser = dict(commands(build_parser()))[command]
    for action in parser._actions:
        var = env_var(command, action)
        if var:
            assert var in out.stdout, (command, var)


# -- the primary: --db, --db-file, --data-dir ------------------------------------------


def test_db_file_reads_the_url_and_the_command_line_wins(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("postgresql://maxage:s3cret@db.example:5432/prod\n")
    assert primary_url(parse(["serve", "--db-file", str(secret)])) == (
        "postgresql://maxage:s3cret@db.example:5432/prod"
    )
    from_env = parse(["serve"], {"MAXAGE_DB_FILE": str(secret)})
    assert primary_url(from_env).endswith("@db.example:5432/prod")
    # --db on the command line beats MAXAGE_DB_FILE, and --db-file beats MAXAGE_DB
    args = parse(["serve", "--db", f"sqlite:///{tmp_path}/a.db"], {"MAXAGE_DB_FILE": str(secret)})
    assert primary_url(args) == f"sqlite:///{tmp_path}/a.db"
    args = parse(["serve", "--db-file", str(secret)], {"MAXAGE_DB": f"sqlite:///{tmp_path}/a.db"})
    assert primary_url(args).startswith("postgresql://")


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--db", "sqlite:///x.db", "--db-file", "f"], {}, "not both"),
        ([], {"MAXAGE_DB": "sqlite:///x.db", "MAXAGE_DB_FILE": "f"}, "MAXAGE_DB or MAXAGE_DB_FILE"),
        (["--db-file", "/nonexistent/db-url"], {}, "cannot read --db-file"),
        ([], {"MAXAGE_DB_FILE": "/nonexistent/db-url"}, "cannot read MAXAGE_DB_FILE"),
        (["--pg-schema", "Bad-Name"], {}, "--pg-schema"),
    ],
)
def test_primary_option_mistakes_exit_2(argv: list[str], env: dict[str, str], says: str,
                                        tmp_path: Path) -> None:  # fmt: skip
    out = subprocess.run(python_m("serve", *argv), capture_output=True, text=True, timeout=30,
                         cwd=tmp_path, env={**{k: v for k, v in os.environ.items()
                                               if not k.startswith("MAXAGE_")}, **env})  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_an_empty_db_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    from maxage.cli import UsageError

    with pytest.raises(UsageError, match="is empty"):
        primary_url(parse(["serve", "--db-file", str(tmp_path / "empty")]))


def test_data_dir_places_the_default_database(tmp_path: Path) -> None:
    url = primary_url(parse(["serve"], {"MAXAGE_DATA_DIR": str(tmp_path / "data")}))
    assert url == f"sqlite:///{tmp_path / 'data' / 'maxage.db'}"
    assert (tmp_path / "data").is_dir()


# -- a real server from variables only -------------------------------------------------

CONFIG = """
[collections.notes]
max_staleness = "1s"
[collections.notes.schema]
type = "object"
required = ["text"]
[collections.notes.schema.properties.text]
type = "string"
"""


def test_serve_started_from_environment_variables_only(tmp_path: Path) -> None:
    (tmp_path / "notes.toml").write_text(CONFIG)
    env = {
        "MAXAGE_CONFIG": str(tmp_path / "notes.toml"),
        "MAXAGE_DATA_DIR": str(tmp_path / "data"),
        "MAXAGE_PORT": "0",
        "MAXAGE_BODY_LIMIT": "1KiB",
        "MAXAGE_ACCESS_LOG": "all",
        "MAXAGE_MONITOR_SAMPLE": "0",
        "MAXAGE_AUTH": "keys",
    }
    made = subprocess.run(python_m("keys", "create", "--scopes", "read:*,write:*"),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**{k: v for k, v in os.environ.items()
                                  if not k.startswith("MAXAGE_")}, **env})  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    server = launch("serve", env=env, workdir=tmp_path, cwd=tmp_path)
    try:
        assert f"data in {tmp_path / 'data' / 'maxage.db'}" in server.stdout()
        assert "auth keys" in server.stdout()
        with server.client() as http:
            assert http.get("/v1/notes").status_code == 401  # MAXAGE_AUTH=keys
            auth = {"authorization": f"Bearer {secret}"}  # made in the same MAXAGE_DATA_DIR
            created = http.post("/v1/notes", json={"text": "hi"}, headers=auth)
            assert created.status_code == 201, created.text  # MAXAGE_CONFIG: notes exist
            too_big = http.post("/v1/notes", json={"text": "x" * 2000}, headers=auth)
            assert too_big.status_code == 413  # MAXAGE_BODY_LIMIT=1KiB
        assert server.stop() == 0, server.stderr()
        logged = [line for line in server.stderr().splitlines() if "/v1/notes" in line]
        assert any("201" in line for line in logged), server.stderr()  # MAXAGE_ACCESS_LOG=all
    finally:
        server.kill()


# -- packaging: one version, the declared licence ------------------------------------------


def test_one_version_source_and_the_declared_licence() -> None:
    import tomllib

    import maxage

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "version" not in project["project"]  # no second copy to drift
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "maxage.__version__"}
    out = subprocess.run(python_m("--version"), capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == f"maxage {maxage.__version__}"
    assert project["project"]["license"] == "Apache-2.0"
    licence = (root / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert (root / "CHANGELOG.md").read_text().count(f"## [{maxage.__version__}]") == 1
