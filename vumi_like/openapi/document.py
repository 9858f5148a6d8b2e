"""An HTTP API's OpenAPI document: generated from the routes' models, served two ways.

quart-schema builds the document from each route's request and response models and the
``problems(...)`` it declares (``http.py``). This module sets quart-schema up the same
way for every API (``serve_openapi``), adds what the generic worker routes need to be
documented (``/health``, the token endpoint where the API has one) or hidden
(``/metrics``, which is Prometheus text, and the documents themselves), and renders the
document as YAML for ``/api-docs`` (seed 003's path) beside quart-schema's JSON at
``/openapi.json``. Copies are kept in ``docs/`` (``python -m vumi_like.reference
openapi`` writes the Messaging API's, ``... openapi notifications`` the Notifications
API's); a test keeps them current.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import BaseModel, Field
from quart import Response
from quart_schema import (
    DataSource,
    OpenAPIProvider,
    QuartSchema,
    document_request,
    document_response,
    hide,
    security_scheme,
)
from quart_trio import QuartTrio

from vumi_like.openapi.http import problems

__all__ = [
    "NoContent",
    "OpenApiProvider",
    "document_worker_routes",
    "documentable",
    "openapi_document",
    "serve_openapi",
    "yaml_response",
]


class NoContent(BaseModel):
    """The empty body of a 204 answer (``document_response(NoContent, 204)``)."""


class OpenApiProvider(OpenAPIProvider):
    """quart-schema's document, where a ``NoContent`` answer has no body at all."""

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content"}, {}
        return super().build_response_object(model, headers_model)


Route = Callable[..., Any]


class TokenRequest(BaseModel):
    grant_type: str = Field(description="client_credentials")
    client_id: str | None = Field(default=None, description="Unless sent with HTTP Basic")
    client_secret: str | None = Field(default=None, description="Unless sent with HTTP Basic")
    scope: str | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class Health(BaseModel):
    health: str = Field(description="ok or down")
    components: dict[str, dict[str, Any]]


def documentable(route: Route) -> Route:
    """``route`` as a plain function, so that documentation attributes can be set on it
    (a bound method refuses new attributes)."""

    async def documented(*args: Any, **kwargs: Any) -> Any:
        return await route(*args, **kwargs)

    documented.__name__ = getattr(route, "__name__", "route")
    documented.__doc__ = route.__doc__
    return documented


def serve_openapi(app: QuartTrio, title: str) -> None:
    """Set quart-schema up on ``app``: the document at ``/openapi.json``, no UI, bearer
    tokens required unless a route says otherwise."""
    QuartSchema(
        app,
        openapi_provider_class=OpenApiProvider,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": title, "version": "1"},
        security_schemes={
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}
        },
        security=[{"bearerAuth": []}],
    )


def document_worker_routes(
    app: QuartTrio, token_route: Route | None, api_docs_route: Route
) -> None:
    """Register the token route (if the API issues tokens) and the API-docs route;
    document or hide the worker's own."""
    no_token: list[dict[str, list[str]]] = []
    if token_route is not None:
        token = security_scheme(no_token)(
            document_request(TokenRequest, source=DataSource.FORM)(
                document_response(TokenResponse, 200)(
                    problems(400, 401)(documentable(token_route))
                )
            )
        )
        app.add_url_rule("/oauth/token", "oauth_token", token, methods=["POST"])
    app.add_url_rule("/api-docs", "api_docs", hide(documentable(api_docs_route)), methods=["GET"])
    health = app.view_functions["health"]
    app.view_functions["health"] = security_scheme(no_token)(
        document_response(Health, 200)(document_response(Health, 500)(documentable(health)))
    )
    app.view_functions["metrics"] = hide(documentable(app.view_functions["metrics"]))


def openapi_document(app: QuartTrio) -> dict[str, Any]:
    """The document as plain JSON data (quart-schema's has int keys and defaultdicts)."""
    schema = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    data: dict[str, Any] = json.loads(json.dumps(schema))
    return data


def yaml_response(document: dict[str, Any]) -> Response:
    return Response(yaml.safe_dump(document, sort_keys=False), content_type="application/yaml")
