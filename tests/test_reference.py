from pathlib import Path

from vumi_like.reference import render


def test_configuration_reference_matches_the_config_models():
    page = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert page.read_text() == render(), (
        "docs/configuration.md is stale: run python -m vumi_like.reference > docs/configuration.md"
    )
