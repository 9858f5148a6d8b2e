"""``vumi-like db`` and ``vumi-like clients``, and the quick start's pipeline, run as a
user runs them: the real console script in a subprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from tests.applications.messaging_api.harness import webhook_receiver
from tests.test_cli import free_port, running, user_error, vumi_like, write_yaml
from vumi_like.stores import open_store

QUICKSTART = Path(__file__).resolve().parent.parent / "config" / "quickstart.yaml"


async def test_db_upgrade_migrates_once_then_says_up_to_date(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = await vumi_like("db", "upgrade", "--store-url", url)
    second = await vumi_like("db", "upgrade", "--store-url", url)
    assert first.returncode == 0, first.stderr.decode()
    assert "schema upgraded none -> " in first.stdout.decode()
    assert second.returncode == 0
    assert "schema up to date" in second.stdout.decode()


async def test_db_upgrade_with_an_unreachable_database_is_one_line_without_the_password():
    result = await vumi_like(
        "db", "upgrade", "--store-url", "postgresql://vumi:s3cret@127.0.0.1:1/nowhere"
    )
    line = user_error(result, logs=True)
    assert line.startswith("vumi-like: store: ")
    assert "s3cret" not in result.stderr.decode()


async def test_clients_are_added_listed_and_removed(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    added = await vumi_like("clients", "add", "crm", "--tenant", "acme", "--store-url", url)
    chosen = await vumi_like(
        "clients", "add", "erp", "--tenant", "acme", "--secret", "pw-12345", "--store-url", url
    )
    again = await vumi_like("clients", "add", "crm", "--tenant", "other", "--store-url", url)
    listed = await vumi_like("clients", "list", "--store-url", url)
    removed = await vumi_like("clients", "remove", "crm", "--store-url", url)
    not_there = await vumi_like("clients", "remove", "crm", "--store-url", url)

    assert added.returncode == 0, added.stderr.decode()
    assert "client_secret: " in added.stdout.decode()  # generated, shown once
    assert "client_secret" not in chosen.stdout.decode()  # the operator chose it
    assert "exists already" in user_error(again)
    lines = listed.stdout.decode().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["crm", "acme"], ["erp", "acme"]]
    assert "pw-12345" not in listed.stdout.decode()
    assert removed.returncode == 0
    assert "no client 'crm'" in user_error(not_there)


def pipeline_copy(
    source: Path, tmp_path: Path, overrides: dict[str, dict[str, object]] | None = None
) -> tuple[Path, dict[str, int]]:
    """The pipeline file ``source`` with free ports, its store in ``tmp_path``, and each
    worker's config updated with ``overrides[worker name]``."""
    pipeline = yaml.safe_load(source.read_text(encoding="utf-8"))
    ports = {}
    for worker in pipeline["workers"]:
        config = worker["config"]
        if "http_bind" in config:
            ports[worker["name"]] = free_port()
            config["http_bind"] = f"127.0.0.1:{ports[worker['name']]}"
        if "store_url" in config:
            config["store_url"] = f"sqlite:///{tmp_path / 'vumi_like.db'}"
        config.update((overrides or {}).get(worker["name"], {}))
    return write_yaml(tmp_path / source.name, pipeline), ports


async def demo_headers(http: httpx.AsyncClient) -> dict[str, str]:
    """A bearer token of the example configs' demo client, as request headers."""
    token = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("demo", "demo-secret")
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def subscribe_and_send(
    http: httpx.AsyncClient, headers: dict[str, str], hook: str | None, message: dict[str, Any]
) -> str:
    """Subscribe ``hook`` (if given) to every status, send ``message``; its id."""
    if hook is not None:
        subscribed = await http.post("/v1/webhooks", json={"url": hook}, headers=headers)
        assert subscribed.status_code == 201, subscribed.text
    sent = await http.post("/v1/messages", json=message, headers=headers)
    assert sent.status_code == 202, sent.text
    return str(sent.json()["messageId"])


