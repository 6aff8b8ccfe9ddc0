"""Rules over the package's source, read with `ast` (nothing is imported): no import cycle between the
modules of cis_stream/, and nothing that unpickles or loads YAML unsafely anywhere that ships."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = Path(REPO_ROOT) / 'cis_stream'


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not `.__init__`)."""
    modules = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = path.relative_to(REPO_ROOT).with_suffix('').parts
        modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return modules


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def imported_modules(name: str, source: str, is_package: bool, modules) -> set[str]:
    """The package's modules that `name` imports anywhere in its source: at module level or inside a
    function (a function-level import still makes the modules depend on each other), except under
    `if TYPE_CHECKING:`. `from a.b import c` counts a.b, and a.b.c when that is a module."""
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split('.') if is_package else name.split('.')[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = '.'.join(package + ([base] if base else []))
            found.add(base)
            found.update(f'{base}.{alias.name}' for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source, name))
    return {m for m in found if m in modules and m != name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per back edge of a depth-first walk; none for an acyclic graph."""
    cycles, state, stack = [], {}, []

    def walk(node: str) -> None:
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert import_cycles({'a': {'b'}, 'b': {'c'}, 'c': set()}) == []
    assert import_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert import_cycles({'a': {'a'}}) == [['a', 'a']]
    # A function-level import closes a cycle too; one under `if TYPE_CHECKING:` does not.
    modules = {'pkg', 'pkg.a', 'pkg.b', 'pkg.sub', 'pkg.sub.c'}
    source = {'pkg.a': 'import pkg.b\n',
              'pkg.b': 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n'
                       'def f():\n    from pkg import a\n'}
    graph = {name: imported_modules(name, text, False, modules) for name, text in source.items()}
    assert graph == {'pkg.a': {'pkg.b'}, 'pkg.b': {'pkg', 'pkg.a'}}
    # Relative imports resolve from the module's package (or from the package itself, in an __init__).
    assert imported_modules('pkg.sub.c', 'from .. import a\nfrom . import c\n', False, modules) == {
        'pkg', 'pkg.a', 'pkg.sub'}
    assert imported_modules('pkg.sub', 'from .c import x\nfrom ..b import y\n', True, modules) == {
        'pkg.sub.c', 'pkg.b'}
    assert import_cycles(graph) == [['pkg.a', 'pkg.b', 'pkg.a']]


def test_no_import_cycle_in_the_package():
    modules = module_files()
    assert {'cis_stream.cli', 'cis_stream.index.job', 'cis_stream.format.manifest'} <= set(modules)
    graph = {name: imported_modules(name, path.read_text(encoding='utf-8'), path.name == '__init__.py', modules)
             for name, path in modules.items()}
    assert graph['cis_stream.index.job'], 'the walk sees the imports'
    cycles = import_cycles(graph)
    assert not cycles, 'import cycle(s) in cis_stream/: ' + '; '.join(' -> '.join(c) for c in cycles)


FORBIDDEN = re.compile(r'\bimport (c?pickle|dill|joblib|shelve)\b|allow_pickle\s*=\s*True|torch\.load\(|'
                       r'yaml\.(unsafe_)?load\(|yaml\.(Unsafe|Full)?Loader\b|allow_unsafe_types\s*=\s*True')


def test_no_pickle_or_unsafe_loading_in_the_code():
    """Source scan of everything that ships (the package, every subpackage, train.py): nothing that
    unpickles or loads YAML unsafely."""
    shipped = sorted(PACKAGE.rglob('*.py')) + sorted(Path(REPO_ROOT).glob('*.py'))
    found = [f'{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}'
             for path in shipped for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1)
             if FORBIDDEN.search(line)]
    assert found == []
    scanned = {str(path.relative_to(REPO_ROOT)) for path in shipped}
    assert {'cis_stream/dataset.py', 'cis_stream/format/reader.py', 'train.py'} <= scanned  # the scan saw them
    assert FORBIDDEN.search('state = torch.load(path)') and FORBIDDEN.search('yaml.load(text, Loader=yaml.Loader)')


def test_the_demo_finds_train_py_and_the_yamls():
    """`make demo` runs train.py with yamls/ from the repository root (a moved module once lost them)."""
    from cis_stream.demo.__main__ import ROOT
    assert os.path.isfile(os.path.join(ROOT, 'train.py'))
    assert all(os.path.isfile(os.path.join(ROOT, 'yamls', name)) for name in ('cis.yaml', 'uniform.yaml'))
