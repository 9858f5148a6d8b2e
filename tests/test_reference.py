from pathlib import Path

from vumi_like.reference import render, render_notifications_openapi, render_openapi


def test_configuration_reference_matches_the_config_models():
    page = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert page.read_text() == render(), (
        "docs/configuration.md is stale: run python -m vumi_like.reference > docs/configuration.md"
    )


def test_the_openapi_copy_in_docs_matches_the_api():
    copy = Path(__file__).parent.parent / "docs" / "messaging_api.openapi.json"
    assert copy.read_text() == render_openapi(), (
        "docs/messaging_api.openapi.json is stale: run "
        "python -m vumi_like.reference openapi > docs/messaging_api.openapi.json"
    )


def test_the_notifications_openapi_copy_in_docs_matches_the_api():
    copy = Path(__file__).parent.parent / "docs" / "notifications.openapi.json"
    assert copy.read_text() == render_notifications_openapi(), (
        "docs/notifications.openapi.json is stale: run "
        "python -m vumi_like.reference openapi notifications > docs/notifications.openapi.json"
    )
