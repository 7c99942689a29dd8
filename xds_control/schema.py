"""`xds-control schema`: the JSON Schema of the config file, for editors and CI linters.

The schema is pydantic's, with one correction: durations are validated by
`parse_duration` before pydantic sees a float, so the file may say `5s` or
`250ms` where pydantic's own schema would allow only a number.
`iter_config_fields` lists every key by its dotted path (`backends[].auth.type`);
the README's configuration reference is checked against it, and every key's
description (`Field(description=...)`, what editors show) is the README's
one-line meaning of it.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from xds_control import config as config_module
from xds_control.config import Config, parse_duration

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def duration_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": config_module._DURATION.pattern},
        ],
        "description": "a duration: seconds as a number, or a string such as 250ms, 5s, 1m, 2h",
    }


def _is_duration(field: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in field.metadata)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation holds directly or inside list[...] / X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


@dataclass(frozen=True)
class ConfigField:
    path: str  # e.g. "health.interval", "backends[].auth.type"
    field: FieldInfo
    duration: bool
    section: bool  # a nested model (its keys are listed separately)

    @property
    def required(self) -> bool:
        return self.field.is_required()

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)


def iter_config_fields(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[ConfigField]:
    """Every key of the config file, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        yield ConfigField(path, field, _is_duration(field), bool(nested))
        is_list = typing.get_origin(field.annotation) is list
        for sub in nested:
            yield from iter_config_fields(sub, f"{path}[]." if is_list else f"{path}.")


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the YAML config file."""
    schema = Config.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    models: dict[str, type[BaseModel]] = {}

    def collect(model: type[BaseModel]) -> None:
        if model.__name__ in models:
            return
        models[model.__name__] = model
        for field in model.model_fields.values():
            for sub in _models_in(field.annotation):
                collect(sub)

    collect(Config)
    for name, model in models.items():
        target = schema if model is Config else defs.get(name)
        if target is None:
            continue
        for field_name, field in model.model_fields.items():
            if _is_duration(field):
                prop = target["properties"][field_name]
                keep = {k: prop[k] for k in ("title", "default") if k in prop}
                duration = duration_schema()
                if field.description:
                    duration["description"] = f"{field.description} ({duration['description']})"
                target["properties"][field_name] = {**duration, **keep}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "xds-control config",
        **{k: v for k, v in schema.items() if k != "title"},
    }


@click.command()
@click.option("--indent", type=int, default=2, show_default=True, help="JSON indentation.")
def schema(indent: int) -> None:
    """Print the JSON Schema of the config file."""
    click.echo(json.dumps(config_schema(), indent=indent))
