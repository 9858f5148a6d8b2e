"""Every example config under ``config/`` loads, so the docs never point at a broken file.

* A file with a top-level ``workers:`` list is a pipeline for ``vumi-like run``:
  ``load_pipeline`` reads it and validates each worker's config.
* Any other file is one worker's config for ``vumi-like worker``. It names its worker
  class in a leading comment line, ``# class: dotted.path.Class`` (the first lines of
  the file, before any YAML), and is validated as that class's config.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vumi_like.cli import load_pipeline, load_worker_class
from vumi_like.config import ConfigError, load_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))

_CLASS_COMMENT = re.compile(r"#\s*class:\s*(?P<path>\S+)\s*$")


def declared_worker_class(path: Path) -> str | None:
    """The ``# class: ...`` of the comment lines that open ``path``, if any."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return None
        match = _CLASS_COMMENT.fullmatch(stripped)
        if match:
            return match["path"]
    return None


def test_there_are_example_configs():
    assert CONFIG_DIR / "quickstart.yaml" in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_config_loads(path: Path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "workers" in data:
        pipeline, workers = load_pipeline(str(path))
        assert workers, f"{path.name}: a pipeline with no workers"
        assert len(workers) == len(pipeline.workers)
        return
    class_path = declared_worker_class(path)
    assert class_path is not None, (
        f"{path.name} is not a pipeline (no top-level 'workers:'), so it must name its "
        "worker class in a leading comment line: '# class: dotted.path.Class'"
    )
    worker_cls = load_worker_class(class_path)
    load_config(worker_cls.config_class, config_file=str(path), environ={})


def test_single_worker_config_is_validated_as_its_declared_class(tmp_path: Path):
    """The convention itself: a config that does not fit its class does not pass."""
    path = tmp_path / "echo.yaml"
    path.write_text(
        "# An echo application on its own.\n"
        "# class: vumi_like.applications.echo.EchoApplication\n"
        "connector_name: echo\n"
        "transport_names: [sms]\n",
        encoding="utf-8",
    )
    assert declared_worker_class(path) == "vumi_like.applications.echo.EchoApplication"
    worker_cls = load_worker_class(declared_worker_class(path) or "")
    with pytest.raises(ConfigError, match="unknown key 'transport_names'"):
        load_config(worker_cls.config_class, config_file=str(path), environ={})
