"""Worker configuration.

* ``models.py``: ``BaseConfig`` (the settings every worker has) and ``ConfigModel``,
  the base of every config model; a worker's config subclasses ``BaseConfig``.
* ``loader.py``: builds a config from a YAML file, the environment and command-line
  flags (in that order of precedence, lowest first), with one-line errors.
* ``describe.py``: the models described for the reference documentation.
"""

from vumi_like.config.describe import ConfigField, describe_config
from vumi_like.config.loader import (
    ENV_CONFIG_FILE,
    ENV_CONFIG_PREFIX,
    add_config_arguments,
    cli_overrides,
    config_from_data,
    config_from_file,
    load_config,
)
from vumi_like.config.models import (
    AmqpConfig,
    AmqpOptions,
    AmqpTimeouts,
    AmqpUrls,
    BaseConfig,
    ConfigError,
    ConfigModel,
    MiddlewareConfig,
    QueueType,
    check_amqp_urls,
    join_amqp_urls,
    split_amqp_urls,
)

__all__ = [
    "ENV_CONFIG_FILE",
    "ENV_CONFIG_PREFIX",
    "AmqpConfig",
    "AmqpOptions",
    "AmqpTimeouts",
    "AmqpUrls",
    "BaseConfig",
    "ConfigError",
    "ConfigField",
    "ConfigModel",
    "MiddlewareConfig",
    "QueueType",
    "add_config_arguments",
    "check_amqp_urls",
    "cli_overrides",
    "config_from_data",
    "config_from_file",
    "describe_config",
    "join_amqp_urls",
    "load_config",
    "split_amqp_urls",
]
