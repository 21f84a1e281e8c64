"""The API's OpenAPI 3.1 document, built from the routes themselves: each /api/ Route carries
its operation (`operation(...)`: summary, query parameters, body model, answer schema), and the
document adds what every route shares (path parameters, the Bearer token, the role, the error
answers). A route without its operation fails a test; an answer unlike its schema fails another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from monitord.config import API_ROLES
from monitord.runtime.web.api.common import Param
from monitord.runtime.web.routes import Route
from monitord.types import MAX_ID

JSON = "application/json"
NAME = "x-name"
"""Marks a schema the document lists once under components/schemas, by this name."""


def named(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` listed by `name` in the document's components, referred to where it is used
    (clients generate one type per name: Incident, Finding...)."""
    return {**schema, NAME: name}


ERROR = named(
    "Error",
    {
        "type": "object",
        "properties": {"error": {"type": "string", "description": "what was wrong, in one line"}},
        "required": ["error"],
        "additionalProperties": False,
    },
)
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
"""A moment, ISO 8601 with its offset (UTC in the API)."""
TEXT: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
"""Free-form facts (a probe's measurements, a finding's evidence), kept as they were stored."""
ERROR_REASONS = {
    400: "the body is not JSON",
    401: "no valid token: `Authorization: Bearer <token>`",
    403: "the token's role is below the one this needs",
    404: "no such item",
    409: "the item's state does not allow this now (the error says why)",
    413: "the body is over 1 MiB",
    422: "a parameter or the body does not validate (the error names the field)",
    503: "the store does not answer now",
}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: dict[str, Any]) -> dict[str, Any]:
    """A list of `items`."""
    return {"type": "array", "items": items}


def record(**properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these properties, every one present (null where it may be)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def extended(base: dict[str, Any], **properties: dict[str, Any]) -> dict[str, Any]:
    """`base` (a record) with more properties (or others in place of its own), all present."""
    return record(**{**base["properties"], **properties})


def page_of(item: dict[str, Any], cursor: dict[str, Any]) -> dict[str, Any]:
    """A page of a list: its items, and `next`, the `after` that reads the next page (null at
    the end)."""
    return record(items=array(item), next=nullable(cursor))


def operation(
    summary: str,
    *,
    answer: dict[str, Any] | None = None,
    status: int = 200,
    query: Iterable[Param] = (),
    body: type[BaseModel] | dict[str, Any] | None = None,
    refusals: Iterable[int] = (),
    media: str = JSON,
    description: str = "",
) -> dict[str, Any]:
    """The OpenAPI operation of one route: what it answers with `status` (`answer`, a JSON
    Schema of a `media` body), its query parameters, its body (a pydantic model that
    validates it, or a JSON Schema for a handler that reads it itself), and the refusals
    (404, 409) it may answer besides those every route of its kind may."""
    content: dict[str, Any] = {media: {"schema": answer if answer is not None else {}}}
    doc: dict[str, Any] = {
        "summary": summary,
        "responses": {str(status): {"description": summary, "content": content}},
    }
    if description:
        doc["description"] = description
    if query:
        doc["parameters"] = [param.doc() for param in query]
    if body is not None:
        schema = body if isinstance(body, dict) else named(body.__name__, body.model_json_schema())
        doc["requestBody"] = {
            # A body whose every field has a default may be left out.
            "required": bool(schema.get("required")),
            "content": {JSON: {"schema": schema}},
        }
    for refusal in refusals:
        doc["responses"][str(refusal)] = _error(refusal)
    return doc


def _error(status: int) -> dict[str, Any]:
    return {"description": ERROR_REASONS[status], "content": {JSON: {"schema": ERROR}}}


_PATH_PARAM = re.compile(r"\{(\w+)(?::([^{}]*))?\}")


def _path_parameters(path: str) -> list[dict[str, Any]]:
    """The path's `{name}` and `{name:regex}` parts as parameters (ASCII digits only: an id)."""
    params = []
    for name, pattern in _PATH_PARAM.findall(path):
        schema: dict[str, Any] = (
            {"type": "integer", "minimum": 0, "maximum": MAX_ID}
            if pattern == "[0-9]+"
            else {"type": "string", "minLength": 1, "maxLength": 200}
        )
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _full_operation(route: Route) -> dict[str, Any]:
    """A route's operation with what the document adds to each: the role it needs, the path's
    parameters, and every error it may answer."""
    if route.doc is None or route.role is None:
        raise ValueError(f"{route.method} {route.path}: an API route needs a role and its doc")
    doc: dict[str, Any] = {**route.doc, "responses": dict(route.doc["responses"])}
    doc["description"] = (
        f"Needs the `{route.role}` role. " + route.doc.get("description", "")
    ).strip()
    doc["x-role"] = route.role
    path_params = _path_parameters(route.path)
    if path_params:
        doc["parameters"] = path_params + list(route.doc.get("parameters", []))
    errors = [401, 503]
    if route.role != API_ROLES[0]:
        errors.append(403)
    if path_params:
        errors.append(404)
    if "requestBody" in doc:
        errors += [400, 413, 422]
    elif "parameters" in route.doc:
        errors.append(422)
    for status in errors:
        doc["responses"].setdefault(str(status), _error(status))
    return doc


def _hoisted(schema: Any, components: dict[str, Any]) -> Any:
    """`schema` with each named schema in it moved to `components` and referred to instead."""
    if isinstance(schema, list):
        return [_hoisted(item, components) for item in schema]
    if not isinstance(schema, dict):
        return schema
    inner = {key: _hoisted(value, components) for key, value in schema.items() if key != NAME}
    name = schema.get(NAME)
    if name is None:
        return inner
    if components.setdefault(name, inner) != inner:
        raise ValueError(f"two different schemas are named {name}")
    return {"$ref": f"#/components/schemas/{name}"}


def document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API routes among `routes` (those under /api/)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for route in routes:
        if not route.path.startswith("/api/") or route.doc is None:
            continue  # a route without its operation fails a test, not the served document
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        operation = _hoisted(_full_operation(route), schemas)
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "monitord",
            "version": "1",
            "description": (
                "The on-call API of monitord. Every request carries `Authorization: Bearer "
                "<token>` (tokens are made with `monitord token new NAME --role ROLE`); roles: "
                "viewer reads, oncall acknowledges, notifies and resolves, admin accepts risks "
                "and triggers scans. Times are answered in ISO 8601 with their offset, in UTC. "
                "Lists of services, incidents, findings, scans, compliance verdicts and reports "
                "are pages: `limit` (at most 500) and `after`, the `next` of the previous page; "
                "silences and the cluster are whole arrays. HEAD works wherever GET does; a "
                "method a path does not take is a 405 whose `Allow` header lists those it does."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": dict(sorted(paths.items())),
    }
