"""Bundles (一件事): one submission, several matters, owned by several members.

A bundle is a catalogue entry of its lead department. Its components name other entries,
wait for each other along a DAG, and get their forms filled from the bundle's shared form
and from the results earlier components' approvals carry. Two kinds of checks live here:
those that need the bundle alone (run by the loader on every entry, ours or a peer's), and
those that need the components' own definitions (run where they are known: by the loader
for components in the same file, and by ``yrd catalogue lint`` and the lead node against
the union catalogue). A bundle that passes both can be routed part by part without a
component's owner ever refusing a form the bundle built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence

from yrd.catalogue.v1 import catalogue_pb2

ServiceDefinition = catalogue_pb2.ServiceDefinition
BundleComponent = catalogue_pb2.BundleComponent
FieldType = catalogue_pb2.FieldType

BUNDLE_HANDLER = "bundle"
MAX_COMPONENTS = 20
COMPONENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
FORM_SOURCE = "form."

Lookup = Callable[[str], ServiceDefinition | None]
"""The definition of a service id where it is known, None where it is not."""


def is_bundle(defn: ServiceDefinition) -> bool:
    return defn.handler == BUNDLE_HANDLER


def components(defn: ServiceDefinition) -> Sequence[BundleComponent]:
    return list(defn.bundle.components)


def _cycle(comps: Sequence[BundleComponent]) -> list[str] | None:
    """One cycle among the known names, as a path that returns to its start, or None."""
    after = {c.name: [a for a in c.after] for c in comps}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in after.get(name, []):
            if dep not in after:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if state.get(dep) is None and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[name] = 2
        return None

    for c in comps:
        if state.get(c.name) is None and (found := visit(c.name)) is not None:
            return found
    return None


def ancestors(comps: Sequence[BundleComponent], name: str) -> set[str]:
    """Every component ``name`` waits for, directly or through others (the DAG is checked)."""
    after = {c.name: list(c.after) for c in comps}
    seen: set[str] = set()
    todo = list(after.get(name, []))
    while todo:
        dep = todo.pop()
        if dep not in seen and dep in after:
            seen.add(dep)
            todo.extend(after[dep])
    return seen


def order(comps: Sequence[BundleComponent]) -> list[str]:
    """Component names so that each comes after everything it waits for (stable)."""
    done: list[str] = []
    remaining = [c for c in comps]
    while remaining:
        ready = [c for c in remaining if all(a in done for a in c.after)]
        if not ready:
            raise ValueError("the components' dependencies have a cycle")
        done.extend(c.name for c in ready)
        remaining = [c for c in remaining if c.name not in done]
    return done


def longest_path_days(comps: Sequence[BundleComponent], limits: Mapping[str, int]) -> dict[str, int]:
    """For each component, the working days from submission to its promised end when every
    component it waits for takes its whole time limit: the bundle's limit is the largest."""
    by_name = {c.name: c for c in comps}
    ends: dict[str, int] = {}
    for name in order(comps):
        start = max((ends[a] for a in by_name[name].after), default=0)
        ends[name] = start + limits[name]
    return ends


def bundle_problems(defn: ServiceDefinition) -> Iterator[tuple[str, str]]:
    """What is wrong with a bundle entry on its own; paths use the TOML key names."""
    comps = components(defn)
    if not is_bundle(defn):
        if comps:
            yield "components", f"only a handler = {BUNDLE_HANDLER!r} entry has components"
        return
    if defn.results:
        yield "results", "a bundle has no results of its own; its components have"
    if not 2 <= len(comps) <= MAX_COMPONENTS:
        yield "components", f"a bundle has 2 to {MAX_COMPONENTS} components"
    shared = {f.name for f in defn.form}
    names: list[str] = []
    for i, c in enumerate(comps):
        where = f"components[{i}]"
        if not COMPONENT_NAME.fullmatch(c.name):
            yield f"{where}.name", "must be 1-32 characters of a-z, 0-9, '_', starting with a letter"
        elif c.name in names:
            yield f"{where}.name", f"component {c.name!r} appears twice"
        names.append(c.name)
        if c.service_id == defn.service_id:
            yield f"{where}.service", "a bundle cannot contain itself"
    for i, c in enumerate(comps):
        where = f"components[{i}]"
        for dep in c.after:
            if dep == c.name:
                yield f"{where}.after", f"{c.name!r} cannot wait for itself"
            elif dep not in names:
                yield f"{where}.after", f"no component {dep!r} in this bundle"
    if (cycle := _cycle(comps)) is not None:
        yield "components", "dependencies form a cycle: " + " -> ".join(cycle)
        return
    for i, c in enumerate(comps):
        earlier = ancestors(comps, c.name)
        targets: set[str] = set()
        for m in c.mappings:
            where = f"components[{i}].map.{m.to}"
            if m.to in targets:
                yield where, "mapped twice"
            targets.add(m.to)
            source, _, field = _split(m.source)
            if not field:
                yield where, "must be 'form.<field>' or '<component>.<result>'"
            elif source == "form":
                if field not in shared:
                    yield where, f"the shared form has no field {field!r}"
            elif source not in earlier:
                yield where, f"{source!r} is not a component {c.name!r} waits for"


