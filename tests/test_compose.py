"""docker-compose.yml and the Dockerfile: valid Compose, and consistent with the code.

Nothing is fetched at test time. tests/data/compose-spec.json is the Compose specification's
JSON schema, `schema/compose-spec.json` of the compose-spec/compose-spec repository at commit
00655e2222608fa6eaecdf12ac5195889ca2244a (74,133 characters). Its bytes came from the npm
package dclint 3.1.0 (`schemas/compose.schema.json`, a copy of a later revision of the same
file), less that revision's two additions (`services.*.container_name` `pattern` and
`services.*.models.*.model_var`), and were checked against that commit's text.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import jsonschema
import pytest
import yaml
from support import ROOT

from bridge.cli import main
from bridge.config import Settings
from bridge.flow import load_compiled, load_flows

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def schema_problems(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def pom_version(name: str) -> str:
    text = (ROOT / "brokers" / "pom.xml").read_text(encoding="utf-8")
    found = re.search(rf"<{name}\.version>([^<]+)</{name}\.version>", text)
    assert found is not None, f"brokers/pom.xml has no {name}.version"
    return found.group(1)


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]


def sagabridge_args(service: dict[str, Any]) -> list[str]:
    """The sagabridge arguments a service runs (the image's entrypoint is `sagabridge`)."""
    assert "entrypoint" not in service, "the sagabridge services keep the image's entrypoint"
    command = service["command"]
    assert isinstance(command, list), "exec form: no shell between compose and sagabridge"
    return [str(c) for c in command]


def parse(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse sagabridge arguments as the CLI does: (command path, parameter values)."""
    command: click.Command = main
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"sagabridge has no command {rest[0]!r}"
        command, rest = sub, rest[1:]
        path.append(command.name or "")
    ctx = command.make_context(" ".join(path), rest)  # raises on unknown options or bad values
    return " ".join(path), dict(ctx.params)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def config_content(name: str) -> str:
    content: str = compose()["configs"][name]["content"]
    return content


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a repository path for bind mounts, a volume name otherwise)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    for config in service.get("configs", []):
        out[config["target"]] = f"config:{config['source']}"
    return out


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a container path of the service comes from in the repository, if it does."""
    for target, source in sorted(mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            if source.startswith("./"):
                return ROOT / source / container_path[len(target) :].lstrip("/")
            return None
    return None


def worker_settings(service: dict[str, Any]) -> tuple[dict[str, Any], Settings, dict[str, Any]]:
    """(the run flags, the worker's settings as sagabridge would load them, the file's data)."""
    name, params = parse(sagabridge_args(service))
    assert name in ("run", "topics apply"), name
    target = str(params["config_file"])
    source = mounts(service).get(target, "")
    assert source.startswith("config:"), f"--config {target} is not a mounted compose config"
    data = yaml.safe_load(config_content(source.removeprefix("config:")))
    flags = {k: v for k, v in params.items() if k not in ("config_file", "as_json")}
    values = {**data, **{k: v for k, v in flags.items() if v not in (None, (), [])}}
    for key, value in environment(service).items():
        if key.startswith("SAGABRIDGE_"):
            field = key.removeprefix("SAGABRIDGE_").lower()
            assert field in Settings.model_fields, f"{key} is not a setting's variable"
            values[field] = value
    # Settings reads SAGABRIDGE_* itself; give them as values instead (no test environment).
    settings = Settings.model_validate(
        {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    )
    return params, settings, data


def flows_on_host(service: dict[str, Any]) -> list[Path]:
    """The repository folders the worker's `flows` setting names, through its mounts."""
    _, _, data = worker_settings(service)
    config_dir = str(Path(str(parse(sagabridge_args(service))[1]["config_file"])).parent)
    found = []
    for flow in data["flows"]:  # relative to the settings file, as load_settings reads them
        on_host = host_path(service, f"{config_dir}/{flow}")
        assert on_host is not None and on_host.exists(), f"flows: {flow} is not mounted"
        found.append(on_host)
    return found


# ---- the specification -------------------------------------------------------------------------


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert len(SCHEMA.read_text(encoding="utf-8")) == 74_133


def test_compose_file_follows_the_specification() -> None:
    assert schema_problems(compose()) == []


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["services"]["kafka"].update(healthcheck={"test": "x", "interval": 5}),
        lambda d: d["services"]["sagabridge"]["depends_on"]["kafka"].update(
            condition="service_ready"
        ),
        lambda d: d["services"]["sqs"].update(port=["9324:9324"]),
    ],
    ids=["interval-not-text", "unknown-condition", "unknown-key"],
)
def test_the_specification_catches_mistakes(change: Any) -> None:
    doc = copy.deepcopy(compose())
    change(doc)
    assert schema_problems(doc) != []


# ---- images --------------------------------------------------------------------------------------


def test_images_are_pinned_and_match_the_code() -> None:
    found = services()
    for name, service in found.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image} is not pinned"
    assert found["kafka"]["image"] == f"apache/kafka:{pom_version('kafka')}"
    assert pom_version("kafka").startswith("4.")
    assert found["sqs"]["image"] == f"softwaremill/elasticmq-native:{pom_version('elasticmq')}"
    built = {n for n, s in found.items() if "build" in s}
    assert built >= {"sagabridge", "topics"}
    for name in built:
        assert found[name]["image"] == f"sagabridge:{project()['version']}", name
        assert found[name]["build"]["context"] == "."


def test_dockerfile_installs_the_package_and_runs_sagabridge() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert base is not None and base.group(1) == "python:3.11-slim"
    assert project()["requires-python"] == ">=3.11"
    assert re.search(r"^RUN pip install \. ", text, flags=re.MULTILINE)
    assert project()["scripts"]["sagabridge"] == "bridge.cli:main"
    assert 'ENTRYPOINT ["sagabridge"]' in text
    for copied in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for path in copied.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("pyproject.toml", "README.md", "bridge"):
        assert needed not in ignored, f".dockerignore hides {needed}, which the build needs"
    web_port = Settings.model_fields["web_port"].default
    assert f"EXPOSE {web_port}" in text


# ---- health and order ----------------------------------------------------------------------------


def test_every_long_running_service_has_a_health_check() -> None:
    found = services()
    for name in ("kafka", "sqs", "sagabridge"):
        assert "test" in found[name].get("healthcheck", {}), f"{name} has no health check"
    kafka_check = " ".join(found["kafka"]["healthcheck"]["test"])
    assert re.search(r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh", kafka_check)
    port = re.search(r"--bootstrap-server [\w.]+:(\d+)", kafka_check)
    assert (
        port is not None and f":{port.group(1)}" in environment(found["kafka"])["KAFKA_LISTENERS"]
    )
    web_port = parse(sagabridge_args(found["sagabridge"]))[1]["web_port"]
    assert f"127.0.0.1:{web_port}/healthz" in " ".join(found["sagabridge"]["healthcheck"]["test"])
    assert "9324/health" in " ".join(found["sqs"]["healthcheck"]["test"])


def test_services_wait_for_what_they_need() -> None:
    found = services()
    for name, service in found.items():
        for needed, how in (service.get("depends_on") or {}).items():
            assert needed in found, f"{name} depends on unknown {needed}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in found[needed], f"{name} waits for {needed}'s health"
            elif how["condition"] == "service_completed_successfully":
                assert found[needed].get("restart") == "no", f"{needed} must be a one-shot"
    waits = found["sagabridge"]["depends_on"]
    assert waits["kafka"]["condition"] == "service_healthy"
    assert waits["sqs"]["condition"] == "service_healthy"
    assert waits["topics"]["condition"] == "service_completed_successfully"
    assert found["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


# ---- the worker's command, settings, ports and addresses -----------------------------------------


def test_the_worker_command_and_settings_are_sagabridge_s() -> None:
    found = services()
    name, _ = parse(sagabridge_args(found["sagabridge"]))
    assert name == "run"
    params, settings, data = worker_settings(found["sagabridge"])
    assert params["config_file"] == Path("/etc/sagabridge/sagabridge.yaml")
    # Every key of the settings file is a setting (load_settings would refuse the others).
    assert set(data) <= set(Settings.model_fields)
    # Bound beyond loopback, operator actions need a token.
    if settings.web_host not in LOOPBACK:
        assert settings.api_token, "web_host is not loopback: give --api-token"
        token = environment(found["sagabridge"]).get("SAGABRIDGE_API_TOKEN", "")
        assert token.startswith("${SAGABRIDGE_API_TOKEN:?"), "the token comes from the env"
    topics_name, topics_params = parse(sagabridge_args(found["topics"]))
    assert topics_name == "topics apply"
    assert topics_params["config_file"] == params["config_file"]
    assert mounts(found["topics"]).items() <= mounts(found["sagabridge"]).items()


def test_the_web_port_is_published_and_advertised() -> None:
    service = services()["sagabridge"]
    _, settings, _ = worker_settings(service)
    published = [str(p).rsplit(":", 2) for p in service["ports"]]
    assert [settings.web_port] == [int(p[-1]) for p in published]
    assert published[0][0] in LOOPBACK, "the API is published on the host's loopback only"
    advertised = urlparse(str(settings.advertised_url))
    assert advertised.hostname == "sagabridge" and advertised.port == settings.web_port


def test_the_bootstrap_address_is_the_kafka_service_listener() -> None:
    found = services()
    _, settings, _ = worker_settings(found["sagabridge"])
    assert settings.bootstrap is not None
    kafka = environment(found["kafka"])
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    listeners = kafka["KAFKA_LISTENERS"].split(",")
    for address in settings.bootstrap.split(","):
        host, port = address.rsplit(":", 1)
        assert host in found, f"bootstrap {address}: no service {host}"
        matching = [a for a in advertised if a.endswith(f"://{host}:{port}")]
        assert matching, f"bootstrap {address} is not a listener kafka advertises"
        listener = matching[0].split("://")[0]
        assert f"{listener}://:{port}" in listeners
        protocol = dict(
            p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        assert protocol[listener] == settings.kafka.security_protocol
    # The host listener is published on the port it advertises.
    host_listener = next(a for a in advertised if "127.0.0.1" in a)
    host_port = host_listener.rsplit(":", 1)[1]
    assert f"127.0.0.1:{host_port}:{host_port}" in found["kafka"]["ports"]


def test_the_sqs_endpoint_is_the_sqs_service_and_has_the_flows_queues() -> None:
    found = services()
    _, settings, _ = worker_settings(found["sagabridge"])
    endpoint = urlparse(str(settings.sqs_endpoint))
    assert endpoint.hostname in found, f"sqs_endpoint {settings.sqs_endpoint}: no such service"
    conf = config_content("elasticmq")
    assert re.search(rf"bind-port = {endpoint.port}\b", conf)
    assert re.search(rf"host = {endpoint.hostname}\b", conf)
    assert re.search(rf"(?<!bind-)port = {endpoint.port}\b", conf)
    assert re.search(rf"region = {settings.sqs.region}\b", conf)
    mounted = mounts(found["sqs"])
    assert mounted.get("/opt/elasticmq.conf") == "config:elasticmq"
    declared = set(re.findall(r"^\s+([\w.-]+) \{\}", conf, flags=re.MULTILINE))
    flows = load_compiled(flows_on_host(found["sagabridge"]))
    used = {
        e.removeprefix("sqs://")
        for f in flows
        for e in (*f.sources, *f.destinations)
        if e.startswith("sqs://")
    }
    assert used and used <= declared, f"queues the flows use but ElasticMQ lacks: {used - declared}"
    assert f"127.0.0.1:{endpoint.port}:{endpoint.port}" in found["sqs"]["ports"]


def test_mounted_flows_and_topics_exist_in_the_repository() -> None:
    for name, service in services().items():
        for target, source in mounts(service).items():
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} (for {target}) is missing"
            elif source.startswith("config:"):
                assert source.removeprefix("config:") in compose()["configs"], name
            else:
                assert source in compose()["volumes"], f"{name}: unknown volume {source}"
    service = services()["sagabridge"]
    _, settings, _ = worker_settings(service)
    _, problems, _ = load_flows(flows_on_host(service))
    assert problems == []
    topics = host_path(service, str(settings.topics_dir))
    assert topics is not None and (topics / "topics.yaml").is_file()
    state = str(settings.state_dir)
    assert mounts(service).get(state) in compose()["volumes"], "state_dir is not on a volume"


def test_services_that_run_python_modules_run_existing_ones() -> None:
    """A service whose entrypoint is `python -m MODULE` runs a module that exists and has a
    __main__ block (the demo's per-service entry points, once there are some)."""
    for name, service in services().items():
        entrypoint = service.get("entrypoint") or []
        if entrypoint[:2] == ["python", "-m"]:
            spec = importlib.util.find_spec(entrypoint[2])
            assert spec is not None and spec.origin, f"{name}: no module {entrypoint[2]}"
            source = Path(spec.origin).read_text(encoding="utf-8")
            assert 'if __name__ == "__main__"' in source, f"{name}: {entrypoint[2]} is no program"
            module = importlib.import_module(entrypoint[2])
            try:  # the program's own argument parser takes the command as written
                module.parser().parse_args([str(a) for a in service.get("command", [])])
            except SystemExit:
                raise AssertionError(f"{name}: {entrypoint[2]} refuses its command") from None


# The consistency checks must be able to fail: each change below breaks one of them.


def _set_command(doc: dict[str, Any], *extra: str) -> None:
    doc["services"]["sagabridge"]["command"] = [*doc["services"]["sagabridge"]["command"], *extra]


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (
            lambda d: d["services"]["kafka"].update(image="apache/kafka:latest"),
            test_images_are_pinned_and_match_the_code,
        ),
        (
            lambda d: d["configs"]["sagabridge"].update(
                content=d["configs"]["sagabridge"]["content"].replace("kafka:9092", "kafka:9093")
            ),
            test_the_bootstrap_address_is_the_kafka_service_listener,
        ),
        (
            lambda d: d["configs"]["elasticmq"].update(
                content=d["configs"]["elasticmq"]["content"].replace("payments-commands {}", "")
            ),
            test_the_sqs_endpoint_is_the_sqs_service_and_has_the_flows_queues,
        ),
        (
            lambda d: _set_command(d, "--web-port", "7070"),
            test_the_web_port_is_published_and_advertised,
        ),
        (
            lambda d: _set_command(d, "--partitions", "4"),
            test_the_worker_command_and_settings_are_sagabridge_s,
        ),
        (
            lambda d: d["services"]["sagabridge"]["environment"].pop("SAGABRIDGE_API_TOKEN"),
            test_the_worker_command_and_settings_are_sagabridge_s,
        ),
        (
            lambda d: d["services"]["sagabridge"]["volumes"].__setitem__(
                0, "./flows:/etc/sagabridge/flows:ro"
            ),
            test_mounted_flows_and_topics_exist_in_the_repository,
        ),
        (
            lambda d: d["services"]["sagabridge"].update(
                entrypoint=["python", "-m", "bridge.demo.nothing"], command=["orders"]
            ),
            test_services_that_run_python_modules_run_existing_ones,
        ),
    ],
    ids=["latest", "bootstrap", "queue", "web-port", "flag", "token", "mount", "module"],
)
def test_a_wrong_compose_file_fails(
    monkeypatch: pytest.MonkeyPatch, change: Any, check: Any
) -> None:
    doc = copy.deepcopy(compose())
    change(doc)
    monkeypatch.setattr(sys.modules[__name__], "compose", lambda: doc)
    with pytest.raises((AssertionError, click.ClickException)):
        check()
