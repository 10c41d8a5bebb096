"""README.md and docs/ work as written: commands run or parse, YAML validates, names exist.

What the documents follow, and this test enforces:
- Shell commands are in ```sh or ```bash blocks, one per line (a trailing backslash continues a
  line, `#` starts a comment). `sagabridge validate|graph|simulate` run for real and must exit 0;
  the other sagabridge commands (which start a worker or reach a broker) are parsed by the CLI
  itself, so an unknown option, a missing argument or a bad value fails. `make` targets must exist
  in the Makefile, `docker compose` services in docker-compose.yml, `curl` paths in docs/api.md,
  and scripts in the repository. In README.md any other command fails the test.
- YAML in ```yaml blocks is a flow (it has `flow:`, `events:` and `steps:`), a flow fragment (top
  keys of a flow only: merged into examples/flows/order-fulfilment.yaml), a settings file (every
  key a setting) or a topics file (`topics:`); each is checked by the code that reads it.
- `<!-- invalid -->` on the line before a block marks a deliberately wrong example: it must fail.
- Relative links and path-like code spans (`examples/flows/`) name files that exist; links to an
  anchor name a heading (or an `<a id>`) of the target.
- Every `SAGABRIDGE_*` variable is a setting (or a test/broker script variable that exists), every
  snake_case name in code is a setting or a field of the flow language, and the settings table in
  README.md lists every setting with its variable, flag and default, as bridge/config.py has them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from support import ROOT

from bridge.cli import main
from bridge.codecs import CodecConfig
from bridge.config import KafkaSettings, Settings, SqsSettings, load_settings
from bridge.errors import ConfigError
from bridge.flow.model import (
    CompensationSpec,
    EventSpec,
    FlowHeader,
    RetrySpec,
    StepSpec,
)
from bridge.runtime.topics import parse_topic_specs

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# The user documents, checked in full. api.md, design.md and decisions.md (the contract and its
# notes) are checked for links, paths, variables and sagabridge commands only: design.md's flow,
# for one, is shortened on purpose.
OWN = {"README.md", "flow-language.md", "operations.md", "troubleshooting.md", "index.md"}
BASE_FLOW = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
OFFLINE = {"validate", "graph", "simulate"}  # commands that run here, for real
SAGABRIDGE = {"sagabridge", ".venv/bin/sagabridge"}
INVALID_MARK = "<!-- invalid -->"
# Variables that are not settings: each must be read by a script of the repository.
SCRIPT_VARIABLES = {"SAGABRIDGE_TEST_BOOTSTRAP": "tests", "SAGABRIDGE_PYTHON": "brokers"}
# snake_case names in code spans that are neither settings nor flow fields: payload fields of the
# example domain, envelope and API fields, Faust/Kafka names.
OTHER_NAMES = {
    "order_id",
    "event_id",
    "payment_id",
    "payment_ref",
    "command_id",
    "issued_at",
    "uptime_s",
    "next_cursor",
    "key_prefix",
}


@dataclass(frozen=True)
class Block:
    file: Path
    line: int
    lang: str
    text: str
    invalid: bool

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker line before it."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marked = start > 0 and lines[start - 1].strip() == INVALID_MARK
        found.append(Block(path, start + 1, fence.group(1), "\n".join(body) + "\n", marked))
        i += 1
    return found


def commands(block: Block) -> list[str]:
    """The shell commands of a block: continuation lines joined, blank and comment lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


# ---- names the code defines ------------------------------------------------------------------


def setting_fields() -> dict[str, Any]:
    """Every setting, nested ones as `kafka.x`, with its default."""
    out: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        if name in ("kafka", "sqs"):
            nested = KafkaSettings if name == "kafka" else SqsSettings
            for sub, sub_info in nested.model_fields.items():
                out[f"{name}.{sub}"] = sub_info.get_default(call_default_factory=True)
        else:
            out[name] = info.get_default(call_default_factory=True)
    return out


def env_name(setting: str) -> str:
    return "SAGABRIDGE_" + setting.replace(".", "__").upper()


