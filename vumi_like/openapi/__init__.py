"""What the HTTP APIs share to document themselves: the RFC 7807 problem model and the
``problems(...)`` decorator, paging, and the OpenAPI document served at ``/openapi.json``
and ``/api-docs``."""
