"""The error answers every app's OpenAPI document lists: what the services really send.

FastAPI documents `422 Validation Error` (schema HTTPValidationError) for every operation
with parameters or a body; our apps never answer 422: `shared.errors` turns a validation
failure into `400 {"errcode": "M_BAD_JSON" | "M_NOT_JSON", "error"}`, `read_json` does the
same for raw bodies, and routes refuse bad parameters with 400 M_INVALID_PARAM /
M_MISSING_PARAM. `document_matrix_errors(app)` (called by `shared.routing.new_app`) makes
`app.openapi()` say so.

Invariants of every document it builds:
- no operation lists 422, and the HTTPValidationError / ValidationError schemas are gone
  (unless something else still refers to them);
- every operation with parameters or a request body lists 400 whose body is the shared
  `MatrixError` schema `{errcode, error}` (further fields allowed, as `MatrixError.extra`);
- a guard middleware of the app (an entry of `app.user_middleware` whose class has an
  `openapi_responses(path) -> {status: description}` classmethod) adds its refusals to the
  operations of the paths it guards, with the same schema: the internal secret's 403 on
  `/_internal/` paths, the messaging API token's 401;
- a response an operation already declares for a status is kept as declared.
"""
from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_NAME = "MatrixError"
REF = {"$ref": f"#/components/schemas/{SCHEMA_NAME}"}
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
BAD_REQUEST = ("Bad request: a parameter or the body is missing, malformed or of the wrong "
               "shape (M_BAD_JSON, M_NOT_JSON, M_INVALID_PARAM, M_MISSING_PARAM, ...)")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class MatrixErrorBody(BaseModel):
    """A Matrix error answer, as `shared.errors.MatrixError.body()` writes it."""
    model_config = ConfigDict(extra="allow", title=SCHEMA_NAME)
    errcode: str = Field(description="Matrix error code, e.g. M_BAD_JSON", examples=["M_BAD_JSON"])
    error: str = Field(description="human-readable explanation")


def error_response(description: str) -> dict:
    """An OpenAPI response object: `description`, a MatrixError JSON body."""
    return {"description": description, "content": {"application/json": {"schema": dict(REF)}}}


def document_matrix_errors(app: FastAPI) -> None:
    """Make `app.openapi()` (and so `/openapi.json`) build FastAPI's document, then apply
    `matrix_errors` to it with the app's guard middleware; cached like FastAPI's own."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = FastAPI.openapi(app)
            guards = [m.cls.openapi_responses for m in app.user_middleware
                      if callable(getattr(m.cls, "openapi_responses", None))]
            app.openapi_schema = matrix_errors(doc, guards)
        return app.openapi_schema

    app.openapi = openapi


def matrix_errors(doc: dict, guards=()) -> dict:
    """`doc` with the module's invariants (changed in place and returned)."""
    used = False
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            added = {}
            if op.get("parameters") or op.get("requestBody"):
                added["400"] = BAD_REQUEST
            for guard in guards:
                added.update(guard(path))
            for status, description in added.items():
                if status not in responses:
                    responses[status] = error_response(description)
            op["responses"] = dict(sorted(responses.items(), key=_status_order))
            used = used or any(r.get("content", {}).get("application/json", {}).get("schema") == REF
                               for r in op["responses"].values())
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        if name in schemas and not _refers_to(doc, name, skip=FASTAPI_VALIDATION_SCHEMAS):
            del schemas[name]
    if used:
        schemas[SCHEMA_NAME] = MatrixErrorBody.model_json_schema()
        doc["components"]["schemas"] = dict(sorted(schemas.items()))
    if not schemas:
        del doc["components"]["schemas"]
    if not doc["components"]:
        del doc["components"]
    return doc


def _status_order(item) -> tuple:
    status = item[0]
    return (0, int(status), "") if status.isdigit() else (1, 0, status)


def _refers_to(doc: dict, name: str, skip=()) -> bool:
    """Whether any part of `doc` but the schemas in `skip` holds a $ref to schema `name`."""
    target = f"#/components/schemas/{name}"

    def walk(node) -> bool:
        if isinstance(node, dict):
            return node.get("$ref") == target or any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False
    rest = {k: v for k, v in doc.items() if k != "components"}
    comps = {k: v for k, v in doc.get("components", {}).items() if k != "schemas"}
    schemas = {k: v for k, v in doc.get("components", {}).get("schemas", {}).items()
               if k not in skip}
    return walk(rest) or walk(comps) or walk(schemas)
