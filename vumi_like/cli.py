"""``vumi-like``: run workers and look after dead letters.

    vumi-like worker dotted.path.WorkerClass [--config FILE] [--amqp-hostname ...]
    vumi-like run PIPELINE.yaml
    vumi-like dlq list|show ID|replay (ID | --all) [--amqp-url URL] [--amqp-queue-type TYPE]
                  [--queue NAME]
    vumi-like db upgrade [--store-url URL]
    vumi-like clients add CLIENT_ID --tenant TENANT [--secret S] | list | remove CLIENT_ID
    vumi-like notifications add-user USERNAME --real-name NAME --tenant TENANT
                          | set-target TYPE ID --name NAME [--form-id F] --tenant TENANT
                          | set-member TYPE ID USERNAME PERMISSION --tenant TENANT
                          | remove-member TYPE ID USERNAME --tenant TENANT
    vumi-like vcita add-token BUSINESS_UID [--token T] --tenant APP | businesses --tenant APP

Every failure a user can cause (bad class path, bad config, unreachable broker or
Redis, malformed YAML) ends with one line on stderr and exit code 2; a worker that
fails while running exits 1. A traceback is only for bugs.

SIGTERM or SIGINT (Ctrl-C) stops gracefully: consuming stops and in-flight handlers
get ``shutdown_timeout`` to finish. A second signal meanwhile stops at once (exit
130); what was not acked goes back to its queue.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from vumi_like import dlq
from vumi_like.broker import BrokerError, open_broker, open_inspector
from vumi_like.caches import CacheError
from vumi_like.class_paths import ClassPathError, resolve_class
from vumi_like.config import (
    AmqpOptions,
    AmqpUrls,
    ConfigError,
    add_config_arguments,
    cli_overrides,
    config_from_data,
    config_from_file,
    load_config,
)
from vumi_like.logs import LogLevel, configure_logging
from vumi_like.redaction import redact_text
from vumi_like.sentry import configure_error_reporting
from vumi_like.stores import (
    DEFAULT_STORE_URL,
    AlreadyExists,
    MessageStore,
    StoreError,
    current_revision,
    head_revision,
    open_store,
    upgrade,
)
from vumi_like.validation import describe_validation_error
from vumi_like.worker import BaseWorker, run_worker

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report an interrupted command


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def fail(message: str) -> NoReturn:
    print(f"vumi-like: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other user error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog.removeprefix('vumi-like ')}: {message} (see --help)")


def load_worker_class(path: str) -> type[BaseWorker]:
    """The worker class ``path`` names (``package.module.Class``, ``module:Class``, or vumi2's
    class path of a worker that has a counterpart here)."""
    try:
        return resolve_class(path, BaseWorker, what="worker class")
    except ClassPathError as exc:
        raise CliError(str(exc)) from None


class ForcedStop(Exception):
    """A second SIGTERM/SIGINT came during a graceful stop."""


async def _until_signalled(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` on the first SIGTERM/SIGINT; raise ``ForcedStop`` on a second.

    The receiver stays open until the caller cancels this task once the workers have
    stopped, so no signal reaches trio's own handler, which would raise
    KeyboardInterrupt wherever the program happened to be.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if stop.is_set():
                raise ForcedStop(signal.Signals(signum).name)
            stop.set()


# ---------------------------------------------------------------- vumi-like worker


def cmd_worker(argv: Sequence[str]) -> None:
    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in {"-h", "--help"}:
            print("usage: vumi-like worker dotted.path.WorkerClass [--config FILE] [options]")
            print("Run one worker. Options depend on the worker; see --help after the class.")
            return
        fail("worker: give the worker class first, e.g. vumi_like.routers.ToAddressRouter")
    try:
        worker_cls = load_worker_class(argv[0])
    except CliError as exc:
        fail(str(exc))
    parser = ArgumentParser(prog=f"vumi-like worker {argv[0]}")
    parser.add_argument("--config", metavar="FILE", help="YAML config file (or VUMI_CONFIG_FILE)")
    add_config_arguments(parser, worker_cls.config_class)
    args = parser.parse_args(argv[1:])
    try:
        config = load_config(
            worker_cls.config_class,
            config_file=args.config,
            environ=os.environ,
            cli=cli_overrides(args, worker_cls.config_class),
        )
    except ConfigError as exc:
        fail(str(exc))
    configure_logging(config.log_level)
    configure_error_reporting(config.sentry_dsn)

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(_until_signalled, stop)
            await run_worker(worker_cls, config, stop=stop)
            nursery.cancel_scope.cancel()

    _gc_for_workers()
    _run_trio(main)


# ---------------------------------------------------------------- vumi-like run


class PipelineWorker(BaseModel):
    """One worker of a pipeline: its config inline (``config``), or in a file of its own
    (``config_file``, relative to the pipeline's folder), as ``vumi-like worker`` (and
    vumi2) would read it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    class_path: str = Field(alias="class")
    config: dict[str, Any] = Field(default_factory=dict)
    config_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PipelineWorker:
        if self.config and self.config_file is not None:
            raise ValueError(f"worker {self.name!r}: give config or config_file, not both")
        return self


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # One URL, or several nodes of a RabbitMQ cluster (a list, or joined by commas).
    amqp_url: AmqpUrls = "memory://"
    # The shared broker's timeouts and queue type; RabbitMQ only. Workers' own amqp keys
    # are unused.
    amqp: AmqpOptions = AmqpOptions()
    log_level: LogLevel = "INFO"
    # Printed to stdout once every worker is running (how to reach a demo, say).
    banner: str | None = None
    workers: list[PipelineWorker]


