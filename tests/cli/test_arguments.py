"""Every wrong command line: one clear message and exit status 2, checked
before anything is opened (so these run in this process, quickly)."""

from __future__ import annotations

import os

import pytest

from chute import __version__
from chute._cli import main

pytestmark = pytest.mark.sync_only

Q = ["sqlite:///q.db", "q"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a command"),
        (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
        (["ls", "sqlite:///q.db", "--nosuchoption"], "unrecognized arguments: --nosuchoption"),
        (["demo", "--jobs", "0"], "must be at least 1, not 0"),
        (["demo", "--jobs", "many"], "not a whole number: 'many'"),
        (["demo", "--max", "-1"], "must not be negative: -1"),
        (["demo", "--fail", "1"], "must be a share from 0 to below 1, not 1"),
        (["demo", "--fail", "x"], "not a number: 'x'"),
        (["worker", "sqlite:///q.db"], "required: NAME, module:function"),
        (["worker", *Q, "nocolon"], "'nocolon': write the handler as module:function"),
        (["worker", *Q, "m:"], "write the handler as module:function"),
        (["worker", *Q, "m:f", "--min", "-1"], "must not be negative"),
        (["worker", *Q, "m:f", "--max", "0"], "must be at least 1"),
        (["worker", *Q, "m:f", "--min", "3", "--max", "2"], "--min 3 is above --max 2"),
        (["worker", *Q, "m:f", "--retry-delay", "-1"], "must be a number of seconds >= 0"),
        (["worker", *Q, "m:f", "--grace", "nan"], "must be a number of seconds >= 0"),
        (["worker", *Q, "m:f", "--grace", "soon"], "not a number of seconds: 'soon'"),
        (["worker", *Q, "m:f", "--codec", "xml"], "invalid choice: 'xml'"),
        (["worker", *Q, "m:f", "--max-deliveries", "3"], "chute configure URL NAME"),
        (["worker", "memory://", "q", "m:f"], "a memory:// queue lives inside one process"),
        (["put", *Q, "{not json"], "not JSON: Expecting property name"),
        (["put", *Q, "text"], "quote a string as"),
        (["put", *Q, "--maxsize", "-1", "1"], "must not be negative"),
        (["put", *Q, "--max-deliveries", "0", "1"], "must be at least 1, not 0"),
        (["put", *Q, "--max-deliveries", "never", "1"], "not a whole number: 'never'"),
        (["inspect", "ftp://x", "q"], "unknown scheme 'ftp'"),
        (["inspect", "jobs.db", "q"], "is not a URL: it needs a scheme"),
        (["inspect", "sqlite://host/q.db", "q"], "a sqlite URL has no host"),
        (["inspect", "redis://localhost:99999/0", "q"], "the port is not a number"),
        (["inspect", "postgresql:///jobs", "q"], "no host (postgresql://user@host:port/database)"),
        (["inspect", "postgresql://localhost", "q"], "no database (postgresql://"),
        (["ls", "postgres://localhost:99999/jobs"], "the port is not a number"),
        (["inspect", "sqlite:///q.db"], "required: NAME"),
        (["inspect", "sqlite:///q.db", ""], "a queue name must not be empty"),
        (["ls"], "required: URL"),
        (["ls", "memory://"], "a memory:// queue lives inside one process"),
        (["dead", *Q, "--requeue", "--purge"], "not allowed with"),
        (["dead", *Q, "--codec", "yaml"], "invalid choice: 'yaml'"),
        (["configure", *Q], "give --maxsize N, --max-deliveries N|none, or both"),
        (["configure", *Q, "--maxsize", "big"], "not a whole number: 'big'"),
        (["configure", *Q, "--max-deliveries", "-2"], "must not be negative"),
        (["bench", "--runs", "0"], "must be at least 1"),
    ],
)
def test_a_wrong_command_line_is_exit_status_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing was opened, nothing created


def test_a_bare_chute_prints_the_help(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    for command in ("demo", "worker", "put", "inspect", "ls", "dead", "configure", "tour"):
        assert f"\n    {command}" in err


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chute {__version__}"
    assert main(["worker", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: chute worker" in out
    assert "URL NAME module:function" in " ".join(out.split())


@pytest.mark.parametrize("command", ["worker", "put", "inspect", "ls", "dead", "configure"])
def test_the_help_names_every_stored_transport(capsys, command):
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for url in ("sqlite:///", "redis://", "postgresql://"):
        assert url in out, (command, url)


@pytest.mark.parametrize(
    "command", ["demo", "worker", "put", "inspect", "ls", "dead", "configure", "bench"]
)
def test_every_argument_has_help(command):
    from chute._cli import parser as cli

    p = cli.build()
    sub = next(a for a in p._actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        assert action.help, (command, action.dest)


def test_a_failure_while_running_is_exit_status_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "sqlite:///missing.db", "q"]) == 1
    assert capsys.readouterr().err == "chute inspect: no file missing.db\n"
