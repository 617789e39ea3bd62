"""Read template.yaml the way the local runtime needs it: functions, schedules, routes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub...) as plain dicts."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@dataclass(frozen=True)
class Schedule:
    name: str
    expression: str
    timezone: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    authorizer: str | None  # None: public; "default": the API's default authorizer
    scopes: tuple[str, ...]


@dataclass
class Function:
    logical_id: str
    code_uri: Path
    handler: str
    timeout_s: int
    environment: dict[str, Any]
    schedules: list[Schedule] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    custom_resource: bool = False

    @property
    def module_path(self) -> Path:
        return self.code_uri / (self.handler.rsplit(".", 1)[0].replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]


@dataclass
class Template:
    root: Path
    raw: dict[str, Any]
    functions: dict[str, Function]


def find_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "template.yaml").is_file():
            return folder
    raise FileNotFoundError("template.yaml not found here or in any parent folder")


def load(root: Path | None = None) -> Template:
    root = root or find_root()
    raw = yaml.load((root / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506
    globals_fn = raw.get("Globals", {}).get("Function", {})
    resources = raw.get("Resources", {})
    service_tokens = {
        str(res.get("Properties", {}).get("ServiceToken", {}).get("Fn::GetAtt", [""])[0])
        for res in resources.values()
        if str(res.get("Type", "")).startswith("Custom::")
    }
    functions: dict[str, Function] = {}
    for logical_id, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties", {})
        env = {
            **globals_fn.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        fn = Function(
            logical_id=logical_id,
            code_uri=root / props["CodeUri"],
            handler=props.get("Handler", globals_fn.get("Handler", "app.handler")),
            timeout_s=int(props.get("Timeout", globals_fn.get("Timeout", 3))),
            environment=env,
            custom_resource=logical_id in service_tokens,
        )
        for name, event in (props.get("Events") or {}).items():
            ev_props = event.get("Properties", {})
            if event.get("Type") == "ScheduleV2":
                fn.schedules.append(
                    Schedule(
                        name=name,
                        expression=ev_props["ScheduleExpression"],
                        timezone=ev_props.get("ScheduleExpressionTimezone", "UTC"),
                        input=json.loads(ev_props.get("Input") or "{}"),
                    )
                )
            elif event.get("Type") == "HttpApi":
                auth = ev_props.get("Auth", {})
                authorizer = auth.get("Authorizer")
                fn.routes.append(
                    Route(
                        method=str(ev_props["Method"]).upper(),
                        path=ev_props["Path"],
                        authorizer=None if authorizer == "NONE" else authorizer or "default",
                        scopes=tuple(auth.get("AuthorizationScopes", ())),
                    )
                )
        functions[logical_id] = fn
    return Template(root=root, raw=raw, functions=functions)
