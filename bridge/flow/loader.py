"""Load flow files and report every mistake in them as `file:line: field: what is wrong`.

Each event and each step is checked on its own, so one bad part never hides the mistakes in
another; then the references between parts are checked (names, cycles, associations).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Annotated, Any, get_args

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from bridge.flow.model import EventSpec, FlowHeader, StepSpec
from bridge.flow.paths import compile_path

Loc = tuple[str | int, ...]
_PATTERN_HINTS = {
    "flow": "is not a flow name: use lowercase letters, digits and '-'",
    "key": "is not a key name: use letters, digits and '_'",
}


@dataclass(frozen=True)
class FlowDef:
    """A flow whose parts are each valid and whose references all resolve."""

    header: FlowHeader
    events: dict[str, EventSpec]
    steps: dict[str, StepSpec]
    file: str
    warnings: tuple[str, ...] = ()


@dataclass
class _Report:
    file: str
    lines: dict[Loc, int]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def line(self, loc: Loc) -> int:
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def _format(self, loc: Loc, message: str) -> str:
        name = ""
        for part in loc:
            name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
        return f"{self.file}:{self.line(loc)}: {name or '(file)'}: {message}"

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(self._format(loc, message))

    def warn(self, loc: Loc, message: str) -> None:
        self.warnings.append(self._format(loc, "warning: " + message))


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers where every mapping key and list item stands."""


def _compose(text: str, report: _Report) -> Any:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        report.problems.append(f"{report.file}:{line}: (file): not valid YAML: {problem}")
        return None
    if node is None:
        report.problems.append(f"{report.file}:1: (file): the file is empty")
        return None
    return _to_data(node, (), report)


def _to_data(node: yaml.Node, loc: Loc, report: _Report) -> Any:
    report.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(  # a fresh constructor per scalar keeps tags (ints, bools) right
                ""
            ).construct_object(key_node)
            here = key_node.start_mark.line + 1
            if not isinstance(key, str | int):
                report.add(loc, f"line {here}: keys must be names, not {type(key).__name__}")
                continue
            if key in first:
                report.lines[(*loc, key)] = here
                what = {"events": "event", "steps": "step"}.get(str(loc[-1]) if loc else "", "key")
                report.add((*loc, key), f"duplicate {what} '{key}' (first at line {first[key]})")
                continue
            first[key] = here
            report.lines[(*loc, key)] = here
            out[key] = _to_data(value_node, (*loc, key), report)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_data(item, (*loc, i), report) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