def flow_fields() -> set[str]:
    models = (FlowHeader, EventSpec, StepSpec, RetrySpec, CompensationSpec, CodecConfig)
    return {name for model in models for name in model.model_fields}


def code_strings() -> set[str]:
    """Every name-like string literal in bridge/: log events, metric names, JSON fields."""
    found: set[str] = set()
    for source in (ROOT / "bridge").rglob("*.py"):
        found.update(
            re.findall(r"[\"']([a-z][a-z0-9_.]*)[\"']", source.read_text(encoding="utf-8"))
        )
    return found


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, flags=re.MULTILINE))


def compose_services() -> set[str]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return set(data["services"])


def api_routes() -> list[tuple[str, re.Pattern[str]]]:
    """(method, path pattern) for every `## `METHOD /path`` heading of docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    routes = []
    for method, path in re.findall(r"^## `(GET|POST) (/[^`?\s]*)", text, flags=re.MULTILINE):
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        routes.append((method, re.compile(pattern + "$")))
    return routes


# ---- checks: each returns the problems it found ------------------------------------------------


def resolve_cli(args: list[str]) -> tuple[click.Command, str, list[str]]:
    """The sagabridge (sub)command that `args` names, its name and its own arguments."""
    command: click.Command = main
    name = "sagabridge"
    rest = list(args)
    while isinstance(command, click.Group):
        if not rest or rest[0].startswith("-"):
            raise click.UsageError(f"'{name}' needs a command")
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            raise click.UsageError(f"'{name}' has no command '{rest[0]}'")
        command, name, rest = sub, rest[0], rest[1:]
    return command, name, rest


def check_sagabridge(args: list[str], where: str) -> list[str]:
    try:
        command, name, rest = resolve_cli(args)
        if name not in OFFLINE:
            # Parse and convert every option and argument, as `sagabridge` would, without
            # starting a worker or reaching a broker.
            command.make_context(name, rest)
            return []
    except click.ClickException as exc:
        return [f"{where}: sagabridge {shlex.join(args)}: {exc.format_message()}"]
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        return [
            f"{where}: sagabridge {shlex.join(args)} exited {result.exit_code}: {result.output}"
        ]
    return []


def check_env_names(names: list[str], where: str) -> list[str]:
    known = {env_name(s) for s in setting_fields()}
    problems = []
    for name in names:
        if name in known:
            continue
        folder = SCRIPT_VARIABLES.get(name)
        if folder is None:
            problems.append(f"{where}: {name} is not a setting's variable (bridge/config.py)")
        elif not any(
            name in f.read_text(encoding="utf-8", errors="replace")
            for f in (ROOT / folder).rglob("*")
            if f.is_file() and f.suffix in (".py", ".sh", "")
        ):
            problems.append(f"{where}: {name} is read by nothing under {folder}/")
    return problems


def check_command(line: str, where: str, strict: bool) -> list[str]:
    """One shell command. `strict`: a command this test does not know is a problem."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        return [f"{where}: cannot parse {line!r}: {exc}"]
    problems: list[str] = []
    env = []
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        env.append(words.pop(0).split("=", 1)[0])
    env += re.findall(r"\$\{?(SAGABRIDGE_[A-Z0-9_]+)", line)
    problems += check_env_names([e for e in env if e.startswith("SAGABRIDGE_")], where)
    if not words:
        return problems
    head, args = words[0], words[1:]
    if head in SAGABRIDGE:
        problems += check_sagabridge(args, where)
    elif head == "make":
        targets = make_targets()
        problems += [
            f"{where}: make target '{a}' is not in the Makefile"
            for a in args
            if not a.startswith("-") and "=" not in a and a not in targets
        ]
    elif head == "docker" and args[:1] == ["compose"]:
        problems += check_compose_command(args[1:], where)
    elif head == "curl":
        problems += check_curl(args, where)
    elif "/" in head and not head.startswith("/"):
        script = ROOT / head
        if not (script.is_file() and script.stat().st_mode & 0o111):
            problems.append(f"{where}: {head} is not an executable file of the repository")
    elif strict:
        problems.append(f"{where}: '{head}': tests/test_readme.py does not know this command")
    return problems