def _split(source: str) -> tuple[str, str, str]:
    """("form", ".", field) or (component, ".", result)."""
    return source.partition(".")


def _field(fields: Sequence[catalogue_pb2.FormField], name: str) -> catalogue_pb2.FormField | None:
    return next((f for f in fields if f.name == name), None)


def _compatible(source: catalogue_pb2.FormField, target: catalogue_pb2.FormField) -> str | None:
    if source.type != target.type:
        return (
            f"a {FieldType.Name(source.type).removeprefix('FIELD_TYPE_').lower()} cannot fill "
            f"a {FieldType.Name(target.type).removeprefix('FIELD_TYPE_').lower()} field"
        )
    if target.type == FieldType.FIELD_TYPE_ENUM and not set(source.choices) <= set(target.choices):
        return "the source has choices the field does not accept"
    limit = target.max_length
    if (
        target.type == FieldType.FIELD_TYPE_STRING
        and limit
        and (not source.max_length or source.max_length > limit)
    ):
        return f"the source may be longer than the field's {limit} characters"
    return None


def component_problems(defn: ServiceDefinition, lookup: Lookup) -> Iterator[tuple[str, str]]:
    """What is wrong with a bundle given its components' definitions: unknown or nested
    components, mappings to fields a component lacks or of the wrong type, results a
    component does not declare, required fields or materials nobody supplies."""
    if not is_bundle(defn):
        return
    comps = components(defn)
    by_name = {c.name: c for c in comps}
    defs: dict[str, ServiceDefinition] = {}
    for i, c in enumerate(comps):
        found = lookup(c.service_id)
        if found is None:
            yield f"components[{i}].service", f"no service {c.service_id!r} in the catalogue"
        elif is_bundle(found):
            yield f"components[{i}].service", f"{c.service_id!r} is itself a bundle"
        else:
            defs[c.name] = found
    shared_materials = {m.name for m in defn.materials}
    for i, c in enumerate(comps):
        target = defs.get(c.name)
        if target is None:
            continue
        mapped: set[str] = set()
        for m in c.mappings:
            where = f"components[{i}].map.{m.to}"
            mapped.add(m.to)
            to_field = _field(target.form, m.to)
            if to_field is None:
                yield where, f"{c.service_id!r} has no form field {m.to!r}"
                continue
            source, _, name = _split(m.source)
            if source == "form":
                from_field = _field(defn.form, name)
            else:
                owner = defs.get(source)
                if owner is None or source not in by_name:
                    continue  # reported above, or by bundle_problems
                from_field = _field(owner.results, name)
                if from_field is None:
                    yield where, f"{owner.service_id!r} declares no result {name!r}"
                    continue
            if from_field is not None and (problem := _compatible(from_field, to_field)) is not None:
                yield where, problem
        for f in target.form:
            if f.required and f.name not in mapped:
                yield f"components[{i}].map", f"required field {f.name!r} of {c.service_id!r} is not mapped"
        for mat in target.materials:
            if mat.required and mat.name not in shared_materials:
                yield f"components[{i}]", f"required material {mat.name!r} of {c.service_id!r} is not shared"
    if len(defs) == len(comps):
        days = longest_path_days(comps, {n: d.time_limit_days for n, d in defs.items()})
        need = max(days.values())
        if defn.time_limit_days < need:
            yield (
                "time_limit_days",
                f"promises {defn.time_limit_days} working days; the components need {need}",
            )
