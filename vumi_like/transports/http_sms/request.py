"""The provider request for an outbound message, built from the config's templates.

Placeholder values are the message's (``to_addr``, ``from_addr``, ``content``, empty
when there is none, ``message_id``) and the config's (``username``, ``dlr_url``...).
In the URL they are URL-quoted, so a value cannot add a path segment or a query;
elsewhere they go in as they are, and httpx encodes the query string and form.

Authentication is added here too: basic auth as a header, a bearer token, or a token
in a query parameter. The built request holds secrets: it is sent, never logged.
"""

from __future__ import annotations

from base64 import b64encode
from urllib.parse import quote

import httpx

from vumi_like.messages import Message
from vumi_like.transports.http_sms.config import HttpSmsTransportConfig
from vumi_like.transports.http_sms.templates import render, render_value

__all__ = ["RequestTemplate"]


class RequestTemplate:
    def __init__(self, config: HttpSmsTransportConfig) -> None:
        self.config = config
        self._config_values = {
            name: value
            for name, value in config.placeholder_values().items()
            if value is not None  # the config has checked that no template uses these
        }
        self._auth_headers: dict[str, str] = {}
        self._auth_query: dict[str, str] = {}
        token = config.token.get_secret_value() if config.token is not None else ""
        if config.auth == "basic":
            assert config.username is not None and config.password is not None
            pair = f"{config.username}:{config.password.get_secret_value()}"
            self._auth_headers["Authorization"] = f"Basic {b64encode(pair.encode()).decode()}"
        elif config.auth == "bearer":
            self._auth_headers["Authorization"] = f"Bearer {token}"
        elif config.auth == "query":
            self._auth_query[config.auth_query_param] = token

    def values(self, message: Message) -> dict[str, str]:
        return {
            **self._config_values,
            "to_addr": message.to_addr,
            "from_addr": message.from_addr,
            "content": message.content or "",
            "message_id": message.message_id,
        }

    def build(self, client: httpx.AsyncClient, message: Message) -> httpx.Request:
        config = self.config
        values = self.values(message)
        url = render(config.url, {name: quote(value, safe="") for name, value in values.items()})
        params = {name: render(text, values) for name, text in config.query.items()}
        headers = {name: render(text, values) for name, text in config.headers.items()}
        body = render_value(config.body, values) if config.body else None
        return client.build_request(
            config.method,
            url,
            params={**params, **self._auth_query},
            headers={**headers, **self._auth_headers},
            data=body if config.body_format == "form" else None,
            json=body if config.body_format == "json" else None,
        )
