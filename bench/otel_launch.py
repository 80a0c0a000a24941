"""taskgate's CLI without the ``otel`` extra, or tracing to memory (bench section 17, bench/tracing.py).

``python -m bench.otel_launch absent api ...``: the process runs as it would had taskgate been
installed without its ``otel`` extra, though this venv has it. A ``sys.meta_path`` finder ahead
of the others makes importing any module of the distributions the extra adds raise ImportError:
those ``taskgate[otel]`` requires (with their own requirements) and taskgate's other requirements
do not (the SDK, the OTLP exporter, its protobuf and requests, ...). ``opentelemetry-api`` stays:
FastAPI (0.165 here) requires it, so a plain ``pip install taskgate`` has it too.

``python -m bench.otel_launch memory api ...``: an SDK ``TracerProvider`` exporting through a
``BatchSpanProcessor`` to an ``InMemorySpanExporter`` (holding the last 10,000 spans, so a long
run's memory stays bounded) is set before the CLI starts, as an app that set up OpenTelemetry
itself would (``TASKGATE_OTEL`` stays unset: taskgate uses the provider it finds).

The rest of the arguments are ``taskgate``'s own.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.metadata import Distribution, PackageNotFoundError, distribution, distributions
from pathlib import PurePosixPath
from types import ModuleType

from packaging.requirements import Requirement


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: Iterable[Requirement]) -> set[str]:
    """The installed distributions ``requirements`` need, theirs included (no extras of theirs)."""
    found: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        if _name(requirement.name) in found:
            continue
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            continue
        found.add(_name(requirement.name))
        todo += [need for need in map(Requirement, dist.requires or ())
                 if need.marker is None or need.marker.evaluate({"extra": ""})]
    return found


def _modules(dist: Distribution) -> set[str]:
    """The dotted names of the modules and packages (namespace ones too) ``dist`` installs."""
    names: set[str] = set()
    for file in dist.files or ():
        path = PurePosixPath(str(file))
        if path.parts[0] == ".." or path.parts[0].endswith((".dist-info", ".data")) \
                or not path.name.endswith((".py", ".so", ".pyd")):
            continue
        parents = path.parts[:-1]
        names.update(".".join(parents[:i]) for i in range(1, len(parents) + 1))
        stem = path.name.split(".")[0]
        if stem != "__init__":
            names.add(".".join([*parents, stem]))
    return names


def extra_modules(extra: str = "otel") -> set[str]:
    """The modules only ``taskgate[extra]``'s distributions install (a namespace package others
    share, such as ``opentelemetry``, is not among them)."""
    requirements = [Requirement(text) for text in distribution("taskgate").requires or ()]
    base = _closure(need for need in requirements if need.marker is None or need.marker.evaluate({"extra": ""}))
    added = _closure(need for need in requirements if need.marker is not None
                     and need.marker.evaluate({"extra": extra})) - base
    gone: set[str] = set()
    kept: set[str] = set()
    for dist in distributions():
        (gone if _name(dist.metadata["Name"]) in added else kept).update(_modules(dist))
    return gone - kept


class Absent(MetaPathFinder):
    """Finds none of ``names``: importing one raises ModuleNotFoundError, as if not installed."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def absent() -> None:
    names = extra_modules()
    if "opentelemetry.sdk" not in names or any(name in sys.modules for name in names):
        raise SystemExit("bench.otel_launch: cannot hide the otel extra (not installed, or imported already)")
    sys.meta_path.insert(0, Absent(names))


def in_memory() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from taskgate import tracing

    provider = TracerProvider(resource=Resource.create({"service.name": "taskgate-api"}))
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter(max_spans=10_000)))
    trace.set_tracer_provider(provider)
    if not tracing.active():
        raise SystemExit("bench.otel_launch: taskgate does not see the provider set")


def main() -> None:
    modes = {"absent": absent, "memory": in_memory}
    if len(sys.argv) < 2 or sys.argv[1] not in modes:
        raise SystemExit(f"usage: python -m bench.otel_launch {{{','.join(modes)}}} <taskgate arguments>")
    modes[sys.argv[1]]()
    sys.argv = ["taskgate", *sys.argv[2:]]
    from taskgate.service.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
