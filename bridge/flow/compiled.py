"""A valid flow compiled into the plain tables the engine runs on.

Everything the engine asks per event is a dict or tuple lookup here: which steps an event
completes or fails, which steps follow a step, which fields to keep. `graph` draws from the
same tables, so the picture is the behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from bridge.flow.loader import FlowDef
from bridge.flow.model import CommandSpec, CompensationSpec, EventSpec
from bridge.flow.paths import MISSING, Path, compile_match_key, compile_path

Mode = Literal["observe", "shadow", "orchestrate"]


@dataclass(frozen=True, slots=True)
class Template:
    """A command to render: literal values, with `$key` and `$events.NAME.field` filled in."""

    name: str
    to: str
    payload: Any  # nested dicts/lists whose leaves may be Path objects
    done: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class EventTable:
    name: str
    source: str
    match: tuple[tuple[Path, tuple[Any, ...]], ...]  # path, accepted values
    key: Path | None  # None: `$.<flow key>`, else the message's own key
    id: Path | None
    time: Path | None
    associate: tuple[tuple[str, Path], ...]
    via: str | None
    keep: tuple[Path, ...]  # payload paths that command templates read
    done_of: tuple[int, ...]  # steps this event completes
    failed_of: tuple[int, ...]  # steps this event fails
    compensated_of: tuple[int, ...]  # steps whose compensation this event confirms


@dataclass(frozen=True, slots=True)
class StepTable:
    name: str
    index: int
    after: tuple[int, ...]
    successors: tuple[int, ...]
    mode: Mode
    deadline_ms: int | None
    attempts: int
    backoff: str
    initial_ms: int
    max_ms: int | None
    jitter: float
    command: Template | None
    compensate: Template | None


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    name: str
    version: int
    key_name: str
    mode: Mode
    deadline_ms: int | None
    orphan_ttl_ms: int
    on_failure: str
    start: str
    events: dict[str, EventTable]
    steps: tuple[StepTable, ...]
    step_index: dict[str, int]
    roots: tuple[int, ...]
    complete_when: tuple[int, ...]
    file: str

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.source for e in self.events.values()))

    @property
    def destinations(self) -> tuple[str, ...]:
        """Where the flow's commands and compensations go."""
        templates = (t for s in self.steps for t in (s.command, s.compensate) if t is not None)
        return tuple(dict.fromkeys(t.to for t in templates))


def _template(spec: CommandSpec) -> Template:
    def walk(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            return compile_path(value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    done = frozenset(spec.done or ()) if isinstance(spec, CompensationSpec) else frozenset()
    return Template(spec.name, spec.to, walk(spec.payload), done)


def template_paths(value: Any) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from template_paths(v)
    elif isinstance(value, list):
        for v in value:
            yield from template_paths(v)


def render(value: Any, key: str, fields: dict[str, dict[str, Any]]) -> Any:
    """Fill a template from the instance: its key and the fields it kept of its events."""
    if isinstance(value, Path):
        if value.kind == "key":
            return key
        kept = fields.get(value.event or "", {})
        return kept.get(value.text, None)
    if isinstance(value, dict):
        return {k: render(v, key, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, key, fields) for v in value]
    return value


def _event_table(
    name: str, spec: EventSpec, steps: list[tuple[str, Any]], keep: list[Path]
) -> EventTable:
    match = tuple(
        (compile_match_key(k), tuple(v) if isinstance(v, list) else (v,))
        for k, v in spec.match.items()
    )
    return EventTable(
        name=name,
        source=spec.source,
        match=match,
        key=compile_path(spec.key) if spec.key else None,
        id=compile_path(spec.id) if spec.id else None,
        time=compile_path(spec.time) if spec.time else None,
        associate=tuple((a, compile_path(p)) for a, p in spec.associate.items()),
        via=spec.via,
        keep=tuple(keep),
        done_of=tuple(i for i, (_, s) in enumerate(steps) if name in s.done),
        failed_of=tuple(i for i, (_, s) in enumerate(steps) if name in (s.failed or ())),
        compensated_of=tuple(
            i
            for i, (_, s) in enumerate(steps)
            if s.compensate is not None and name in (s.compensate.done or ())
        ),
    )


def compile_flow(flow: FlowDef) -> CompiledFlow:
    h = flow.header
    step_items = list(flow.steps.items())
    index = {name: i for i, (name, _) in enumerate(step_items)}
    tables: list[StepTable] = []
    for i, (name, s) in enumerate(step_items):
        retry = s.retry
        tables.append(
            StepTable(
                name=name,
                index=i,
                after=tuple(index[p] for p in s.after),
                successors=tuple(j for j, (_, t) in enumerate(step_items) if name in t.after),
                mode=s.mode or h.mode,
                deadline_ms=s.deadline,
                attempts=retry.attempts if retry else 1,
                backoff=retry.backoff if retry else "exponential",
                initial_ms=retry.initial if retry else 1_000,
                max_ms=retry.max if retry else None,
                jitter=retry.jitter if retry else 0.0,
                command=_template(s.command) if s.command else None,
                compensate=_template(s.compensate) if s.compensate else None,
            )
        )
    keep: dict[str, dict[str, Path]] = {}
    for t in tables:
        for tpl in (t.command, t.compensate):
            if tpl is not None:
                for p in template_paths(tpl.payload):
                    if p.kind == "event" and p.event is not None:
                        keep.setdefault(p.event, {})[p.text] = p
    events = {
        name: _event_table(name, spec, step_items, list(keep.get(name, {}).values()))
        for name, spec in flow.events.items()
    }
    complete = h.complete_when or list(index)
    return CompiledFlow(
        name=h.flow,
        version=h.version,
        key_name=h.key,
        mode=h.mode,
        deadline_ms=h.deadline,
        orphan_ttl_ms=h.orphan_ttl,
        on_failure=h.on_failure,
        start=h.start,
        events=events,
        steps=tuple(tables),
        step_index=index,
        roots=tuple(t.index for t in tables if not t.after),
        complete_when=tuple(index[n] for n in complete),
        file=flow.file,
    )


def with_mode(flow: CompiledFlow, mode: str) -> CompiledFlow:
    """The same flow with every step in `mode`: replay recorded traffic as shadow, say."""
    if mode not in ("observe", "shadow", "orchestrate"):
        raise ValueError(f"unknown mode {mode!r}")
    as_mode = cast(Mode, mode)
    return replace(flow, mode=as_mode, steps=tuple(replace(s, mode=as_mode) for s in flow.steps))


def read_kept(event: EventTable, payload: Any) -> dict[str, Any]:
    """The fields of `payload` that this event's templates read, by path text."""
    out: dict[str, Any] = {}
    for p in event.keep:
        value = p.read(payload)
        if value is not MISSING:
            out[p.text] = value
    return out


class Catalog:
    """The loaded flows by name and version: new instances take a flow's highest version, a
    running instance keeps the one it started on."""

    def __init__(self, flows: Iterable[CompiledFlow]) -> None:
        self.versions = {(f.name, f.version): f for f in flows}
        self.latest: dict[str, CompiledFlow] = {}
        for f in sorted(self.versions.values(), key=lambda f: f.version):
            self.latest[f.name] = f

    def get(self, name: str, version: int | None = None) -> CompiledFlow | None:
        if version is not None:
            found = self.versions.get((name, version))
            if found is not None:
                return found
        return self.latest.get(name)

    def __iter__(self) -> Iterator[CompiledFlow]:
        return iter(self.versions.values())
