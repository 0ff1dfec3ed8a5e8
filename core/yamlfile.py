"""Load YAML documents with the line of every value, and refuse hostile documents.

The workspace and pipeline parsers need "file, line, field" in every error, so this module turns
a YAML document into plain Python values plus a map from field path to line number. It refuses
anchors and aliases (the alias-expansion "billion laughs" bomb), duplicate keys, non-string keys,
oversized documents and overlong lines before any value is built. Depends only on PyYAML.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import yaml

from core.errors import ConfigError

MAX_BYTES = 1024 * 1024
MAX_LINE = 4096
MAX_DEPTH = 32
MAX_NODES = 20_000  # a large workspace has ~2,000; composing 20,000 takes ~0.3 s

Path = tuple[str | int, ...]
# libyaml parses ~25x faster than the pure-Python parser (100k values: 0.09 s against 2.1 s), which
# is what keeps a document at the size limits cheap to refuse; the pure one is the fallback.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def path_text(path: Path) -> str:
    """Render a field path as ``repos[0].path``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class Document:
    """A parsed YAML document: its data and where each field sits."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest parent that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, problem: str, fix: str = "") -> ConfigError:
        """A ConfigError located at `path`."""
        return ConfigError(self.file, self.line(path), path_text(path), problem, fix)


def load(text: str, file: str) -> Document:
    """Parse `text` (the contents of `file`) into a Document.

    Raises:
        ConfigError: the text is not acceptable YAML, with the line of the problem.
    """
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise ConfigError(
            file,
            None,
            "",
            f"file is larger than {MAX_BYTES // 1024} KiB",
            "split it or remove generated content",
        )
    for number, text_line in enumerate(text.splitlines(), 1):
        if len(text_line) > MAX_LINE:
            raise ConfigError(
                file,
                number,
                "",
                f"line is longer than {MAX_LINE} characters",
                "wrap the value with a YAML block scalar (|)",
            )
    try:
        # Refuse anchors and aliases, deep nesting and too many values from the event stream,
        # before any node is composed: this keeps alias-expansion bombs and deeply nested
        # documents (the composer recurses) out in bounded time and memory.
        depth = events = 0
        for event in yaml.parse(text, Loader=_LOADER):
            where = event.start_mark.line + 1 if event.start_mark is not None else None
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(
                    file,
                    where,
                    "",
                    "YAML anchors and aliases (&name, *name) are not allowed",
                    "write the value out in full",
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(file, where, "", f"nested more than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
                events += 1
            if events > MAX_NODES:
                raise ConfigError(file, where, "", f"document has more than {MAX_NODES} values")
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.problem:
            problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise ConfigError(
            file, line, "", f"invalid YAML: {problem}", "check indentation, quotes and colons"
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            file,
            line,
            "",
            f"invalid YAML: character {exc.character!r} is not allowed",
            "remove control characters from the file",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, "", f"invalid YAML: {exc}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(file, None, "", "document is nested too deeply") from None
    if len(nodes) > 1:
        raise ConfigError(
            file,
            nodes[1].start_mark.line + 1,
            "",
            "more than one YAML document",
            "keep a single document (no ---)",
        )
    doc = Document(file, None)
    if nodes and nodes[0] is not None:
        counter = [0]
        doc.data = _build(nodes[0], (), doc, counter, 0)
    return doc


def _build(node: yaml.Node, path: Path, doc: Document, counter: list[int], depth: int) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise doc.error(path, f"document has more than {MAX_NODES} values")
    if depth > MAX_DEPTH:
        raise doc.error(path, f"nested more than {MAX_DEPTH} levels")
    line = node.start_mark.line + 1
    doc.lines.setdefault(path, line)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                raise ConfigError(
                    doc.file,
                    key_node.start_mark.line + 1,
                    path_text(path),
                    "keys must be plain strings (no merge keys or complex keys)",
                )
            key = str(key_node.value)
            if key in result:
                raise ConfigError(
                    doc.file,
                    key_node.start_mark.line + 1,
                    path_text(path + (key,)),
                    "duplicate key",
                    "remove one of the two",
                )
            child = path + (key,)
            doc.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, doc, counter, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, path + (index,), doc, counter, depth + 1)
            for index, item in enumerate(node.value)
        ]
    assert isinstance(node, yaml.ScalarNode)
    scalars = _scalar_loader()
    try:
        return scalars.construct_object(node, deep=True)
    except Exception as exc:
        # a scalar's constructor (a date out of range, a malformed !!timestamp) raises
        # ValueError, AttributeError...: all of them mean a bad value, never a crash
        problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
        raise ConfigError(
            doc.file, line, path_text(path), f"bad value: {problem}", "quote it to make it text"
        ) from None
    finally:
        scalars.constructed_objects.clear()


_LOCAL = threading.local()


def _scalar_loader() -> yaml.SafeLoader:
    """A per-thread constructor used for scalars only (pipelines are parsed in worker threads)."""
    loader: yaml.SafeLoader | None = getattr(_LOCAL, "loader", None)
    if loader is None:
        loader = _LOCAL.loader = yaml.SafeLoader("")
    return loader
