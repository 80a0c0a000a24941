"""Query parameters, bodies and headers of the submit routes, read by hand and documented
from their models.

FastAPI solves each declared parameter with generic machinery that costs the submit routes
more than their Redis round trip (about 40 µs per request for three optional query parameters
and a header, and as much again to read, decode and validate a small JSON body, measured here).
These routes validate each with one Pydantic call instead, the task's arguments and the submit
options by the one validator (``taskgate.validation``), and document them in OpenAPI as FastAPI
would (:func:`openapi_parameters`, :func:`openapi_body`). Validation errors read like FastAPI's
own.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from .. import validation

M = TypeVar("M", bound=BaseModel)


def openapi_parameters(model: type[BaseModel], where: str = "query") -> list[dict[str, Any]]:
    """OpenAPI parameter objects for the fields of ``model`` (for a route's ``openapi_extra``)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        parameter: dict[str, Any] = {"name": name, "in": where, "required": name in required,
                                     "schema": field}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def parse_query(model: type[M], request: Request) -> M:
    """``model`` validated from the request's query string (unknown names are ignored, as
    FastAPI does); a 422 naming each bad parameter otherwise."""
    query = request.query_params
    try:
        return model.model_validate({name: query[name] for name in model.model_fields if name in query})
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("query", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None


async def parse_body(model: type[M], request: Request) -> M:
    """``model`` validated from the request's JSON body, in one pass (pydantic-core parses the
    JSON); a 422 naming each bad field otherwise. Types are strict, as JSON has them: no `true`
    for a number, no `"1"` for a number (``strict_json``). Like FastAPI, only a JSON content
    type is read as JSON: a body a browser may send cross-site without a preflight
    (``text/plain``, forms) never submits a task."""
    kind, _, _ = (request.headers.get("content-type") or "").partition(";")
    kind = kind.strip().lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise RequestValidationError([{"loc": ("body",), "type": "content_type",
                                       "msg": "send the arguments as JSON, with Content-Type: "
                                       "application/json"}])
    return strict_json(model, await request.body())


def strict_json(model: type[M], body: bytes, where: tuple[str | int, ...] = ("body",)) -> M:
    """``model`` validated from JSON ``body`` in strict mode (JSON's own types: a boolean is not
    a number, a string is not a number; strings still make dates, UUIDs and enums), by the one
    validator (``taskgate.validation``); a 422 naming each bad field, under ``where``, otherwise."""
    return cast(M, validation.arguments_json(model, body, where))


def openapi_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """An OpenAPI request body of ``model``, by reference: the model must be among the
    components (taskgate's batch routes put every argument model there)."""
    return {"required": True, "description": description, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
