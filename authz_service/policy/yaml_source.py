"""Read YAML while remembering where each key is, so problems can name a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from authz_service.policy.errors import KeyPath, Problem


class YamlDocument:
    """A parsed YAML file and the line of every key path in it."""

    def __init__(self, file: Path) -> None:
        self.file = str(file)
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[Problem] = []
        self.data: Any = None
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(self.file, (), f"cannot read the file: {exc}"))
            return
        try:
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                self.data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            self.problems.append(Problem(self.file, (), f"not valid YAML: {exc}", line))
            return
        if node is not None:
            self._index(node, ())

    def line_of(self, path: KeyPath) -> int | None:
        """The line of the deepest known key on ``path``."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def _index(self, node: yaml.Node, path: KeyPath) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    self.problems.append(Problem(self.file, (*path, key), "duplicate key", line))
                seen.add(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self._index(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._index(item, (*path, index))