def _salvage(model: type[BaseModel], data: Any) -> Any:
    """What can be read of an invalid part, so that its references are checked too."""
    if not isinstance(data, dict):
        return model.model_construct()
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name not in data:
            continue
        nested = _model_in(info.annotation)
        if nested is not None and isinstance(data[name], dict):
            values[name] = _salvage(nested, data[name])
            continue
        kind: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        try:
            values[name] = TypeAdapter(kind).validate_python(data[name])
        except (ValidationError, ValueError, TypeError):
            continue
    return model.model_construct(**values)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _pydantic(
    report: _Report, loc: Loc, model: type[BaseModel], data: Any, salvage: bool = False
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            where = (*loc, *err["loc"])
            kind = err["type"]
            if kind == "missing":
                message = "required"
            elif kind == "string_pattern_mismatch":
                message = _PATTERN_HINTS.get(str(err["loc"][-1]), err["msg"])
                message = f"{err['input']!r} {message}"
            elif kind == "extra_forbidden":
                allowed = ", ".join(model.model_fields)
                message = f"unknown field (allowed: {allowed})"
            else:
                message = err["msg"].removeprefix("Value error, ")
            # Union and annotated types repeat the loc with the member type's name: drop it.
            cleaned = tuple(p for p in where if not (isinstance(p, str) and "[" in p))
            report.add(cleaned, message)
        return _salvage(model, data) if salvage else None


def load_flow_text(text: str, file: str) -> tuple[FlowDef | None, list[str], list[str]]:
    """Parse and check one flow file's text: (flow or None, problems, warnings)."""
    report = _Report(file, {})
    data = _compose(text, report)
    if data is None:
        return None, report.problems, report.warnings
    if not isinstance(data, dict):
        report.add((), "a flow file is a mapping with flow:, key:, events:, steps:")
        return None, report.problems, report.warnings
    header_data = dict(data)
    for section in ("events", "steps"):
        if section in header_data and not isinstance(header_data[section], dict):
            report.add((section,), f"{section} must be a mapping of names to definitions")
            header_data[section] = {}
    header = _pydantic(report, (), FlowHeader, header_data)
    raw_events: dict[Any, Any] = header_data.get("events") or {}
    raw_steps: dict[Any, Any] = header_data.get("steps") or {}
    events: dict[str, EventSpec] = {
        str(name): _pydantic(report, ("events", name), EventSpec, spec or {}, salvage=True)
        for name, spec in raw_events.items()
    }
    steps: dict[str, StepSpec] = {
        str(name): _pydantic(report, ("steps", name), StepSpec, spec or {}, salvage=True)
        for name, spec in raw_steps.items()
    }
    _check_references(
        report, data, set(map(str, raw_events)), set(map(str, raw_steps)), events, steps
    )
    if report.problems or header is None:
        problems = sorted(report.problems, key=lambda p: int(p.split(":", 2)[1]))
        return None, problems, report.warnings
    return FlowDef(header, events, steps, file, tuple(report.warnings)), [], report.warnings


def _check_references(
    report: _Report,
    data: dict[str, Any],
    event_names: set[str],
    step_names: set[str],
    events: dict[str, EventSpec],
    steps: dict[str, StepSpec],
) -> None:
    start = data.get("start")
    if isinstance(start, str):
        if start not in event_names:
            report.add(("start",), f"unknown event '{start}'{_known(event_names)}")
        elif start in events and getattr(events[start], "via", None) is not None:
            report.add(("start",), f"the start event '{start}' cannot arrive via an association")
    if not step_names and isinstance(data.get("steps"), dict):
        report.add(("steps",), "a flow needs at least one step")

    associations = {a for e in events.values() for a in getattr(e, "associate", {})}
    for name, ev in events.items():
        if getattr(ev, "via", None) is not None:
            if ev.via not in associations:
                hint = f" (declared: {', '.join(sorted(associations))})" if associations else ""
                report.add(("events", name, "via"), f"no event declares associate '{ev.via}'{hint}")
            if getattr(ev, "key", None) is None:
                report.add(
                    ("events", name, "key"),
                    f"required with via: the path of the '{ev.via}' value in the message",
                )

    used: set[str] = {start} if isinstance(start, str) else set()
    for name, st in steps.items():
        loc: Loc = ("steps", name)
        for i, pred in enumerate(getattr(st, "after", [])):
            if pred not in step_names:
                report.add((*loc, "after", i), f"unknown step '{pred}'{_known(step_names)}")
            elif pred == name:
                report.add((*loc, "after", i), "a step cannot come after itself")
        for fld, names in (("done", getattr(st, "done", [])), ("failed", st.failed or [])):
            for ev_name in names:
                used.add(ev_name)
                if ev_name not in event_names:
                    report.add((*loc, fld), f"unknown event '{ev_name}'{_known(event_names)}")
        if st.compensate is not None:
            for ev_name in getattr(st.compensate, "done", None) or []:
                used.add(ev_name)
                if ev_name not in event_names:
                    report.add((*loc, "compensate", "done"), f"unknown event '{ev_name}'")
        retry = st.retry
        if retry is not None and retry.attempts > 1:
            if st.deadline is None:
                report.add(
                    (*loc, "retry"),
                    "retries need a step deadline: an attempt is retried when its deadline passes",
                )
            if st.command is None:
                report.add((*loc, "retry"), "retries need a command to send again")
        if retry is not None and retry.max is not None and retry.max < retry.initial:
            report.add((*loc, "retry", "max"), "max must not be shorter than initial")
        for fld in ("command", "compensate"):
            cmd = getattr(st, fld)
            if cmd is not None:
                payload = getattr(cmd, "payload", {})
                for where, text in _template_strings(payload, (*loc, fld, "payload")):
                    used.update(_check_template_path(report, where, text, event_names))

    _check_cycles(report, steps)
    complete = data.get("complete_when")
    if isinstance(complete, list):
        if not complete:
            report.add(("complete_when",), "list at least one step (or leave it out: all steps)")
        for i, name in enumerate(complete):
            if isinstance(name, str) and name not in step_names:
                report.add(("complete_when", i), f"unknown step '{name}'{_known(step_names)}")
    for name, ev in events.items():
        if name not in used and not getattr(ev, "associate", None):
            report.warn(("events", name), "declared but never used by start, steps or commands")


def _known(names: set[str]) -> str:
    return f" (known: {', '.join(sorted(names))})" if names else ""


def _template_strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str) and value.startswith("$"):
        yield loc, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _template_strings(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _template_strings(v, (*loc, i))


def _check_template_path(report: _Report, loc: Loc, text: str, events: set[str]) -> set[str]:
    try:
        path = compile_path(text)
    except ValueError as exc:
        report.add(loc, str(exc))
        return set()
    if path.kind in ("payload", "header"):
        report.add(loc, f"'{text}': a command reads the instance: use $key or $events.NAME.field")
        return set()
    if path.kind == "event" and path.event not in events:
        report.add(loc, f"unknown event '{path.event}'{_known(events)}")
    return {path.event} if path.event else set()


def _check_cycles(report: _Report, steps: dict[str, StepSpec]) -> None:
    """Report each cycle in `after` once, and every step that waits on a cycle (unreachable)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    in_cycle: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for pred in getattr(steps[name], "after", []):
            if pred not in steps:
                continue
            if state.get(pred) == 1:
                cycle = path[path.index(pred) :]
                in_cycle.update(cycle)
                shown = " after ".join([*cycle, pred])
                report.add(("steps", pred, "after"), f"cycle: {shown}")
            elif pred not in state:
                visit(pred, path)
        path.pop()
        state[name] = 2

    for name in steps:
        if name not in state:
            visit(name, [])

    blocked: dict[str, bool] = {}

    def waits_on_cycle(name: str, seen: frozenset[str]) -> bool:
        if name in blocked:
            return blocked[name]
        result = False
        for pred in getattr(steps[name], "after", []):
            if pred in in_cycle or (
                pred in steps and pred not in seen and waits_on_cycle(pred, seen | {pred})
            ):
                result = True
        blocked[name] = result
        return result

    for name in steps:
        if name not in in_cycle and waits_on_cycle(name, frozenset({name})):
            report.add(("steps", name), "unreachable: it waits on a step in a cycle")


def flow_files(paths: Iterable[str | FsPath]) -> list[FsPath]:
    """The flow files named by `paths`: files as given, directories by their *.yaml/*.yml."""
    files: list[FsPath] = []
    for p in map(FsPath, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml")))
        else:
            files.append(p)
    return files


def load_flows(paths: Iterable[str | FsPath]) -> tuple[list[FlowDef], list[str], list[str]]:
    """Load every flow named by `paths`: (flows, problems, warnings)."""
    flows: list[FlowDef] = []
    problems: list[str] = []
    warnings: list[str] = []
    seen: dict[tuple[str, int], str] = {}
    files = flow_files(paths)
    if not files:
        problems.append("no flow files found in " + ", ".join(map(str, paths)))
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{f}:1: (file): cannot read: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{f}:1: (file): not UTF-8 text")
            continue
        flow, found, warned = load_flow_text(text, str(f))
        problems.extend(found)
        warnings.extend(warned)
        if flow is not None:
            ident = (flow.header.flow, flow.header.version)
            if ident in seen:
                problems.append(
                    f"{f}:1: version: flow '{ident[0]}' version {ident[1]} is "
                    f"also defined in {seen[ident]}"
                )
                continue
            seen[ident] = str(f)
            flows.append(flow)
    return flows, problems, warnings