def check_compose_command(args: list[str], where: str) -> list[str]:
    if not (ROOT / "docker-compose.yml").is_file():
        return [f"{where}: docker compose: docker-compose.yml is missing"]
    services = compose_services()
    words = [a for a in args if not a.startswith("-")]
    if not words:
        return [f"{where}: docker compose without a subcommand"]
    sub, rest = words[0], words[1:]
    named = rest[:1] if sub in ("exec", "run") else rest  # exec SERVICE COMMAND...
    if sub in ("up", "down", "logs", "ps", "build", "pull", "restart", "stop", "start"):
        named = rest
    elif sub not in ("exec", "run"):
        return [f"{where}: docker compose {sub}: not a subcommand this test knows"]
    return [f"{where}: docker compose: no service '{s}'" for s in named if s not in services]


def check_curl(args: list[str], where: str) -> list[str]:
    method = "GET"
    urls = []
    it = iter(args)
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg in ("-H", "-d", "--data", "-o"):
            next(it)
        elif arg.startswith("http"):
            urls.append(arg)
    problems = []
    port = setting_fields()["web_port"]
    for url in urls:
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/[^?]*)(\?.*)?", url)
        if m is None:
            problems.append(f"{where}: curl {url}: not a worker's address")
            continue
        if int(m.group(1)) != port:
            problems.append(f"{where}: curl {url}: the web port is {port} by default")
        if not any(method == meth and pat.match(m.group(2)) for meth, pat in api_routes()):
            problems.append(f"{where}: curl -X {method} {m.group(2)}: not a route of docs/api.md")
    return problems


def merge(base: Any, fragment: Any) -> Any:
    if isinstance(base, dict) and isinstance(fragment, dict):
        out = dict(base)
        for key, value in fragment.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return fragment


def check_yaml(block: Block, tmp: Path) -> list[str]:
    """Validate a YAML block with the code that reads its kind of file."""
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError as exc:
        return [] if block.invalid else [f"{block}: not YAML: {exc}"]
    if not isinstance(data, dict):
        return [f"{block}: a YAML example must be a mapping"]
    keys = set(data)
    problems: list[str] = []
    if "topics" in keys:
        try:
            parse_topic_specs(block.text, str(block))
        except ConfigError as exc:
            problems = [str(exc)]
    elif keys <= set(FlowHeader.model_fields):
        if not {"flow", "events", "steps"} <= keys:  # a fragment of a flow
            base = yaml.safe_load(BASE_FLOW.read_text(encoding="utf-8"))
            data = merge(base, data)
        path = tmp / "flow.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        result = CliRunner().invoke(main, ["validate", str(path)])
        if result.exit_code != 0:
            problems = [f"{block}: sagabridge validate: {result.output}"]
    elif keys & {s.split(".")[0] for s in setting_fields()} and not keys & flow_fields():
        path = tmp / "sagabridge.yaml"
        path.write_text(block.text, encoding="utf-8")
        try:
            load_settings(path)
        except ConfigError as exc:
            problems = [f"{block}: settings: {exc}"]
    else:
        return [f"{block}: YAML that is no flow, fragment, settings or topics file: {sorted(keys)}"]
    if block.invalid:
        return [] if problems else [f"{block}: marked {INVALID_MARK} but it validates"]
    return problems


def slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    found = {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
    return found | set(re.findall(r'<a id="([^"]+)"', text))


def prose(text: str) -> str:
    """The text outside fenced blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def check_links_and_paths(path: Path) -> list[str]:
    text = prose(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT)
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            problems.append(f"{where}: link to {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where}: link to {target}: no such heading in {linked.name}")
    for span in re.findall(r"`([^`\n]+)`", text):
        looks_like_path = (
            "/" in span
            and re.fullmatch(r"[\w.-]+(/[\w.*-]+)*/?", span)
            and not span.startswith(("/", "."))
            and "." in span.rsplit("/", 1)[-1] + ("." if span.endswith("/") else "")
        )
        if looks_like_path and not list(ROOT.glob(span.rstrip("/"))):
            problems.append(f"{where}: `{span}`: no such file or folder in the repository")
    return problems


def check_names(path: Path, own: bool) -> list[str]:
    """SAGABRIDGE_* variables and snake_case names in code spans and blocks exist."""
    text = path.read_text(encoding="utf-8")
    where = str(path.relative_to(ROOT))
    problems = check_env_names(
        sorted(set(re.findall(r"SAGABRIDGE_[A-Z0-9_]*[A-Z0-9]", text))), where
    )
    known = set(setting_fields()) | {s.split(".")[0] for s in setting_fields()}
    known |= flow_fields() | OTHER_NAMES | code_strings()
    spans = re.findall(r"`([^`\n]+)`", prose(text)) if own else []
    name_like = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+|(kafka|sqs)\.[a-z_]+")
    for span in spans:
        if name_like.fullmatch(span) and not {span, span.removesuffix("_total")} & known:
            problems.append(f"{where}: `{span}` is no setting and no field of a flow")
    return problems


def check_settings_table(text: str) -> list[str]:
    """The README's settings table against bridge/config.py and `sagabridge run`'s flags."""
    fields = setting_fields()
    section = text.split("\n## Settings\n", 1)[-1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    flags: dict[str, str] = {}
    for command in (["run"], ["topics", "plan"]):
        for param in resolve_cli(command)[0].params:
            for opt in param.opts:
                if opt.startswith("--") and param.name not in ("config_file", "as_json"):
                    flags[opt] = str(param.name)
    problems = []
    listed = set()
    for row in rows:
        name = row[0].strip("`")
        listed.add(name)
        if name not in fields:
            problems.append(f"settings table: `{name}` is not a setting")
            continue
        if row[1].strip("`") != env_name(name):
            problems.append(f"settings table: `{name}`: the variable is {env_name(name)}")
        flag = row[2].strip("`")
        if flag and flags.get(flag) != name:
            problems.append(f"settings table: `{name}`: {flag} is not its flag")
        problems += check_default(name, row[3], fields[name])
    problems += [f"settings table: `{name}` is missing" for name in sorted(set(fields) - listed)]
    for flag, name in flags.items():
        if not any(r[2].strip("`") == flag for r in rows if r[0].strip("`") == name):
            problems.append(f"settings table: the flag {flag} ({name}) is not listed")
    return problems


def check_default(name: str, cell: str, default: Any) -> list[str]:
    if name == "input_topic":
        ok = cell == "`<app_id>.input`"
    elif default in (None, "", [], {}):
        ok = cell == "—"
    else:
        shown = yaml.safe_load(cell.strip("`")) if cell.startswith("`") else object()
        ok = shown == (str(default) if isinstance(default, Path) else default)
    return [] if ok else [f"settings table: `{name}`: the default is {default!r}, not {cell}"]


def check_document(path: Path, tmp: Path, strict: bool, own: bool = True) -> list[str]:
    """Every check on one document; `own`: a user document, whose YAML and names are checked."""
    problems = check_links_and_paths(path) + check_names(path, own)
    for block in blocks(path):
        if block.lang in ("sh", "bash"):
            for line in commands(block):
                problems += check_command(line, str(block), strict)
        elif block.lang == "yaml" and own:
            problems += check_yaml(block, tmp)
    return problems


# ---- the tests ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the documents' commands run from the repository's root


def test_readme_works_as_written(tmp_path: Path) -> None:
    assert check_document(README, tmp_path, strict=True) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_work_as_written(doc: Path, tmp_path: Path) -> None:
    assert check_document(doc, tmp_path, strict=False, own=doc.name in OWN) == []


def test_readme_settings_table_matches_the_code() -> None:
    assert check_settings_table(README.read_text(encoding="utf-8")) == []


def test_readme_has_the_two_commands_and_the_sections_asked_for() -> None:
    text = README.read_text(encoding="utf-8")
    first = next(b for b in blocks(README) if b.lang == "sh")
    assert [c.split("#")[0].strip() for c in commands(first)] == ["make demo", "make test"]
    for heading in (
        "## A first flow, line by line",
        "## The migration path: observe, shadow, orchestrate",
        "## Run it against your Kafka and SQS",
        "## Settings",
    ):
        assert heading in text
    assert "sagabridge run --config" in text
    flows = [b for b in blocks(README) if b.lang == "yaml" and "flow:" in b.text]
    assert flows and not flows[0].invalid, "the README shows a complete flow"


def test_every_flow_field_has_an_example() -> None:
    """docs/flow-language.md shows each field of the flow language in a checked YAML block."""
    doc = ROOT / "docs" / "flow-language.md"
    shown: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                shown.add(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for block in blocks(doc):
        if block.lang == "yaml":
            walk(yaml.safe_load(block.text))
    fields = flow_fields() - set(CodecConfig.model_fields)  # codecs are settings, not flow fields
    assert sorted(fields - shown) == []


# The checks must be able to fail: each bad document below is caught.


def _doc(tmp_path: Path, text: str) -> Path:
    path = ROOT / "docs" / f".test-readme-{tmp_path.name}.md"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```yaml\nflow: x\nkey: id\nevents: {}\nsteps: {}\n```\n", "sagabridge validate"),
        ("```yaml\nsteps:\n  reserve:\n    deadline: 30\n```\n", "needs a unit"),
        ("<!-- invalid -->\n```yaml\nversion: 2\n```\n", "but it validates"),
        ("```yaml\nbootstrap: kafka:9092\nweb_prot: 1\n```\n", "unknown setting"),
        ("```yaml\ntopics:\n  - name: a\n```\n", "required"),
        ("```sh\nmake deploy\n```\n", "make target 'deploy'"),
        ("```sh\n.venv/bin/sagabridge run --flow examples/flows\n```\n", "No such option"),
        ("```sh\n.venv/bin/sagabridge validate examples/nothing.yaml\n```\n", "exited 1"),
        ("```sh\nsagabridge status order-fulfilment\n```\n", "Missing argument"),
        ("```sh\nsagabridge run --web-port sixty\n```\n", "not a valid integer"),
        ("```sh\ndocker compose logs worker\n```\n", "no service 'worker'"),
        ("```sh\ncurl http://127.0.0.1:6066/api/flow\n```\n", "not a route"),
        ("```sh\nrm -rf build\n```\n", "does not know this command"),
        ("Set `SAGABRIDGE_WEBPORT`.\n", "not a setting's variable"),
        ("Set `state_directory`.\n", "no setting and no field"),
        ("See `examples/flow/`.\n", "no such file"),
        ("See [the API](api.md#nothing).\n", "no such heading"),
        ("See [the API](apis.md).\n", "no such file"),
    ],
)
def test_a_bad_document_fails(tmp_path: Path, text: str, expected: str) -> None:
    path = _doc(tmp_path, text)
    try:
        problems = check_document(path, tmp_path, strict=True)
    finally:
        path.unlink()
    assert any(expected in p for p in problems), problems


def test_a_wrong_settings_table_fails() -> None:
    text = README.read_text(encoding="utf-8")
    wrong = text.replace("| `6066` |", "| `6067` |").replace(
        "`SAGABRIDGE_APP_ID`", "`SAGABRIDGE_APPID`"
    )
    wrong = re.sub(r"^\| `tick_ms` .*\n", "", wrong, flags=re.MULTILINE)
    problems = check_settings_table(wrong)
    assert any("web_port" in p and "6067" in p for p in problems), problems
    assert any("app_id" in p and "SAGABRIDGE_APP_ID" in p for p in problems), problems
    assert any("`tick_ms` is missing" in p for p in problems), problems