async def wait_for_status(
    http: httpx.AsyncClient, headers: dict[str, str], message_id: str, status: str
) -> dict[str, Any]:
    """``GET /v1/messages/{message_id}`` once it shows ``status``."""
    while True:
        message = (await http.get(f"/v1/messages/{message_id}", headers=headers)).json()
        if message["status"] == status:
            return dict(message)
        await trio.sleep(0.05)


def quickstart_copy(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """config/quickstart.yaml with free ports and its store in ``tmp_path``."""
    return pipeline_copy(QUICKSTART, tmp_path)


async def test_the_quickstart_sends_an_sms_to_delivered_and_posts_the_webhooks(tmp_path: Path):
    path, ports = quickstart_copy(tmp_path)
    api = f"http://127.0.0.1:{ports['api']}"
    with trio.fail_after(60):
        async with (
            webhook_receiver() as receiver,
            running("run", str(path)) as cli,
            httpx.AsyncClient(base_url=api, timeout=10) as http,
        ):
            for name in ("api", "dispatcher", "router", "sms", "email", "web"):
                await cli.wait_for_log(event="worker started", worker=name)
            await cli.wait_for_stdout("client_id=demo client_secret=demo-secret")

            headers = await demo_headers(http)
            sms = {"channel": "sms", "receiver": "+27820000001", "content": "hello"}
            message_id = await subscribe_and_send(http, headers, receiver.hook, sms)
            await receiver.wait_for(lambda _: bool(receiver.of("DELIVERED", message_id)))
            message = (await http.get(f"/v1/messages/{message_id}", headers=headers)).json()
            assert await cli.terminate() == 0, cli.stderr.decode()
    assert message["status"] == "DELIVERED"
    # Each status once; they may arrive in any order (docs/messaging_api.md), but their
    # timestamps say which came first.
    posts = sorted(receiver.posts, key=lambda post: post.body["timestamp"])
    assert [post.body["statusCode"] for post in posts] == ["QUEUED", "SENT", "DELIVERED"]
    assert "Traceback" not in cli.stderr.decode()


async def test_the_notification_registry_is_managed_from_the_command_line(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    common = ("--tenant", "acme", "--store-url", url)
    added = await vumi_like("notifications", "add-user", "bob", "--real-name", "Bob S", *common)
    again = await vumi_like("notifications", "add-user", "bob", "--real-name", "Bob", *common)
    form = await vumi_like(
        "notifications",
        "set-target",
        "xform",
        "1337",
        "--name",
        "Survey",
        "--form-id",
        "s1",
        *common,
    )
    member = await vumi_like(
        "notifications", "set-member", "xform", "1337", "bob", "view", *common
    )
    stranger = await vumi_like(
        "notifications", "set-member", "xform", "1337", "eve", "view", *common
    )
    no_form = await vumi_like(
        "notifications", "set-member", "project", "9", "bob", "admin", *common
    )
    removed = await vumi_like("notifications", "remove-member", "xform", "1337", "bob", *common)
    not_there = await vumi_like("notifications", "remove-member", "xform", "1337", "bob", *common)

    for result in (added, form, member, removed):
        assert result.returncode == 0, result.stderr.decode()
    assert "client_secret: " in added.stdout.decode()
    assert "exists already" in user_error(again)
    assert "no user 'eve'" in user_error(stranger)
    assert "set-target it first" in user_error(no_form)
    assert "is not on xform" in user_error(not_there)
    async with open_store(url) as store:
        user = await store.notification_user("acme", "bob")
        target = await store.notification_target("acme", "xform", "1337")
        secret = added.stdout.decode().split("client_secret: ")[1].split()[0]
        tenant = await store.verify_client("bob", secret)
    assert user is not None and (user.real_name, user.client_id) == ("Bob S", "bob")
    assert target is not None and (target.name, target.form_id, target.members) == (
        "Survey",
        "s1",
        {},
    )
    assert tenant == "acme"  # the user signs in with the secret printed
