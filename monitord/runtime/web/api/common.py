"""What every API handler shares: its Route with its OpenAPI operation, query parameters that
read and document themselves, pagination, bodies validated by pydantic, and refusals as one
JSON line (404 unknown id, 409 not now, 422 bad input naming the field)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from sqlalchemy import select

from monitord.catalogue.validate import ID_LENGTH
from monitord.config import ApiRole
from monitord.errors import UsageError
from monitord.redact import one_line
from monitord.runtime.app import App
from monitord.runtime.web.routes import APP, Route, error_response, in_web_thread
from monitord.textable import UNSTORABLE
from monitord.timeutil import EARLIEST, SHANGHAI, TimeOutOfRange, parse_time
from monitord.types import MAX_ID, MAX_LONG_TEXT, TEXT_CONTROLS

PREFIX = "/api/v1"
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_TEXT = ID_LENGTH
"""The longest text a query parameter may hold: the longest service id the catalogue stores."""

Model = TypeVar("Model", bound=BaseModel)
Result = TypeVar("Result")


class Refusal(Exception):
    """A request the API answers with `status` and a one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _no_controls(text: str) -> str:
    if re.search(f"[{TEXT_CONTROLS}]", text):
        raise ValueError("must not contain control characters")
    return text


_NO_CONTROLS = (
    AfterValidator(_no_controls),
    Field(json_schema_extra={"pattern": f"^[^{TEXT_CONTROLS}]*$"}),
)
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT), *_NO_CONTROLS
]
"""A body's short text (a name, an id): stripped, 1 to 200 characters, no control characters."""
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LONG_TEXT),
    *_NO_CONTROLS,
]
"""A body's text (a reason, a part of a notification): stripped, 1 to 4,000 characters, no
control characters but tabs and newlines."""


TIME_FORMS = (
    "an ISO 8601 time, such as 2026-10-01 or 2026-10-01T08:00 (read as Asia/Shanghai) or "
    "2026-10-01T08:00+08:00"
)
"""The times a body may send, as its refusals and the document say."""


def _beijing_time(value: object) -> object:
    # Read as the command line reads a time (cli.common.time_arg): without an offset, or a date
    # alone, it is Beijing time. A number is refused: pydantic took it as Unix seconds, which
    # neither the command line nor the document knows.
    if isinstance(value, dt.datetime):
        return value  # given in Python, not through JSON
    if not isinstance(value, str):
        raise ValueError(f"expected {TIME_FORMS}, as a string")
    try:
        return parse_time(value)
    except TimeOutOfRange:
        raise ValueError("expected a time from 1970 on") from None
    except ValueError:
        raise ValueError(f"{value!r}: expected {TIME_FORMS}") from None


def _in_range(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:  # a datetime given in Python, not through JSON: as above
        moment = moment.replace(tzinfo=SHANGHAI)
    try:
        utc = moment.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or utc < EARLIEST:
        raise ValueError("expected a time from 1970 on")
    return utc


Moment = Annotated[
    dt.datetime,
    BeforeValidator(_beijing_time),
    AfterValidator(_in_range),
    # Not format: date-time, which wants an offset and refuses the date alone it takes.
    WithJsonSchema({"type": "string", "description": f"{TIME_FORMS}, from 1970 on"}),
]
"""A body's time, from 1970 on (year 1 at +09:00 is no time a clock shows): ISO 8601, read as
Asia/Shanghai without an offset, as the command line reads it."""
OptionalText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_LONG_TEXT), *_NO_CONTROLS
]
"""A body's text that may be left empty (a note)."""


FIELDS_OF_FLAGS = {
    "--note": "note",
    "--at": "at",
    "--out-of-band": "how",
    "--reason": "reason",
    "--until": "until",
}
"""The command line's flags that the stages' refusals begin with, and the body fields an API
client gave them as."""


def in_fields(refusal: UsageError) -> UsageError:
    """The refusal naming the body's field where it names the command line's flag:
    "at: 2030-12-06 00:20: is in the future", not "--at 2030-12-06 00:20: …"."""
    message = str(refusal)
    for flag, field in FIELDS_OF_FLAGS.items():
        for after in (" ", ": "):
            if message.startswith(flag + after):
                return UsageError(f"{field}: {message.removeprefix(flag + after)}")
    return refusal


def not_found(what: str) -> Refusal:
    """A 404 naming what was asked for: "no incident 12"."""
    return Refusal(404, f"no {what}")


