"""The portal's form bodies: strict like the API's write bodies (an unknown field or a field
sent twice is a 400 naming it), checked by the same base model."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field, ValidationError

from iod.connections.schemas import StrictBody
from iod.infra.errors import FieldError, ValidationFailed

CSRF_FIELD = "csrf"
Model = TypeVar("Model", bound=StrictBody)


class Form(StrictBody):
    model_config = ConfigDict(extra="forbid", str_max_length=2000)


class Empty(Form):
    """A button: no fields besides the CSRF token."""


class SignInForm(Form):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1000)
    next: str = Field(default="", max_length=500)


class PasswordForm(Form):
    password: str = Field(max_length=1000)
    passwordAgain: str = Field(max_length=1000)


class OrderForm(Form):
    locationId: str = Field(max_length=64)
    bandwidth: str = Field(max_length=32)
    description: str = Field(default="", max_length=255)
    step: Literal["review", "confirm"] = "review"
    quoteId: str = Field(default="", max_length=64)  # the review's quote (portal/quotes.py)


class ChangeForm(Form):
    bandwidth: str = Field(max_length=32)
    when: Literal["now", "at", "boost"] = "now"
    effectiveDate: str = Field(default="", max_length=40)
    revertAt: str = Field(default="", max_length=40)
    timeZone: str = Field(default="UTC", max_length=64)
    # The form asks for a review (the price) first; its confirm carries the quote.
    step: Literal["review", "confirm"] = "confirm"
    quoteId: str = Field(default="", max_length=64)


class ClientForm(Form):
    name: str  # 1 to 255 characters once stripped: portal/clients.py says so, in one message
    scopes: Literal["read", "read write"] = "read write"


class RotateForm(Form):
    grace: Literal["0", "1h", "24h"] = "0"


class UserForm(Form):
    email: str = Field(max_length=254)
    role: Literal["viewer", "operator", "admin"] = "viewer"


class RoleForm(Form):
    role: Literal["viewer", "operator", "admin"]


def fields_of(items: Iterable[tuple[str, Any]]) -> tuple[dict[str, str], str | None]:
    """A form's fields (a field sent twice is a 400 naming it) and its CSRF token, apart."""
    fields: dict[str, str] = {}
    for key, value in items:
        if not isinstance(value, str):
            raise ValidationFailed.field(f"/{key}", "files are not accepted here")
        if key in fields:
            raise ValidationFailed.field(f"/{key}", "duplicate field; send each field once")
        fields[key] = value
    return fields, fields.pop(CSRF_FIELD, None)


def parse(model: type[Model], fields: dict[str, Any]) -> Model:
    """The form as `model`, or a 400 with one error per field (pointers as in the API)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        known = [name for name in model.model_fields]
        errors = []
        for error in exc.errors():
            loc = [str(p) for p in error.get("loc", ())]
            pointer = "/" + "/".join(loc) if loc else ""
            kind = error.get("type")
            if kind == "extra_forbidden":
                close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
                hint = f"; did you mean `{close[0]}`?" if close else ""
                errors.append(FieldError(pointer, f"unknown field{hint}"))
            elif kind == "missing":
                errors.append(FieldError(pointer, "is required"))
            else:
                message = str(error.get("msg", "is invalid"))  # the API's words (problems.py)
                errors.append(FieldError(pointer, message.removeprefix("Value error, ")))
        detail = "; ".join(f"{e.pointer}: {e.detail}" for e in errors)
        raise ValidationFailed(detail, errors=errors) from None