def load_pipeline(
    path: str,
) -> tuple[Pipeline, list[tuple[PipelineWorker, type[BaseWorker], Any]]]:
    """Read and validate a pipeline file and every worker's config in it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise CliError(f"cannot read pipeline {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CliError(f"pipeline {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise CliError(f"pipeline {path} must be a mapping with a 'workers' list")
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, subject="pipeline")
        raise CliError(f"pipeline {path}: {problems}") from None
    names = [w.name for w in pipeline.workers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CliError(f"pipeline {path}: duplicate worker names {duplicates}")
    resolved = []
    for worker in pipeline.workers:
        cls = load_worker_class(worker.class_path)
        # A worker in a pipeline shares the pipeline's broker; its own amqp keys are unused.
        amqp_url = pipeline.amqp_url if pipeline.amqp_url.startswith("amqp") else ""
        try:
            if worker.config_file is not None:
                config_file = Path(path).parent / worker.config_file
                config = config_from_file(
                    cls.config_class, str(config_file), overrides={"amqp_url": amqp_url}
                )
            else:
                config = config_from_data(
                    cls.config_class,
                    {"amqp_url": amqp_url, **worker.config},
                    source=f"{path} (worker {worker.name!r})",
                )
        except ConfigError as exc:
            raise CliError(str(exc).removeprefix("config error: ")) from None
        resolved.append((worker, cls, config))
    return pipeline, resolved


def cmd_run(argv: Sequence[str]) -> None:
    parser = ArgumentParser(
        prog="vumi-like run",
        description="Run several workers in one process, sharing one broker "
        "(memory:// by default: no server needed).",
    )
    parser.add_argument(
        "pipeline", help="pipeline YAML: amqp_url, and workers: [{name, class, config}]"
    )
    args = parser.parse_args(argv)
    try:
        pipeline, workers = load_pipeline(args.pipeline)
    except CliError as exc:
        fail(str(exc))
    configure_logging(pipeline.log_level)
    configure_error_reporting(next((c.sentry_dsn for _, _, c in workers if c.sentry_dsn), None))

    async def main() -> None:
        stop = trio.Event()
        broker_cm = open_broker(pipeline.amqp_url, **pipeline.amqp.broker_options())
        async with broker_cm as broker, trio.open_nursery() as nursery:
            await nursery.start(_until_signalled, stop)
            async with trio.open_nursery() as running:
                for spec, cls, config in workers:
                    await running.start(
                        lambda task_status, cls=cls, config=config, name=spec.name: run_worker(
                            cls,
                            config,
                            broker=broker,
                            name=name,
                            stop=stop,
                            task_status=task_status,
                        )
                    )
                if pipeline.banner:
                    print(pipeline.banner.rstrip(), flush=True)
            nursery.cancel_scope.cancel()

    _gc_for_workers()
    _run_trio(main)


# ---------------------------------------------------------------- vumi-like dlq


def cmd_dlq(argv: Sequence[str]) -> None:
    parser = ArgumentParser(prog="vumi-like dlq", description="Inspect and replay dead letters.")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("VUMI_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="broker holding the dead letters (default: $VUMI_AMQP_URL or local guest); "
        "several nodes of a cluster: their URLs separated by commas",
    )
    parser.add_argument(
        "--amqp-queue-type",
        choices=["classic", "quorum"],
        default=os.environ.get("VUMI_AMQP_QUEUE_TYPE", "classic"),
        help="type of the dead-letter queue, as the workers declare it (amqp.queue_type; "
        "default: $VUMI_AMQP_QUEUE_TYPE or classic)",
    )
    parser.add_argument("--queue", default=dlq.DEFAULT_QUEUE, help="dead-letter queue name")
    parser.add_argument(
        "--limit", type=int, default=1000, help="look at this many dead letters at most"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="one line per dead letter: id, source queue, worker, time, error")
    show = sub.add_parser("show", help="everything about one dead letter, body included")
    show.add_argument("id")
    replay = sub.add_parser("replay", help="put dead letters back on the queue they came from")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?")
    which.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    configure_logging("WARNING")

    async def main() -> None:
        async with open_inspector(
            args.amqp_url, dead_letter_queue=args.queue, queue_type=args.amqp_queue_type
        ) as broker:
            if args.action == "list":
                letters = await dlq.list_letters(broker, args.queue, limit=args.limit)
                for letter in letters:
                    print(letter.summary())
                print(f"{len(letters)} dead letter(s) in {args.queue}", file=sys.stderr)
            elif args.action == "show":
                found = await dlq.find_letter(broker, args.queue, args.id, limit=args.limit)
                if found is None:
                    raise CliError(f"no dead letter {args.id!r} in {args.queue}")
                print(found.details())
            else:
                ids = None if args.all else {args.id}
                replayed = await dlq.replay(broker, args.queue, ids, limit=args.limit)
                if not args.all and not replayed:
                    raise CliError(f"no dead letter {args.id!r} in {args.queue}")
                for letter in replayed:
                    print(f"replayed {letter.id} -> {letter.source_queue}")

    _run_trio(main)


# ---------------------------------------------------------------- vumi-like db, clients


def _store_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store-url",
        default=os.environ.get("VUMI_STORE_URL", DEFAULT_STORE_URL),
        help="the message store (default: $VUMI_STORE_URL or %(default)s)",
    )


def cmd_db(argv: Sequence[str]) -> None:
    parser = ArgumentParser(prog="vumi-like db", description="Look after the message store.")
    sub = parser.add_subparsers(dest="action", required=True)
    _store_url_argument(sub.add_parser("upgrade", help="bring the store's schema up to date"))
    args = parser.parse_args(argv)
    configure_logging("WARNING")

    async def main() -> None:
        before, after = await trio.to_thread.run_sync(_upgrade_store, args.store_url)
        if before == after:
            print(f"{redact_text(args.store_url)}: schema up to date ({after})")
        else:
            print(f"{redact_text(args.store_url)}: schema upgraded {before or 'none'} -> {after}")

    _run_trio(main)


def _upgrade_store(url: str) -> tuple[str | None, str]:
    before = current_revision(url)
    upgrade(url)
    return before, head_revision()


def cmd_clients(argv: Sequence[str]) -> None:
    parser = ArgumentParser(
        prog="vumi-like clients", description="OAuth2 clients of the Messaging API."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a client; its secret is printed once")
    add.add_argument("client_id")
    add.add_argument("--tenant", required=True, help="tenant whose data the client works with")
    add.add_argument("--secret", help="the client's secret (default: a new random one)")
    listing = sub.add_parser("list", help="one line per client: id, tenant, created")
    remove = sub.add_parser("remove", help="remove a client; its tokens stop at their expiry")
    remove.add_argument("client_id")
    for action in (add, listing, remove):
        _store_url_argument(action)
    args = parser.parse_args(argv)
    configure_logging("WARNING")

    async def main() -> None:
        async with open_store(args.store_url) as store:
            if args.action == "add":
                secret = args.secret or secrets.token_urlsafe(24)
                try:
                    await store.add_client(args.client_id, args.tenant, secret)
                except AlreadyExists:
                    raise CliError(f"client {args.client_id!r} exists already") from None
                print(f"client_id: {args.client_id}\ntenant: {args.tenant}")
                if not args.secret:
                    print(f"client_secret: {secret}  (shown once; store it now)")
            elif args.action == "list":
                clients = await store.list_clients()
                for client in clients:
                    created = client.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                    print(f"{client.client_id}\t{client.tenant}\t{created}")
                print(f"{len(clients)} client(s)", file=sys.stderr)
            elif not await store.remove_client(args.client_id):
                raise CliError(f"no client {args.client_id!r}")
            else:
                print(f"removed {args.client_id}")

    _run_trio(main)


def cmd_notifications(argv: Sequence[str]) -> None:
    parser = ArgumentParser(
        prog="vumi-like notifications",
        description="The Notifications API's users, forms and projects, and their members.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    user = sub.add_parser(
        "add-user", help="add a user and the OAuth2 client it signs in as (secret shown once)"
    )
    user.add_argument("username")
    user.add_argument("--real-name", required=True)
    user.add_argument("--client-id", help="the user's client id (default: the username)")
    target = sub.add_parser("set-target", help="create or rename a form (xform) or project")
    target.add_argument("target_type", choices=["xform", "project"])
    target.add_argument("target_id")
    target.add_argument("--name", required=True)
    target.add_argument("--form-id", help="a form's form_id")
    member = sub.add_parser("set-member", help="give a user a permission on a form or project")
    member.add_argument("target_type", choices=["xform", "project"])
    member.add_argument("target_id")
    member.add_argument("username")
    member.add_argument("permission", choices=["view", "edit", "admin"])
    remove = sub.add_parser("remove-member", help="take a user off a form or project")
    remove.add_argument("target_type", choices=["xform", "project"])
    remove.add_argument("target_id")
    remove.add_argument("username")
    for action in (user, target, member, remove):
        action.add_argument("--tenant", required=True)
        _store_url_argument(action)
    args = parser.parse_args(argv)
    configure_logging("WARNING")

    async def main() -> None:
        async with open_store(args.store_url) as store:
            await _notifications_action(store, args)

    _run_trio(main)


async def _notifications_action(store: MessageStore, args: argparse.Namespace) -> None:
    tenant = args.tenant
    if args.action == "add-user":
        client_id = args.client_id or args.username
        secret = secrets.token_urlsafe(24)
        if await store.notification_user(tenant, args.username) is not None:
            raise CliError(f"user {args.username!r} exists already")
        try:
            await store.add_client(client_id, tenant, secret)
        except AlreadyExists:
            raise CliError(f"client {client_id!r} exists already") from None
        await store.add_notification_user(tenant, args.username, args.real_name, client_id)
        print(f"username: {args.username}\nclient_id: {client_id}\ntenant: {tenant}")
        print(f"client_secret: {secret}  (shown once; store it now)")
    elif args.action == "set-target":
        await store.set_notification_target(
            tenant, args.target_type, args.target_id, args.name, args.form_id
        )
        print(f"{args.target_type} {args.target_id}: {args.name}")
    elif args.action == "set-member":
        if await store.notification_target(tenant, args.target_type, args.target_id) is None:
            raise CliError(f"no {args.target_type} {args.target_id!r}: set-target it first")
        if await store.notification_user(tenant, args.username) is None:
            raise CliError(f"no user {args.username!r}: add-user it first")
        await store.set_notification_member(
            tenant, args.target_type, args.target_id, args.username, args.permission
        )
        print(f"{args.username}: {args.permission} on {args.target_type} {args.target_id}")
    elif not await store.remove_notification_member(
        tenant, args.target_type, args.target_id, args.username
    ):
        raise CliError(f"{args.username!r} is not on {args.target_type} {args.target_id!r}")
    else:
        print(f"removed {args.username} from {args.target_type} {args.target_id}")


def cmd_vcita(argv: Sequence[str]) -> None:
    parser = ArgumentParser(
        prog="vumi-like vcita",
        description="The businesses a vcita communication app (VcitaChannelApp) works for.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add-token", help="set a business's VCS access token")
    add.add_argument("business_uid")
    add.add_argument(
        "--token", help="the OAuth access token (default: read from stdin, kept off `ps`)"
    )
    listing = sub.add_parser("businesses", help="one line per business: uid, token set at")
    for action in (add, listing):
        action.add_argument(
            "--tenant", required=True, help="the app's name in the store (its `tenant` key)"
        )
        _store_url_argument(action)
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    token = ""
    if args.action == "add-token":
        token = (args.token if args.token is not None else sys.stdin.readline()).strip()
        if not token:
            fail("the access token is empty")

    async def main() -> None:
        async with open_store(args.store_url) as store:
            if args.action == "add-token":
                new = await store.set_vcita_token(args.tenant, args.business_uid, token)
                print(f"{args.business_uid}: access token {'added' if new else 'replaced'}")
            else:
                for business in await store.list_vcita_businesses(args.tenant):
                    updated = business.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                    print(f"{business.business_uid}\t{updated}")

    _run_trio(main)


# ---------------------------------------------------------------- entry point


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first exception in ``group``, looking inside nested groups (nested nurseries)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


# Collections of the youngest generation start after this many net allocations (the
# interpreter's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def _gc_for_workers() -> None:
    """Tune the cyclic garbage collector for workers that run for days.

    Everything imported by now (the worker classes and their libraries: some 136,000
    objects) lives as long as the process. Frozen, it is left out of the collector's
    full passes, each of which walked it all: up to 0.3 s at a time in a worker under
    load, and most of the collector's time. And the youngest generation is collected
    after ``GC_YOUNG_THRESHOLD`` net allocations rather than 700: reference counting
    frees nearly all of a message's objects anyway, so frequent passes found little.
    """
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _run_trio(main: Callable[[], Any]) -> None:
    try:
        trio.run(main)
    except* (CliError, ConfigError) as group:
        fail(str(_first(group)))
    except* BrokerError as group:
        fail(f"broker: {_first(group)}")
    except* CacheError as group:
        fail(f"cache: {_first(group)}")
    except* StoreError as group:
        fail(f"store: {_first(group)}")
    except* OSError as group:  # e.g. http_bind address already in use
        fail(str(_first(group)))
    except* ForcedStop as group:
        interrupted(f"stopped at once on a second {_first(group)}")
    except* KeyboardInterrupt:
        interrupted("interrupted")


def interrupted(message: str) -> NoReturn:
    print(f"vumi-like: {message}; what was not acked goes back to its queue", file=sys.stderr)
    raise SystemExit(EXIT_INTERRUPTED)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "worker": cmd_worker,
    "run": cmd_run,
    "dlq": cmd_dlq,
    "db": cmd_db,
    "clients": cmd_clients,
    "notifications": cmd_notifications,
    "vcita": cmd_vcita,
}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__.strip())
        return
    command = COMMANDS.get(argv[0])
    if command is None:
        fail(f"unknown command {argv[0]!r}: use one of {', '.join(COMMANDS)}")
    try:
        command(argv[1:])
    except KeyboardInterrupt:  # Ctrl-C outside the signal receiver: starting or exiting
        interrupted("interrupted")


if __name__ == "__main__":
    main()