def api_route(
    method: str,
    path: str,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    role: ApiRole,
    doc: Mapping[str, Any],
) -> Route:
    """A Route under /api/v1 whose refusals become their status and whose domain errors (an
    incident already acknowledged, a finding's expiry in the past) become 409 with their text.
    A store that does not answer is a 503 for every route (monitord.runtime.web's guards)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as exc:
            return error_response(exc.status, exc.message)
        except UsageError as exc:
            return error_response(409, one_line(str(exc)))

    return Route(method, PREFIX + path, answer, role=role, doc=doc)


async def in_store(request: web.Request, work: Callable[[App], Result]) -> Result:
    """Run `work(app)` (store reads and writes, which block) off the event loop."""
    return await in_web_thread(request, work, request.app[APP])


def reply(body: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(body, status=status)


@dataclass(frozen=True)
class Param:
    """A query parameter: how it is read from a request and how the document describes it."""

    name: str
    description: str
    kind: Literal["text", "int", "bool"] = "text"
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = MAX_ID
    pattern: str = ""
    """The regular expression a text value matches, for the document (the handler checks it)."""

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema."""
        if self.pattern:
            return {"type": "string", "pattern": self.pattern}
        if self.choices:
            return {"type": "string", "enum": list(self.choices)}
        if self.kind == "int":
            return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        if self.kind == "bool":
            return {"type": "boolean"}
        return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}

    def doc(self) -> dict[str, Any]:
        """Its OpenAPI parameter object."""
        return {
            "name": self.name,
            "in": "query",
            "required": False,
            "description": self.description,
            "schema": self.schema(),
        }

    def read(self, request: web.Request) -> Any:
        """Its value in `request` (None when absent), or a 422 naming it."""
        values = request.query.getall(self.name, [])
        if not values:
            return None
        if len(values) > 1:
            raise Refusal(422, f"{self.name}: give it once")
        text = values[0]
        if self.choices:
            if text not in self.choices:
                raise Refusal(422, f"{self.name}: expected one of {', '.join(self.choices)}")
            return text
        if self.kind == "int":
            if (
                not text.isascii()
                or not text.isdigit()
                or not (self.minimum <= int(text) <= self.maximum)
            ):
                raise Refusal(
                    422,
                    f"{self.name}: expected a whole number from {self.minimum} to {self.maximum}",
                )
            return int(text)
        if self.kind == "bool":
            if text not in ("true", "false"):
                raise Refusal(422, f"{self.name}: expected true or false")
            return text == "true"
        if not storable_text(text):
            raise Refusal(
                422, f"{self.name}: expected text of 1 to {MAX_TEXT} characters, without NUL"
            )
        return text


def storable_text(text: str) -> bool:
    """Whether a query's or a path's text can be a value the store holds: 1 to MAX_TEXT
    characters, none UNSTORABLE. Any service id the catalogue keeps is one (a no-break space, a
    tab or U+2028 in it too): a `next` handed out is always taken back, and every service can
    be asked for by its id."""
    return 0 < len(text) <= MAX_TEXT and UNSTORABLE.search(text) is None


LIMIT = Param(
    "limit",
    f"how many items at most (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
    kind="int",
    minimum=1,
    maximum=MAX_LIMIT,
)


@dataclass(frozen=True)
class Page:
    """The page a list request asks for: at most `limit` items after the cursor `after`."""

    limit: int
    after: Any


def page_params(after: Param) -> tuple[Param, Param]:
    """The two parameters of a paginated list, `after` being the list's cursor."""
    return (LIMIT, after)


def read_page(request: web.Request, after: Param) -> Page:
    """The page asked for, or a 422 naming the parameter."""
    return Page(limit=LIMIT.read(request) or DEFAULT_LIMIT, after=after.read(request))


def page_query(model: Any, page: Page, *, newest_first: bool = False, **equal: object) -> Any:
    """The query for one page of `model`'s rows by id (oldest first, or newest first), read one
    past the limit, where each named column equals its value (a None value filters nothing)."""
    key = model.id
    query = select(model).order_by(key.desc() if newest_first else key).limit(page.limit + 1)
    if page.after is not None:
        query = query.where(key < page.after if newest_first else key > page.after)
    for column, value in equal.items():
        if value is not None:
            query = query.where(getattr(model, column) == value)
    return query


def paged(items: list[dict[str, Any]], page: Page, cursor: str = "id") -> dict[str, Any]:
    """A list answer: the items (read one past the limit) and the cursor of the next page."""
    more = len(items) > page.limit
    items = items[: page.limit]
    return {"items": items, "next": items[-1][cursor] if more else None}


def path_id(request: web.Request, what: str) -> int:
    """The numeric `{id}` of the path, or a 404 naming `what` (the router lets only digits in)."""
    text = request.match_info["id"]
    number = int(text)
    if number > MAX_ID:
        raise not_found(f"{what} {text}")
    return number


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, an object (an empty body is {}), or 400 when it is not JSON
    (nested too deeply included) and 422 when it is no object. Every body is read here."""
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise Refusal(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Refusal(422, "body: expected a JSON object")
    return data


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """The request's JSON body as `model` (an empty body is {}), or 400 when it is not JSON and
    422 naming each field that does not validate."""
    data = await read_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refusal(422, _problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    """What pydantic found, one "field: problem" per error: "scope: Field required"."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        # A validator's own ValueError says what was expected; pydantic's prefix adds nothing.
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return one_line("; ".join(problems))
