"""``vumi-like vcita``: businesses' access tokens, as an operator sets them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from tests.test_cli import cli_environment, command, user_error, vumi_like
from vumi_like.stores import open_store


async def test_add_token_sets_and_replaces_a_token_without_printing_it(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    added = await vumi_like(
        "vcita", "add-token", "biz-1", "--token", "tok-1", "--tenant", "wa", "--store-url", url
    )
    with trio.fail_after(30):
        replaced = await trio.run_process(
            command("vcita", "add-token", "biz-1", "--tenant", "wa", "--store-url", url),
            stdin=b"tok-2\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=cli_environment(),
        )
    listed = await vumi_like("vcita", "businesses", "--tenant", "wa", "--store-url", url)
    assert added.returncode == 0, added.stderr.decode()
    assert added.stdout.decode().strip() == "biz-1: access token added"
    assert replaced.stdout.decode().strip() == "biz-1: access token replaced"
    assert listed.stdout.decode().split("\t")[0] == "biz-1"
    for result in (added, replaced, listed):
        output = result.stdout + result.stderr
        assert b"tok-1" not in output and b"tok-2" not in output
    async with open_store(url) as store:
        assert await store.vcita_access_token("wa", "biz-1") == "tok-2"
        assert await store.vcita_access_token("other", "biz-1") is None


async def test_an_empty_token_is_one_line_and_exit_code_2(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with trio.fail_after(30):
        result = await trio.run_process(
            command("vcita", "add-token", "biz-1", "--tenant", "wa", "--store-url", url),
            stdin=b"\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=cli_environment(),
        )
    assert isinstance(result, subprocess.CompletedProcess)
    assert "the access token is empty" in user_error(result)


async def test_add_token_needs_the_tenant():
    result = await vumi_like("vcita", "add-token", "biz-1", "--token", "t")
    assert "--tenant" in user_error(result)
