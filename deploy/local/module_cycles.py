#!/usr/bin/env python3
"""Fails when a crate's top-level modules depend on each other in a cycle.

A module `a` depends on `b` when code in `src/a.rs` or `src/a/` names
`crate::b` (comments and `#[cfg(test)] mod tests` excluded). A cycle means
neither module can be read, tested or changed without the other; the fix is
to move what both need into a module of its own, or to hand a module the
parts it needs instead of a pointer back.

Usage: module_cycles.py CRATE_DIR...   (each with a src/ directory)
"""

import os
import re
import sys

REFERENCE = re.compile(r"crate::([a-z_0-9]+)")


def top_module(path, src):
    parts = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    return None if parts[0] in ("lib", "main") else parts[0]


def code_of(path):
    lines = [line for line in open(path, encoding="utf-8").read().split("\n") if not line.strip().startswith("//")]
    text = "\n".join(lines)
    tests = text.find("#[cfg(test)]\nmod tests")
    return text if tests < 0 else text[:tests]


def dependencies(crate):
    src = os.path.join(crate, "src")
    files = [
        os.path.join(directory, name)
        for directory, _, names in os.walk(src)
        for name in names
        if name.endswith(".rs")
    ]
    modules = {top_module(f, src) for f in files} - {None}
    edges = {module: set() for module in modules}
    for path in files:
        module = top_module(path, src)
        if module is None:
            continue
        for named in REFERENCE.findall(code_of(path)):
            if named in modules and named != module:
                edges[module].add(named)
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main(crates):
    failed = False
    for crate in crates:
        edges = dependencies(crate)
        for component in cycles(edges):
            failed = True
            print(f"{crate}: modules in a cycle: {', '.join(component)}")
            for module in component:
                print(f"  {module} -> {', '.join(sorted(edges[module] & set(component)))}")
    if not failed:
        print(f"no module cycles in {', '.join(crates)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["."]))
