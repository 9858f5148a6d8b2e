"""Config loading: precedence, environment and CLI spelling, errors an operator can act on."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from vumi_like.config import (
    AmqpConfig,
    BaseConfig,
    ConfigError,
    ConfigModel,
    MiddlewareConfig,
    add_config_arguments,
    cli_overrides,
    config_from_data,
    describe_config,
    load_config,
)

SECRET = "hunter2-Zq9"


class TransportConfig(BaseConfig):
    """A worker config with the kinds of fields workers add."""

    transport_name: str
    enabled: bool = True
    transport_names: list[str] = Field(default_factory=list)
    to_address_mappings: dict[str, str] = Field(default_factory=dict)
    auth_token: SecretStr | None = None
    request_timeout: float = 5.0


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str, name: str = "config.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def parse_cli(config_cls, *args: str) -> dict:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, config_cls)
    return cli_overrides(parser.parse_args(list(args)), config_cls)


def config_error(**kwargs) -> str:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        load_config(kwargs.pop("config_cls", BaseConfig), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config error: ")
    return message


# -- defaults and the vumi2 spelling


def test_defaults_are_vumi2s():
    config = load_config(BaseConfig, environ={})
    assert config.amqp == AmqpConfig()
    assert (config.amqp.hostname, config.amqp.port, config.amqp.username) == (
        "127.0.0.1",
        5672,
        "guest",
    )
    assert config.amqp.password.get_secret_value() == "guest"
    assert config.amqp.vhost == "/"
    assert config.amqp_url == ""
    assert config.worker_concurrency == 20
    assert config.http_bind is None
    assert config.log_level == "INFO"
    assert config.middlewares == []
    assert config.sentry_dsn is None
    assert config.shutdown_timeout == 10.0


def test_vumi2_config_file_loads_unchanged(write_config):
    path = write_config(
        """
amqp:
  hostname: localhost
  port: 5672
  username: guest
  password: guest
  vhost: /
worker_concurrency: 10
sentry_dsn: https://key@sentry.io/12345
http_bind: localhost:8000
log_level: debug
middlewares:
  - class_path: vumi2.middlewares.logging.LoggingMiddleware
    enable_for_connectors: [sms]
    inbound_enabled: true
    log_level: debug
