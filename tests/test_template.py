"""template.yaml, checked offline: SAM translation, functions, triggers, routes, events, layer.

No database and no AWS: the SAM translator runs locally with a stub managed-policy map and the
network blocked. Each check is a helper that takes a template path and returns the problems it
finds, so the tests below also run the checks on broken copies of the template to show that
they catch what they claim to.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

from tally.api.app import route_table
from tally.api.deps import ACCESS_KEY
from tally.local import template as template_mod
from tally.local.invoke import load_module
from tests.support import ROOT

TEMPLATE = ROOT / "template.yaml"
BUILD_LAYER = ROOT / ".aws-sam" / "build" / "CommonLayer" / "python"
RUNTIMES = {"python3.12", "python3.13"}
ROLES = {"public", "user", "service", "admin"}
# AWS::Lambda::Function LoggingConfig.ApplicationLogLevel accepts exactly these.
LAMBDA_LOG_LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}
LAYER_PACKAGES = [
    "fastapi",
    "mangum",
    "psycopg",
    "pydantic",
    "aws_lambda_powertools",
    "jwt",
    "pydantic_settings",
]
EM_AARCH64 = 0xB7

Problems = list[str]


# --- loading and translating ------------------------------------------------------------------


def load_raw(path: Path) -> dict[str, Any]:
    """The template as plain data, short-form tags (!Ref...) turned into their long form."""
    raw: dict[str, Any] = yaml.load(path.read_text(), Loader=template_mod._CfnLoader)  # noqa: S506
    return raw


def load_template(path: Path) -> template_mod.Template:
    """Our own loader (the one `tally dev` uses); it reads <folder>/template.yaml."""
    if path.name != "template.yaml":
        raise ValueError(f"the loader reads a file called template.yaml, not {path.name}")
    return template_mod.load(path.parent)


class _OfflinePolicies(ManagedPolicyLoader):
    """The managed-policy map without IAM: only names the template may use by name."""

    def __init__(self) -> None:  # no IAM client
        pass

    def load(self) -> dict[str, str]:
        return {
            "AWSLambdaBasicExecutionRole": (
                "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
            ),
            "AWSXrayWriteOnlyAccess": "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        }


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the template tests must not use the network")


def translate(path: Path, *, uris: Callable[[str], str] | None = None) -> dict[str, Any]:
    """CloudFormation from the SAM template, offline; raises AssertionError listing SAM's errors.

    Local CodeUri/ContentUri folders become S3 URIs first, as `sam package` would do;
    `uris(logical_id)` chooses the object key (different keys stand for different contents).
    """
    raw = load_raw(path)
    for logical_id, resource in raw.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                name = uris(logical_id) if uris else logical_id
                props[key] = f"s3://tally-artifacts/{name}.zip"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        try:
            return transform(raw, {}, _OfflinePolicies())
        except InvalidDocumentException as exc:
            errors = "\n".join(f"  - {cause.message}" for cause in exc.causes)
            raise AssertionError(f"SAM cannot translate {path}:\n{errors}") from exc


def _resources_of(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in cfn["Resources"].items() if r.get("Type") == type_}


def _template_path(path: str) -> str:
    """API Gateway's greedy {name+} is FastAPI's {name} (with a :path converter)."""
    return re.sub(r"\{(\w+)\+\}", r"{\1}", path)


def _app_routes(app: FastAPI) -> dict[tuple[str, str], str | None]:
    """(METHOD, path) -> x-tally-access of every documented route of the app."""
    return {(method, path): access for method, path, access in route_table(app)}


def _http_events(raw: dict[str, Any], logical_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    events = raw["Resources"][logical_id].get("Properties", {}).get("Events") or {}
    for name, event in events.items():
        if event.get("Type") == "HttpApi":
            yield name, event.get("Properties") or {}


def _http_api_auth(raw: dict[str, Any], event_props: dict[str, Any]) -> dict[str, Any]:
    """The Auth block of the AWS::Serverless::HttpApi an HttpApi event is attached to."""
    api_id = event_props.get("ApiId")
    if not (isinstance(api_id, dict) and "Ref" in api_id):
        return {}
    api = raw["Resources"].get(api_id["Ref"]) or {}
    if api.get("Type") != "AWS::Serverless::HttpApi":
        return {}
    auth: dict[str, Any] = (api.get("Properties") or {}).get("Auth") or {}
    return auth


# --- the checks, each on a template path --------------------------------------------------------


def function_problems(path: Path) -> Problems:
    """functions/* folders <-> CodeUri, and every handler is a callable in its app module."""
    tpl = load_template(path)
    problems: Problems = []
    code_uris = {fn.code_uri.resolve(): fn for fn in tpl.functions.values()}
    functions_dir = tpl.root / "functions"
    for folder in sorted(functions_dir.iterdir()):
        hidden = folder.name.startswith((".", "__"))
        if folder.is_dir() and not hidden and folder.resolve() not in code_uris:
            problems.append(f"functions/{folder.name} is not the CodeUri of any function")
    for fn in tpl.functions.values():
        if not fn.code_uri.is_dir():
            problems.append(f"{fn.logical_id}: CodeUri {fn.code_uri} is not a folder")
            continue
        if not fn.module_path.is_file():
            problems.append(f"{fn.logical_id}: handler file {fn.module_path} does not exist")
            continue
        handler = getattr(load_module(fn), fn.handler_name, None)
        if not callable(handler):
            problems.append(f"{fn.logical_id}: {fn.handler} is not a callable in its module")
    return problems


def trigger_problems(path: Path) -> Problems:
    """Each function runs on a ScheduleV2 or HttpApi event, or backs a Custom:: resource."""
    tpl = load_template(path)
    return [
        f"{fn.logical_id} has no schedule, no HTTP route and backs no custom resource"
        for fn in tpl.functions.values()
        if not (fn.schedules or fn.routes or fn.custom_resource)
    ]


def route_problems(path: Path) -> Problems:
    """The template's routes are exactly the routes each function's FastAPI app serves,
    and the API Gateway authorizer matches the access each route declares."""
    tpl = load_template(path)
    problems: Problems = []
    seen: dict[tuple[str, str], str] = {}
    for fn in tpl.functions.values():
        routed = {(r.method, _template_path(r.path)) for r in fn.routes}
        for key in routed:
            if key in seen:
                problems.append(f"{key[0]} {key[1]} is routed to {seen[key]} and {fn.logical_id}")
            seen[key] = fn.logical_id
        if not fn.module_path.is_file():
            continue  # function_problems reports it
        app = getattr(load_module(fn), "app", None)
        if not isinstance(app, FastAPI):
            problems.extend(
                f"{fn.logical_id}: {m} {p} is routed to it but it has no FastAPI app"
                for m, p in sorted(routed)
            )
            continue
        served = _app_routes(app)
        problems.extend(
            f"{fn.logical_id}: its app serves {m} {p}, which the template does not route to it"
            for m, p in sorted(served.keys() - routed)
        )
        problems.extend(
            f"{fn.logical_id}: the template routes {m} {p} to it, but its app does not serve it"
            for m, p in sorted(routed - served.keys())
        )
        for name, props in _http_events(tpl.raw, fn.logical_id):
            key = (str(props.get("Method", "")).upper(), _template_path(props.get("Path", "")))
            if key not in served:
                continue
            problems.extend(_auth_problems(tpl.raw, f"{fn.logical_id}.{name}", props, served[key]))
    return problems


def _auth_problems(
    raw: dict[str, Any], where: str, props: dict[str, Any], access: str | None
) -> Problems:
    if access not in ROLES:
        return [f"{where}: the route declares no valid {ACCESS_KEY} ({access!r})"]
    auth = props.get("Auth") or {}
    api_auth = _http_api_auth(raw, props)
    # An event without Auth.Authorizer gets its API's DefaultAuthorizer.
    authorizer = auth.get("Authorizer", api_auth.get("DefaultAuthorizer"))
    scopes = list(auth.get("AuthorizationScopes") or [])
    if access == "public":
        if authorizer != "NONE":
            return [f"{where}: public route must have Auth.Authorizer NONE, not {authorizer!r}"]
        return []
    problems: Problems = []
    jwt = (api_auth.get("Authorizers") or {}).get(authorizer) or {}
    if authorizer in (None, "NONE") or "JwtConfiguration" not in jwt:
        problems.append(f"{where}: {access} route must use the API's JWT authorizer")
    if scopes != [f"tally/{access}"]:
        problems.append(f"{where}: {access} route needs AuthorizationScopes [tally/{access}]")
    return problems


def event_problems(path: Path) -> Problems:
    """Every events/*.json belongs to a function (named after its CodeUri folder); API events
    name one of that function's routes and custom-resource events one of its resources."""
    tpl = load_template(path)
    by_folder = {fn.code_uri.name: fn for fn in tpl.functions.values()}
    problems: Problems = []
    for event_file in sorted((tpl.root / "events").glob("*.json")):
        stem = event_file.stem
        owners = [f for f in by_folder if stem == f or stem.startswith(f + "_")]
        if not owners:
            problems.append(f"events/{event_file.name} belongs to no function's CodeUri folder")
            continue
        fn = by_folder[max(owners, key=len)]
        event = json.loads(event_file.read_text())
        if isinstance(event, dict) and "routeKey" in event:
            routes = {f"{r.method} {r.path}" for r in fn.routes}
            if event["routeKey"] not in routes:
                problems.append(
                    f"events/{event_file.name}: routeKey {event['routeKey']!r} is not a route "
                    f"of {fn.logical_id}"
                )
        if isinstance(event, dict) and "LogicalResourceId" in event:
            resource = tpl.raw["Resources"].get(event["LogicalResourceId"]) or {}
            token = (resource.get("Properties") or {}).get("ServiceToken")
            if token != {"Fn::GetAtt": [fn.logical_id, "Arn"]}:
                problems.append(
                    f"events/{event_file.name}: {event['LogicalResourceId']} is not a custom "
                    f"resource of {fn.logical_id}"
                )
    return problems


def settings_problems(path: Path) -> Problems:
    """Globals, the common layer, parameters, outputs, schedules and the migration resource."""
    tpl = load_template(path)
    raw, root = tpl.raw, tpl.root
    problems: Problems = []
    glob = raw.get("Globals", {}).get("Function", {})
    resources = raw.get("Resources", {})

    runtime = glob.get("Runtime")
    if runtime not in RUNTIMES:
        problems.append(f"Globals: Runtime {runtime!r} is not one of {sorted(RUNTIMES)}")
    if glob.get("Architectures") != ["arm64"]:
        problems.append(f"Globals: Architectures {glob.get('Architectures')!r} != ['arm64']")
    if glob.get("Tracing") != "Active":
        problems.append(f"Globals: Tracing {glob.get('Tracing')!r} != 'Active'")
    if (glob.get("LoggingConfig") or {}).get("LogFormat") != "JSON":
        problems.append("Globals: LoggingConfig.LogFormat is not JSON")
    if {"Ref": "CommonLayer"} not in (glob.get("Layers") or []):
        problems.append("Globals: Layers does not include !Ref CommonLayer")
    for fn_id in tpl.functions:
        props = resources[fn_id].get("Properties", {})
        for key in ("Runtime", "Architectures", "Layers"):
            if key in props and props[key] != glob.get(key):
                problems.append(f"{fn_id}: overrides the global {key} with {props[key]!r}")

    layer = resources.get("CommonLayer") or {}
    layer_props = layer.get("Properties") or {}
    if layer.get("Type") != "AWS::Serverless::LayerVersion":
        problems.append("CommonLayer is not an AWS::Serverless::LayerVersion")
    build = (layer.get("Metadata") or {}).get("BuildMethod")
    if not (isinstance(build, str) and build.startswith("python3.")) or build != runtime:
        problems.append(f"CommonLayer: Metadata.BuildMethod {build!r} != the runtime {runtime!r}")
    if runtime not in (layer_props.get("CompatibleRuntimes") or []):
        problems.append(f"CommonLayer: CompatibleRuntimes does not include {runtime}")
    if "arm64" not in (layer_props.get("CompatibleArchitectures") or []):
        problems.append("CommonLayer: CompatibleArchitectures does not include arm64")
    if layer_props.get("ContentUri") != "layers/common":
        problems.append(f"CommonLayer: ContentUri {layer_props.get('ContentUri')!r}")
    content = root / "layers" / "common"
    if not (content / "requirements.txt").is_file():
        problems.append("layers/common/requirements.txt is missing")
    package = content / "tally"
    if not package.is_symlink() or package.resolve() != (root / "shared" / "tally").resolve():
        problems.append("layers/common/tally is not a symlink to shared/tally")
    if not (package / "__init__.py").is_file():
        problems.append("layers/common/tally holds no tally package")

    params = raw.get("Parameters") or {}
    for name in ("DatabaseSecretArn", "SubnetIds", "SecurityGroupIds", "Stage"):
        if name not in params:
            problems.append(f"Parameters: {name} is missing")
    if "ApiUrl" not in (raw.get("Outputs") or {}):
        problems.append("Outputs: ApiUrl is missing")

    for fn in tpl.functions.values():
        events = resources[fn.logical_id].get("Properties", {}).get("Events") or {}
        for name, event in events.items():
            if event.get("Type") != "ScheduleV2":
                continue
            props = event.get("Properties") or {}
            if not (props.get("DeadLetterConfig") or {}).get("Arn"):
                problems.append(f"{fn.logical_id}.{name}: schedule without DeadLetterConfig.Arn")
            if not props.get("RetryPolicy"):
                problems.append(f"{fn.logical_id}.{name}: schedule without RetryPolicy")

    migrate = tpl.functions.get("MigrateFunction")
    if migrate is None or not migrate.custom_resource:
        problems.append("no Custom:: resource has MigrateFunction's Arn as its ServiceToken")
    return problems


# --- tests on template.yaml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tpl() -> template_mod.Template:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate(TEMPLATE)


def test_translates_to_cloudformation(cfn: dict[str, Any], tpl: template_mod.Template) -> None:
    leftover = {r["Type"] for r in cfn["Resources"].values() if r["Type"].startswith("AWS::Serv")}
    assert not leftover
    lambdas = _resources_of(cfn, "AWS::Lambda::Function")
    assert set(lambdas) == set(tpl.functions)
    layers = _resources_of(cfn, "AWS::Lambda::LayerVersion")
    assert len(layers) == 1
    (layer_id,) = layers
    for logical_id, fn in lambdas.items():
        props = fn["Properties"]
        assert props["Runtime"] in RUNTIMES, logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
        assert props["LoggingConfig"]["LogFormat"] == "JSON", logical_id
        assert {"Ref": layer_id} in props["Layers"], logical_id
        assert props["Handler"] == tpl.functions[logical_id].handler, logical_id


def test_translated_schedules(cfn: dict[str, Any], tpl: template_mod.Template) -> None:
    schedules = _resources_of(cfn, "AWS::Scheduler::Schedule")
    expected = {
        fn.logical_id + s.name: (fn, s) for fn in tpl.functions.values() for s in fn.schedules
    }
    assert expected, "the template has no scheduled jobs"
    assert set(schedules) == set(expected)
    for logical_id, (fn, schedule) in expected.items():
        props = schedules[logical_id]["Properties"]
        target = props["Target"]
        assert props["ScheduleExpression"] == schedule.expression
        assert target["Arn"] == {"Fn::GetAtt": [fn.logical_id, "Arn"]}
        assert json.loads(target["Input"]) == schedule.input
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 0
        dlq = target["DeadLetterConfig"]["Arn"]
        assert dlq
        # The scheduler's role must be allowed to invoke the function and to fill the DLQ.
        role_id = target["RoleArn"]["Fn::GetAtt"][0]
        statements = [
            s
            for policy in cfn["Resources"][role_id]["Properties"]["Policies"]
            for s in policy["PolicyDocument"]["Statement"]
        ]
        assert {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": dlq} in statements


def test_translated_routes(cfn: dict[str, Any], tpl: template_mod.Template) -> None:
    apis = _resources_of(cfn, "AWS::ApiGatewayV2::Api")
    assert len(apis) == 1
    (api,) = apis.values()
    translated = {}
    for path, operations in api["Properties"]["Body"]["paths"].items():
        for method, op in operations.items():
            uri = op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            target = re.search(r"\$\{(\w+)\.Arn\}", uri)
            assert target, uri
            translated[(method.upper(), path)] = (target.group(1), op["security"])
    expected = {}
    for fn in tpl.functions.values():
        for r in fn.routes:
            security = [{"NONE": []}] if r.authorizer is None else [{r.authorizer: list(r.scopes)}]
            expected[(r.method, r.path)] = (fn.logical_id, security)
    assert expected, "the template has no HTTP routes"
    assert translated == expected

    permissions = [
        p["Properties"]
        for p in _resources_of(cfn, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    for (method, path), (fn_id, _) in expected.items():
        suffix = f"/{method}" + re.sub(r"\{[^}]+\}", "*", path)
        assert any(
            p["FunctionName"] == {"Ref": fn_id} and p["SourceArn"]["Fn::Sub"][0].endswith(suffix)
            for p in permissions
        ), f"no invoke permission for {method} {path} -> {fn_id}"


def test_translated_migrations_resource(cfn: dict[str, Any]) -> None:
    custom = [
        r
        for r in cfn["Resources"].values()
        if r["Type"].startswith("Custom::")
        and r["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["MigrateFunction", "Arn"]}
    ]
    assert len(custom) == 1


def test_functions_match_folders_and_handlers() -> None:
    assert function_problems(TEMPLATE) == []


def test_every_function_has_a_trigger() -> None:
    assert trigger_problems(TEMPLATE) == []


def test_routes_match_the_function_apps_and_their_access() -> None:
    assert route_problems(TEMPLATE) == []


def test_event_files_belong_to_functions() -> None:
    assert any((ROOT / "events").glob("*.json"))
    assert event_problems(TEMPLATE) == []


def test_globals_layer_parameters_outputs_schedules() -> None:
    assert settings_problems(TEMPLATE) == []


def test_layer_requirements_match_the_project_dependencies() -> None:
    def names(lines: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~; ]", line.strip(), maxsplit=1)[0].lower() for line in lines}

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = (ROOT / "layers" / "common" / "requirements.txt").read_text().splitlines()
    listed = names([r for r in requirements if r.strip() and not r.lstrip().startswith("#")])
    # boto3 comes with the Lambda runtime.
    assert listed == names(project["dependencies"]) - {"boto3"}


def test_new_layer_reruns_migrations() -> None:
    """The migrations ship in the layer: a new layer must change the custom resource's
    properties, or CloudFormation sends no Update and the new migrations never run."""

    def migrations_resource(layer_key: str) -> Any:
        cfn = translate(TEMPLATE, uris=lambda lid: layer_key if lid == "CommonLayer" else lid)
        (custom,) = (r for r in cfn["Resources"].values() if r["Type"].startswith("Custom::"))
        return custom["Properties"]

    assert migrations_resource("layer-v1") != migrations_resource("layer-v2")


def test_log_levels_are_valid_for_lambda(tpl: template_mod.Template) -> None:
    """LogLevel feeds ApplicationLogLevel, which takes WARN (not Python's WARNING)."""
    level = tpl.raw["Globals"]["Function"]["LoggingConfig"]["ApplicationLogLevel"]
    if isinstance(level, dict) and "Ref" in level:
        param = tpl.raw["Parameters"][level["Ref"]]
        values = set(param.get("AllowedValues") or []) | {param.get("Default")}
    else:
        values = {level}
    assert values <= LAMBDA_LOG_LEVELS


# --- the checks catch broken templates ----------------------------------------------------------


def _events(raw: dict[str, Any], fn: str) -> dict[str, Any]:
    events: dict[str, Any] = raw["Resources"][fn]["Properties"]["Events"]
    return events


def _drop_get_me(raw: dict[str, Any]) -> None:
    del _events(raw, "PointsApiFunction")["GetMe"]


def _add_unserved_route(raw: dict[str, Any]) -> None:
    extra = copy.deepcopy(_events(raw, "PointsApiFunction")["GetLeaderboard"])
    extra["Properties"]["Path"] = "/api/leaderboard/weekly"
    _events(raw, "PointsApiFunction")["GetWeekly"] = extra


def _move_route(raw: dict[str, Any]) -> None:
    event = _events(raw, "VerificationApiFunction").pop("PostVerification")
    _events(raw, "PointsApiFunction")["PostVerification"] = event


def _protect_public_route(raw: dict[str, Any]) -> None:
    auth = {"Authorizer": "TallyJwt", "AuthorizationScopes": ["tally/user"]}
    _events(raw, "PointsApiFunction")["GetUser"]["Properties"]["Auth"] = auth


def _open_user_route(raw: dict[str, Any]) -> None:
    _events(raw, "PointsApiFunction")["GetMe"]["Properties"]["Auth"] = {"Authorizer": "NONE"}


def _wrong_scope(raw: dict[str, Any]) -> None:
    props = _events(raw, "VerificationApiFunction")["ListFlags"]["Properties"]
    props["Auth"]["AuthorizationScopes"] = ["tally/service"]


def _default_authorizer_without_scope(raw: dict[str, Any]) -> None:
    del _events(raw, "VerificationApiFunction")["ListFlags"]["Properties"]["Auth"]


def _no_trigger(raw: dict[str, Any]) -> None:
    del raw["Resources"]["AwardPointsFunction"]["Properties"]["Events"]


def _no_dead_letters(raw: dict[str, Any]) -> None:
    del _events(raw, "AwardPointsFunction")["EveryMinute"]["Properties"]["DeadLetterConfig"]


def _passive_tracing(raw: dict[str, Any]) -> None:
    raw["Globals"]["Function"]["Tracing"] = "PassThrough"


def _x86_function(raw: dict[str, Any]) -> None:
    raw["Resources"]["MigrateFunction"]["Properties"]["Architectures"] = ["x86_64"]


def _no_migration_resource(raw: dict[str, Any]) -> None:
    del raw["Resources"]["SchemaMigrations"]
    for resource in raw["Resources"].values():
        resource.pop("DependsOn", None)


def _drop_function(raw: dict[str, Any]) -> None:
    del raw["Resources"]["AwardPointsFunction"]


def _wrong_handler(raw: dict[str, Any]) -> None:
    raw["Resources"]["AwardPointsFunction"]["Properties"]["Handler"] = "app.handle"


BROKEN: list[tuple[Callable[[dict[str, Any]], None], Callable[[Path], Problems], str]] = [
    (_drop_get_me, route_problems, "serves GET /api/me, which the template does not route"),
    (_add_unserved_route, route_problems, "GET /api/leaderboard/weekly to it, but its app"),
    (_move_route, route_problems, "VerificationApiFunction: its app serves POST /api/verif"),
    (_protect_public_route, route_problems, "GetUser: public route must have Auth.Authorizer"),
    (_open_user_route, route_problems, "GetMe: user route must use the API's JWT authorizer"),
    (_wrong_scope, route_problems, "ListFlags: admin route needs AuthorizationScopes"),
    (_default_authorizer_without_scope, route_problems, "admin route needs Authorization"),
    (_no_trigger, trigger_problems, "AwardPointsFunction has no schedule"),
    (_no_dead_letters, settings_problems, "schedule without DeadLetterConfig"),
    (_passive_tracing, settings_problems, "Tracing 'PassThrough'"),
    (_x86_function, settings_problems, "MigrateFunction: overrides the global Architectures"),
    (_no_migration_resource, settings_problems, "no Custom:: resource"),
    (_drop_function, function_problems, "functions/award_points is not the CodeUri"),
    (_drop_function, event_problems, "events/award_points.json belongs to no function"),
    (_wrong_handler, function_problems, "app.handle is not a callable"),
    (_move_route, event_problems, "verification_api_post_verification.json: routeKey"),
]


def _broken_copy(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    """template.yaml, changed by `mutate`, next to links to the real code, layer and events."""
    raw = load_raw(TEMPLATE)
    mutate(raw)
    for name in ("functions", "layers", "shared", "events"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_an_unchanged_copy_passes(tmp_path: Path) -> None:
    path = _broken_copy(tmp_path, lambda raw: None)
    checks = [function_problems, trigger_problems, route_problems, event_problems]
    assert [p for check in [*checks, settings_problems] for p in check(path)] == []
    assert translate(path)["Resources"].keys() == translate(TEMPLATE)["Resources"].keys()


@pytest.mark.parametrize(
    ("mutate", "check", "expected"),
    BROKEN,
    ids=[f"{m.__name__.lstrip('_')}-{c.__name__}" for m, c, _ in BROKEN],
)
def test_checks_catch_a_broken_template(
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    check: Callable[[Path], Problems],
    expected: str,
) -> None:
    problems = check(_broken_copy(tmp_path, mutate))
    assert any(expected in p for p in problems), problems


def test_translation_reports_sam_errors(tmp_path: Path) -> None:
    def no_expression(raw: dict[str, Any]) -> None:
        del _events(raw, "AwardPointsFunction")["EveryMinute"]["Properties"]["ScheduleExpression"]

    with pytest.raises(AssertionError, match="AwardPointsFunction"):
        translate(_broken_copy(tmp_path, no_expression))


# --- the layer `sam build` produced -------------------------------------------------------------


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    byteorder = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], byteorder)


@pytest.fixture
def built_layer() -> Path:
    if not BUILD_LAYER.is_dir():
        message = f"{BUILD_LAYER.relative_to(ROOT)} does not exist: run `make sam-build`"
        if os.environ.get("TALLY_REQUIRE_SAM_BUILD") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return BUILD_LAYER


def test_built_layer_contents(built_layer: Path) -> None:
    assert (built_layer / "tally" / "__init__.py").is_file()
    assert (built_layer / "tally" / "db" / "migrations" / "0001_points.sql").is_file()
    missing = [p for p in LAYER_PACKAGES if not (built_layer / p / "__init__.py").is_file()]
    assert missing == []


def test_built_layer_binaries_are_for_the_lambda_runtime(
    built_layer: Path, tpl: template_mod.Template
) -> None:
    runtime = tpl.raw["Globals"]["Function"]["Runtime"]  # python3.13 -> cpython-313
    abi = "cpython-" + runtime.removeprefix("python").replace(".", "")
    for package in ("psycopg_binary", "pydantic_core"):
        objects = sorted((built_layer / package).glob("*.so"))
        assert objects, f"no shared objects in {package}"
        for so in objects:
            assert _elf_machine(so) == EM_AARCH64, f"{so.name} is not built for aarch64"
            if ".cpython-" in so.name:
                assert abi in so.name, f"{so.name} is not built for {runtime}"


def test_the_guides_matchmaking_alerts_are_alarms(cfn: dict[str, Any]) -> None:
    alarms = _resources_of(cfn, "AWS::CloudWatch::Alarm")
    by_metric = {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in alarms.values()
        if "MetricName" in a["Properties"]
    }
    queue = by_metric["MatchQueueDepth"]
    assert (queue["Threshold"], queue["ComparisonOperator"]) == (30, "LessThanThreshold")
    assert "WARNING" in queue["AlarmDescription"]
    active = by_metric["MatchActiveVoting"]
    assert (active["Threshold"], active["ComparisonOperator"]) == (5, "LessThanThreshold")
    assert "CRITICAL" in active["AlarmDescription"]
    down = by_metric["MatchMetricsRecorded"]
    assert (down["Period"], down["EvaluationPeriods"], down["Statistic"]) == (600, 1, "SampleCount")
    assert down["TreatMissingData"] == "breaching"
    for alarm in (queue, active, down):
        assert alarm["Namespace"] == "Tally"
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "tally"}]
        assert alarm["AlarmActions"] == [{"Ref": "OperationsAlarmsTopic"}]


def test_matchmaking_jobs_emit_the_metrics_the_alarms_watch(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tally.local.invoke import invoke

    invoke(load_template(TEMPLATE), "ExpiryHandlerFunction", {})
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {
        m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"MatchQueueDepth", "MatchActiveVoting", "MatchMetricsRecorded"} <= names
    dims = {
        tuple(d) for blob in emf for m in blob["_aws"]["CloudWatchMetrics"] for d in m["Dimensions"]
    }
    assert ("service",) in dims


def test_every_tally_metric_an_alarm_watches_is_emitted_by_its_job(
    db: Any, cfn: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An alarm on a metric nothing emits would never fire (or, as a heartbeat, always)."""
    import json

    from tally.local.invoke import invoke

    tpl = load_template(TEMPLATE)
    for fn in tpl.functions.values():
        for schedule in fn.schedules:
            if fn.logical_id != "CommunityEtlFunction":  # nightly; emits no alarm metric
                invoke(tpl, fn.logical_id, dict(schedule.input))
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    emitted = {
        m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    watched = {
        a["Properties"]["MetricName"]
        for a in _resources_of(cfn, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "Tally"
    }
    assert watched <= emitted, watched - emitted


def test_operations_alarms_cover_what_operators_watch(
    cfn: dict[str, Any], tpl: template_mod.Template
) -> None:
    alarms = _resources_of(cfn, "AWS::CloudWatch::Alarm")
    by_metric: dict[str, Any] = {}
    watched_jobs: set[str] = set()
    for alarm in alarms.values():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "OperationsAlarmsTopic"}]
        if "MetricName" in props:
            by_metric[props["MetricName"]] = props
            if props["Namespace"] == "Tally":
                assert props["Dimensions"] == [{"Name": "service", "Value": "tally"}]
        for query in props.get("Metrics", []):
            stat = query.get("MetricStat")
            if stat and stat["Metric"]["MetricName"] == "Errors":
                watched_jobs.add(stat["Metric"]["Dimensions"][0]["Value"]["Ref"])
            if "Expression" in query:
                # Lambda reports Errors only for periods a function ran: a sum of jobs on
                # different schedules is missing unless every term is filled with 0.
                ids = {q["Id"] for q in props["Metrics"] if "MetricStat" in q}
                assert all(f"FILL({i},0)" in query["Expression"] for i in ids), query
    scheduled = {fn.logical_id for fn in tpl.functions.values() if fn.schedules}
    assert watched_jobs == scheduled  # every job's errors, in the job-error alarms
    assert by_metric["ApproximateNumberOfMessagesVisible"]["Threshold"] == 0  # the DLQ
    assert by_metric["5xx"]["Threshold"] == 0
    assert by_metric["Latency"]["ExtendedStatistic"] == "p95"
    assert by_metric["LedgerMismatches"]["ComparisonOperator"] == "GreaterThanThreshold"
    assert by_metric["ReconciliationRuns"]["TreatMissingData"] == "breaching"  # a heartbeat
    for metric in ("PouPendingOverOneHour", "PouShortCommittees", "PouFinalizerRuns"):
        assert metric in by_metric
    assert {"MatchQueueDepth", "MatchActiveVoting", "MatchMetricsRecorded"} <= set(by_metric)


def test_a_failed_job_run_lands_in_the_jobs_dead_letter_queue(tpl: template_mod.Template) -> None:
    raw = load_raw(ROOT / "template.yaml")
    for fn in tpl.functions.values():
        if fn.schedules:
            dlq = raw["Resources"][fn.logical_id]["Properties"].get("DeadLetterQueue")
            assert dlq == {
                "Type": "SQS",
                "TargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
            }, fn.logical_id


def test_the_dashboard_shows_every_alarm_and_job(
    cfn: dict[str, Any], tpl: template_mod.Template
) -> None:
    (dashboard,) = _resources_of(cfn, "AWS::CloudWatch::Dashboard").values()
    body_template = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    body = json.loads(body_template)  # valid JSON before substitution
    names = {w["properties"]["title"] for w in body["widgets"]}
    assert {"Alarms", "API latency (ms)", "Job errors", "Jobs dead-letter queue"} <= names
    for logical_id in _resources_of(cfn, "AWS::CloudWatch::Alarm"):
        assert f"${{{logical_id}.Arn}}" in body_template
    for fn in tpl.functions.values():
        if fn.schedules:
            assert f"${{{fn.logical_id}}}" in body_template


def test_functions_get_only_what_they_use() -> None:
    """Least privilege: the database secret by ARN, the export prefix of one bucket, one
    function to invoke; no wildcard actions, no '*' resources."""
    raw = load_raw(ROOT / "template.yaml")
    allowed_templates = {"AWSSecretsManagerGetSecretValuePolicy"}
    for name, resource in raw["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for policy in resource["Properties"].get("Policies", []):
            assert isinstance(policy, dict), (name, policy)
            (kind, value), *_ = policy.items()
            if kind in allowed_templates:
                assert "Ref" in json.dumps(value["SecretArn"]), name
                continue
            assert kind == "Statement", (name, kind)
            for statement in value:
                actions = statement["Action"]
                for action in actions if isinstance(actions, list) else [actions]:
                    assert "*" not in action, (name, action)
                resource_text = json.dumps(statement["Resource"])
                assert resource_text not in ('"*"', '["*"]'), name
                assert "/exports/*" in resource_text or "*" not in resource_text, name


def test_write_routes_are_throttled_per_route(tpl: template_mod.Template) -> None:
    raw = load_raw(ROOT / "template.yaml")
    settings = raw["Resources"]["HttpApi"]["Properties"]["RouteSettings"]
    writes = {
        f"{r.method} {r.path}"
        for fn in tpl.functions.values()
        for r in fn.routes
        if r.method not in ("GET", "HEAD")
    }
    assert writes == set(settings)
    for limits in settings.values():
        assert 0 < limits["ThrottlingRateLimit"] <= limits["ThrottlingBurstLimit"]