"""
    )
    config = load_config(BaseConfig, config_file=path, environ={})
    assert config.amqp.hostname == "localhost"
    assert config.worker_concurrency == 10
    assert config.log_level == "DEBUG"
    [middleware] = config.middlewares
    assert middleware.class_path == "vumi2.middlewares.logging.LoggingMiddleware"
    assert middleware.enable_for_connectors == ["sms"]
    assert middleware.inbound_enabled and not middleware.outbound_enabled
    assert middleware.config == {"log_level": "debug"}


def test_middleware_options_may_also_go_under_config_but_not_both():
    middleware = MiddlewareConfig.model_validate(
        {"class_path": "m.M", "enable_for_connectors": [], "config": {"a": 1}, "b": 2}
    )
    assert middleware.config == {"a": 1, "b": 2}
    message = config_error(
        environ={
            "MIDDLEWARES": '[{"class_path": "m.M", "enable_for_connectors": [],'
            ' "config": {"a": 1}, "a": 2}]'
        }
    )
    assert "middlewares.0" in message
    assert "a set both beside class_path and under config" in message


# -- precedence: file < environment < command line


def test_precedence_file_env_cli_top_level_and_nested(write_config):
    path = write_config(
        "worker_concurrency: 5\namqp:\n  hostname: from-file\n  port: 1111\nlog_level: ERROR\n"
    )
    environ = {"WORKER_CONCURRENCY": "6", "AMQP_HOSTNAME": "from-env", "LOG_LEVEL": "warning"}
    cli = parse_cli(BaseConfig, "--worker-concurrency", "7", "--amqp-hostname", "from-cli")

    file_only = load_config(BaseConfig, config_file=path, environ={})
    assert (file_only.worker_concurrency, file_only.amqp.hostname) == (5, "from-file")

    with_env = load_config(BaseConfig, config_file=path, environ=environ)
    assert (with_env.worker_concurrency, with_env.amqp.hostname) == (6, "from-env")
    assert with_env.log_level == "WARNING"

    with_cli = load_config(BaseConfig, config_file=path, environ=environ, cli=cli)
    assert (with_cli.worker_concurrency, with_cli.amqp.hostname) == (7, "from-cli")
    # Keys a higher source does not mention keep the lower source's value.
    assert with_cli.amqp.port == 1111
    assert with_cli.log_level == "WARNING"


def test_config_file_named_by_environment(write_config):
    path = write_config("worker_concurrency: 3\n")
    config = load_config(BaseConfig, environ={"VUMI_CONFIG_FILE": path})
    assert config.worker_concurrency == 3


def test_config_file_argument_wins_over_environment(write_config):
    path = write_config("worker_concurrency: 3\n")
    config = load_config(
        BaseConfig, config_file=path, environ={"VUMI_CONFIG_FILE": "/does/not/exist.yaml"}
    )
    assert config.worker_concurrency == 3


def test_empty_config_file_means_defaults(write_config):
    path = write_config("# nothing set\n")
    assert load_config(BaseConfig, config_file=path, environ={}) == BaseConfig()


def test_dict_from_environment_replaces_the_files_whole(write_config):
    path = write_config("transport_name: t\nto_address_mappings: {a: '1', b: '2'}\n")
    config = load_config(
        TransportConfig, config_file=path, environ={"TO_ADDRESS_MAPPINGS": '{"c": "3"}'}
    )
    assert config.to_address_mappings == {"c": "3"}


# -- environment spelling


def test_prefix_from_vumi_config_prefix():
    environ = {
        "VUMI_CONFIG_PREFIX": "MYAPP",
        "MYAPP_AMQP_HOSTNAME": "prefixed",
        "MYAPP_WORKER_CONCURRENCY": "4",
        "AMQP_HOSTNAME": "unprefixed-is-ignored",
    }
    config = load_config(BaseConfig, environ=environ)
    assert config.amqp.hostname == "prefixed"
    assert config.worker_concurrency == 4


def test_prefix_with_trailing_underscore_and_lower_case():
    environ = {"VUMI_CONFIG_PREFIX": "myapp_", "MYAPP_AMQP_PORT": "1234"}
    assert load_config(BaseConfig, environ=environ).amqp.port == 1234


def test_unrelated_environment_variables_are_ignored():
    environ = {"PATH": "/bin", "HOME": "/root", "AMQP_HOSTNAMEX": "x", "AMQP": "x", "CI": "true"}
    assert load_config(BaseConfig, environ=environ) == BaseConfig()


def test_underscored_field_names_are_not_mistaken_for_nesting():
    environ = {"WORKER_CONCURRENCY": "9", "AMQP_URL": "amqp://u:p@broker:5673/v"}
    config = load_config(BaseConfig, environ=environ)
    assert config.worker_concurrency == 9
    assert config.amqp_url == "amqp://u:p@broker:5673/v"
    assert config.amqp == AmqpConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("true", True),
        ("1", True),
        ("yes", True),
        ("on", True),
    ],
)
def test_booleans_from_environment(text: str, expected: bool):
    environ = {"TRANSPORT_NAME": "t", "ENABLED": text}
    assert load_config(TransportConfig, environ=environ).enabled is expected


def test_numbers_from_environment():
    environ = {"TRANSPORT_NAME": "t", "REQUEST_TIMEOUT": "2.5", "AMQP_PORT": "5673"}
    config = load_config(TransportConfig, environ=environ)
    assert config.request_timeout == 2.5
    assert config.amqp.port == 5673


def test_lists_and_dicts_from_environment_as_json():
    environ = {
        "TRANSPORT_NAME": "t",
        "TRANSPORT_NAMES": '["sms", "ussd"]',
        "TO_ADDRESS_MAPPINGS": '{"sms": "^\\\\+27"}',
        "MIDDLEWARES": '[{"class_path": "m.M", "enable_for_connectors": ["sms"]}]',
    }
    config = load_config(TransportConfig, environ=environ)
    assert config.transport_names == ["sms", "ussd"]
    assert config.to_address_mappings == {"sms": "^\\+27"}
    assert config.middlewares[0].class_path == "m.M"


def test_empty_environment_value_unsets_an_optional_field(write_config):
    path = write_config("http_bind: 0.0.0.0:8000\n")
    config = load_config(BaseConfig, config_file=path, environ={"HTTP_BIND": ""})
    assert config.http_bind is None


def test_ambiguous_environment_variable_is_an_error():
    class Inner(ConfigModel):
        url: str = ""

    class Clashing(BaseConfig):
        amqp: Inner = Field(default_factory=Inner)

    message = config_error(config_cls=Clashing, environ={"AMQP_URL": "amqp://h"})
    assert "AMQP_URL is ambiguous" in message
    assert "amqp.url" in message and "amqp_url" in message
    # Unset, the clash does not matter.
    assert load_config(Clashing, environ={}).amqp.url == ""


# -- command line


def test_cli_returns_only_flags_given():
    assert parse_cli(BaseConfig) == {}
    assert parse_cli(BaseConfig, "--amqp-port", "5673", "--http-bind", "127.0.0.1:0") == {
        "amqp": {"port": "5673"},
        "http_bind": "127.0.0.1:0",
    }


def test_cli_booleans_are_flag_pairs():
    assert parse_cli(TransportConfig, "--no-enabled") == {"enabled": False}
    assert parse_cli(TransportConfig, "--enabled") == {"enabled": True}
    config = load_config(
        TransportConfig,
        environ={"TRANSPORT_NAME": "t", "ENABLED": "true"},
        cli=parse_cli(TransportConfig, "--no-enabled"),
    )
    assert config.enabled is False


def test_cli_lists_take_json_and_values_are_parsed():
    cli = parse_cli(
        TransportConfig,
        "--transport-name",
        "t",
        "--transport-names",
        '["a", "b"]',
        "--worker-concurrency",
        "3",
        "--request-timeout",
        "0.5",
    )
    config = load_config(TransportConfig, environ={}, cli=cli)
    assert config.transport_names == ["a", "b"]
    assert config.worker_concurrency == 3
    assert config.request_timeout == 0.5


def test_cli_flags_cover_every_nested_field():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, BaseConfig)
    flags = {option for action in parser._actions for option in action.option_strings}
    for expected in (
        "--amqp-hostname",
        "--amqp-port",
        "--amqp-username",
        "--amqp-password",
        "--amqp-vhost",
        "--amqp-url",
        "--worker-concurrency",
        "--http-bind",
        "--log-level",
        "--sentry-dsn",
        "--middlewares",
        "--shutdown-timeout",
    ):
        assert expected in flags
    assert SECRET not in parser.format_help()


# -- errors


def test_unknown_key_in_file_is_named_with_the_file(write_config):
    path = write_config("amqp:\n  hostnme: localhost\n")
    message = config_error(config_file=path)
    assert message == f"config error: unknown key 'amqp.hostnme' in {path}"


def test_unknown_top_level_key_in_file(write_config):
    path = write_config("worker_concurency: 3\n")
    assert "unknown key 'worker_concurency'" in config_error(config_file=path)


def test_bad_value_from_file_names_key_and_file(write_config):
    path = write_config("amqp:\n  port: abc\n")
    message = config_error(config_file=path)
    assert message == f"config error: amqp.port: should be a valid integer, got 'abc' (in {path})"


def test_bad_value_from_environment_names_key_and_variable():
    message = config_error(environ={"AMQP_PORT": "abc"})
    assert message == (
        "config error: amqp.port: should be a valid integer, got 'abc'"
        " (from environment AMQP_PORT)"
    )


def test_bad_value_from_prefixed_environment_names_the_prefixed_variable():
    message = config_error(environ={"VUMI_CONFIG_PREFIX": "APP", "APP_WORKER_CONCURRENCY": "x"})
    assert "worker_concurrency:" in message
    assert "(from environment APP_WORKER_CONCURRENCY)" in message


def test_bad_value_from_cli_names_key_and_flag():
    message = config_error(cli=parse_cli(BaseConfig, "--worker-concurrency", "many"))
    assert message == (
        "config error: worker_concurrency: should be a valid integer, got 'many'"
        " (from command line --worker-concurrency)"
    )


def test_bad_boolean_from_environment():
    message = config_error(
        config_cls=TransportConfig, environ={"TRANSPORT_NAME": "t", "ENABLED": "maybe"}
    )
    assert "enabled: should be a valid boolean, got 'maybe' (from environment ENABLED)" in message


def test_bad_json_from_environment_names_key_and_variable():
    message = config_error(config_cls=TransportConfig, environ={"TRANSPORT_NAMES": "[sms"})
    assert "transport_names: should be JSON" in message
    assert "(from environment TRANSPORT_NAMES)" in message


def test_value_overridden_by_a_higher_source_is_blamed_on_that_source(write_config):
    path = write_config("amqp:\n  port: 1\n  hostname: h\n")
    message = config_error(config_file=path, environ={"AMQP_PORT": "0"})
    assert "amqp.port: should be greater than or equal to 1, got '0'" in message
    assert "(from environment AMQP_PORT)" in message


def test_unknown_key_from_cli_mapping():
    assert "unknown key 'bogus' from command line" in config_error(cli={"bogus": 1})


def test_several_problems_on_one_line(write_config):
    path = write_config("worker_concurrency: 0\nlog_level: LOUD\n")
    message = config_error(config_file=path)
    assert "worker_concurrency: should be greater than or equal to 1" in message
    assert "log_level: should be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in message
    assert "; " in message


def test_malformed_yaml_gives_line_and_column(write_config):
    path = write_config(f"amqp:\n  password: {SECRET}\n  port: [1\nlog_level: INFO\n")
    message = config_error(config_file=path)
    assert message.startswith(f"config error: {path} is not valid YAML: line ")
    assert "column" in message
    assert SECRET not in message


def test_yaml_top_level_must_be_a_mapping(write_config):
    path = write_config("- amqp\n- worker_concurrency\n")
    message = config_error(config_file=path)
    assert (
        message
        == f"config error: {path} should hold a mapping of keys at the top level, not a list"
    )


def test_missing_config_file(tmp_path: Path):
    path = str(tmp_path / "nope.yaml")
    assert config_error(config_file=path) == f"config error: config file {path} does not exist"
    from_env = config_error(environ={"VUMI_CONFIG_FILE": path})
    assert (
        from_env == f"config error: config file {path} does not exist (named by VUMI_CONFIG_FILE)"
    )


def test_missing_required_field_of_a_subclass_is_named():
    message = config_error(config_cls=TransportConfig)
    assert message.startswith("config error: transport_name: is required")
    assert "TRANSPORT_NAME" in message and "--transport-name" in message


def test_missing_required_field_inside_a_list_item(write_config):
    path = write_config("middlewares:\n  - enable_for_connectors: [sms]\n")
    assert "middlewares.0.class_path: is required" in config_error(config_file=path)


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:8000", "0.0.0.0:0", "localhost:80", "[::1]:8080", "unix:/tmp/s.sock"]
)
def test_http_bind_accepts_hypercorn_binds(bind: str):
    assert load_config(BaseConfig, environ={"HTTP_BIND": bind}).http_bind == bind


@pytest.mark.parametrize(
    "bind", ["8000", "localhost", "localhost:http", ":8000", "::1:80", "h:70000"]
)
def test_http_bind_rejects_other_text(bind: str):
    message = config_error(environ={"HTTP_BIND": bind})
    assert message.startswith("config error: http_bind: should be host:port")


def test_log_level_is_case_insensitive_and_checked():
    assert load_config(BaseConfig, environ={"LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert "log_level: should be one of" in config_error(environ={"LOG_LEVEL": "verbose"})


def test_amqp_url_scheme_is_checked():
    assert load_config(BaseConfig, environ={"AMQP_URL": "memory://"}).amqp_url == "memory://"
    message = config_error(environ={"AMQP_URL": f"http://user:{SECRET}@host/"})
    assert "amqp_url: should be an amqp://, amqps:// or memory:// URL" in message
    assert SECRET not in message


def test_config_from_data_names_its_source():
    config = config_from_data(
        TransportConfig, {"transport_name": "sms", "amqp": {"port": 5673}}, source="p.yaml"
    )
    assert (config.transport_name, config.amqp.port) == ("sms", 5673)
    with pytest.raises(ConfigError) as info:
        config_from_data(
            TransportConfig,
            {"transport_name": "sms", "amqp": {"port": "x", "password": SECRET}, "bogus": 1},
            source="p.yaml (worker 'sms')",
        )
    message = str(info.value)
    assert "amqp.port: should be a valid integer, got 'x' (in p.yaml (worker 'sms'))" in message
    assert "unknown key 'bogus' in p.yaml (worker 'sms')" in message
    assert SECRET not in message
    with pytest.raises(ConfigError, match=r"transport_name: is required \(in p.yaml\)$"):
        config_from_data(TransportConfig, {}, source="p.yaml")


# -- secrets


def test_password_never_in_repr_or_str(write_config):
    path = write_config(
        f"amqp:\n  password: {SECRET}\namqp_url: amqp://user:{SECRET}@host/\n"
        f"sentry_dsn: https://{SECRET}@sentry.io/1\n"
    )
    config = load_config(BaseConfig, config_file=path, environ={})
    assert config.amqp.password.get_secret_value() == SECRET
    for text in (
        repr(config),
        str(config),
        f"{config}",
        repr(config.amqp),
        str(config.redacted()),
    ):
        assert SECRET not in text
    assert "amqp://user:***@host/" in repr(config)


def test_subclass_secrets_never_in_repr():
    config = load_config(
        TransportConfig,
        environ={"TRANSPORT_NAME": "t", "AUTH_TOKEN": SECRET},
        cli={"middlewares": [{"class_path": "m", "enable_for_connectors": [], "api_key": SECRET}]},
    )
    assert config.auth_token is not None
    assert config.auth_token.get_secret_value() == SECRET
    assert config.middlewares[0].config == {"api_key": SECRET}
    assert SECRET not in repr(config)
    assert SECRET not in str(config.redacted())


def test_password_never_in_config_errors(write_config):
    path = write_config(f"amqp:\n  password: {SECRET}\n  port: abc\n")
    message = config_error(config_file=path)
    assert "amqp.port: should be a valid integer" in message
    assert SECRET not in message
    # A bad secret value is described, never quoted.
    bad_secret = config_error(cli={"amqp": {"password": [SECRET]}})
    assert bad_secret.startswith("config error: amqp.password: should be a valid string")
    assert SECRET not in bad_secret
    bad_token = config_error(
        config_cls=TransportConfig, environ={"TRANSPORT_NAME": "t"}, cli={"auth_token": [SECRET]}
    )
    assert SECRET not in bad_token


def test_numeric_yaml_password_is_accepted_as_text(write_config):
    path = write_config("amqp:\n  password: 123456\n  vhost: 2\n")
    config = load_config(BaseConfig, config_file=path, environ={})
    assert config.amqp.password.get_secret_value() == "123456"
    assert config.amqp.vhost == "2"


# -- broker URL


def test_broker_url_prefers_amqp_url():
    config = load_config(
        BaseConfig, environ={"AMQP_URL": "amqp://u:p@broker/vh", "AMQP_HOSTNAME": "ignored"}
    )
    assert config.broker_url() == "amqp://u:p@broker/vh"


def test_broker_url_built_from_parts_quotes_the_vhost():
    assert BaseConfig().broker_url() == "amqp://guest:guest@127.0.0.1:5672/%2F"
    amqp = AmqpConfig(
        hostname="rabbit", port=5673, username="me@x", password=SecretStr("p/w:@"), vhost="prod"
    )
    assert amqp.url() == "amqp://me%40x:p%2Fw%3A%40@rabbit:5673/prod"
    assert AmqpConfig(hostname="::1").url() == "amqp://guest:guest@[::1]:5672/%2F"


# -- documentation


def test_describe_config_lists_every_field_for_docs():
    fields = {field.name: field for field in describe_config(TransportConfig)}
    assert list(fields)[:5] == [
        "amqp.hostname",
        "amqp.port",
        "amqp.username",
        "amqp.password",
        "amqp.vhost",
    ]
    assert {"amqp_url", "worker_concurrency", "http_bind", "log_level", "middlewares"} <= set(
        fields
    )
    assert fields["amqp.port"].type == "int"
    assert fields["amqp.port"].default == "5672"
    assert fields["amqp.port"].env == "AMQP_PORT"
    assert fields["amqp.port"].flag == "--amqp-port"
    assert fields["amqp.password"].default == "***"
    assert fields["amqp.hostname"].default == '"127.0.0.1"'
    assert fields["http_bind"].type == "str | None"
    assert fields["middlewares"].type == "list[MiddlewareConfig]"
    assert fields["transport_name"].required and fields["transport_name"].default == ""
    assert not fields["worker_concurrency"].required
    assert fields["worker_concurrency"].description
    assert all(field.description for field in describe_config(BaseConfig))
