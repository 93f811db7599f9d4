#!/usr/bin/env python3
"""Validates OCSF events (JSON Lines) against the OCSF schema definitions themselves.

The definitions are the `ocsf/ocsf-schema` repository's files at a release tag, vendored next to
this script (`schema-1.1.0/`, Apache-2.0, see its LICENSE). Classes and objects are compiled the
way the OCSF server does: `extends` chains (base_event -> category event -> class), `$include`d
files (includes/, profiles/), attribute properties from `dictionary.json` overlaid by the class's
own, enums merged along the chain.

Each event is checked for: a known `class_uid` and the matching `category_uid`;
`type_uid = class_uid * 100 + activity_id`; every required attribute present (a profile's only when
`metadata.profiles` names it); no attribute the class or object does not define (except inside
`unmapped` and other `object`-typed values); every value of its dictionary type (string, integer,
long, float, boolean, object, arrays where `is_array`), regexes and ranges of the derived types,
enum values defined; object constraints (`at_least_one`, `just_one`).

Usage: validate.py [--schema DIR] [FILE ...]   (JSON Lines; stdin when no file)
Exit status 0 when every event is valid, 1 otherwise; one line per problem on stdout.
"""

import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def merge_attr(base, over):
    out = dict(base)
    for k, v in over.items():
        if k == "enum" and isinstance(out.get("enum"), dict) and isinstance(v, dict):
            out["enum"] = {**out["enum"], **v}
        else:
            out[k] = v
    return out


class Schema:
    def __init__(self, root):
        self.root = root
        dictionary = self._load("dictionary.json")
        self.dict_attrs = dictionary["attributes"]
        self.types = dictionary["types"]["attributes"]
        self.version = self._load("version.json")["version"]
        self.categories = {
            name: c["uid"] for name, c in self._load("categories.json")["attributes"].items()
        }
        self.raw_events = {}
        for path in glob.glob(os.path.join(root, "events", "**", "*.json"), recursive=True):
            d = self._read(path)
            self.raw_events[d["name"]] = d
        self.raw_objects = {}
        for path in glob.glob(os.path.join(root, "objects", "*.json")):
            d = self._read(path)
            self.raw_objects[d["name"]] = d
        self._events = {}
        self._objects = {}
        self.classes = {}
        for name in self.raw_events:
            ev = self.event(name)
            if ev.get("uid") is not None and ev.get("category") in self.categories:
                self.classes[ev["class_uid"]] = ev

    def _read(self, path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _load(self, rel):
        return self._read(os.path.join(self.root, rel))

    def _attributes(self, raw):
        """A definition's own attributes with its `$include`s merged in (own ones win)."""
        attrs = {}
        own = dict(raw.get("attributes", {}))
        for rel in own.pop("$include", []):
            inc = self._load(rel)
            profile = inc.get("name") if rel.startswith("profiles/") else None
            inc_attrs = self._attributes(inc)
            for k, v in inc_attrs.items():
                v = dict(v)
                if profile and "profile" not in v:
                    v["profile"] = profile
                attrs[k] = merge_attr(attrs.get(k, {}), v)
        for k, v in own.items():
            attrs[k] = merge_attr(attrs.get(k, {}), v)
        return attrs

    def event(self, name):
        if name in self._events:
            return self._events[name]
        raw = self.raw_events[name]
        parent = self.event(raw["extends"]) if raw.get("extends") else {"attributes": {}}
        attrs = dict(parent["attributes"])
        for k, v in self._attributes(raw).items():
            attrs[k] = merge_attr(attrs.get(k, {}), v)
        ev = {
            "name": name,
            "category": raw.get("category", parent.get("category")),
            "uid": raw.get("uid"),
            "attributes": attrs,
        }
        if ev["uid"] is not None and ev["category"] in self.categories:
            ev["category_uid"] = self.categories[ev["category"]]
            ev["class_uid"] = ev["category_uid"] * 1000 + ev["uid"]
        self._events[name] = ev
        return ev

    def object(self, name):
        if name in self._objects:
            return self._objects[name]
        raw = self.raw_objects.get(name)
        if raw is None:
            return None
        parent = self.object(raw["extends"]) if raw.get("extends") else None
        attrs = dict(parent["attributes"]) if parent else {}
        for k, v in self._attributes(raw).items():
            attrs[k] = merge_attr(attrs.get(k, {}), v)
        constraints = dict(parent["constraints"]) if parent else {}
        constraints.update(raw.get("constraints", {}))
        if name == "observable":
            attrs["type_id"] = merge_attr(attrs["type_id"], {"enum": self.observable_types()})
        obj = {"name": name, "attributes": attrs, "constraints": constraints}
        self._objects[name] = obj
        return obj

    def observable_types(self):
        """`observable.type_id`'s values, as the OCSF server compiles them: every dictionary type
        and object that carries an `observable` number."""
        out = {}
        for name, t in self.types.items():
            if "observable" in t:
                out[str(t["observable"])] = {"caption": t.get("caption", name)}
        for name, o in self.raw_objects.items():
            if "observable" in o:
                out[str(o["observable"])] = {"caption": o.get("caption", name)}
        for name, a in self.dict_attrs.items():
            if "observable" in a:
                out[str(a["observable"])] = {"caption": a.get("caption", name)}
        return out

    def definition(self, attr, local):
        """The dictionary's definition of `attr`, overlaid by the class's or object's own."""
        return merge_attr(self.dict_attrs.get(attr, {}), local)

    def base_type(self, t):
        seen = set()
        while t in self.types and self.types[t].get("type") and t not in seen:
            seen.add(t)
            t = self.types[t]["type"]
        return t


class Validator:
    def __init__(self, schema):
        self.s = schema

    def event(self, ev):
        errors = []
        cls = self.s.classes.get(ev.get("class_uid"))
        if cls is None:
            return [f"class_uid {ev.get('class_uid')!r} is not an OCSF {self.s.version} class"]
        if ev.get("category_uid") != cls["category_uid"]:
            errors.append(
                f"category_uid {ev.get('category_uid')!r} is not {cls['category_uid']} ({cls['category']})"
            )
        activity = ev.get("activity_id")
        if isinstance(activity, int) and ev.get("type_uid") != cls["class_uid"] * 100 + activity:
            errors.append(
                f"type_uid {ev.get('type_uid')!r} is not class_uid * 100 + activity_id ({cls['class_uid'] * 100 + activity})"
            )
        profiles = set((ev.get("metadata") or {}).get("profiles") or [])
        errors += self.attributes(ev, cls["attributes"], {}, cls["name"], profiles)
        return errors

    def attributes(self, value, attrs, constraints, where, profiles):
        errors = []
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        for name, local in attrs.items():
            req = local.get("requirement")
            profile = local.get("profile")
            if req == "required" and name not in value and (profile is None or profile in profiles):
                errors.append(f"{where}.{name}: required attribute missing")
        for name, v in value.items():
            if name not in attrs:
                errors.append(f"{where}.{name}: not an attribute of {where.split('.')[0] if '.' not in where else where}")
                continue
            errors += self.value(v, self.s.definition(name, attrs[name]), f"{where}.{name}", profiles)
        for names in [constraints.get("at_least_one")] if constraints.get("at_least_one") else []:
            if not any(n in value for n in names):
                errors.append(f"{where}: needs at least one of {names}")
        if constraints.get("just_one"):
            present = [n for n in constraints["just_one"] if n in value]
            if len(present) != 1:
                errors.append(f"{where}: needs exactly one of {constraints['just_one']}, has {present}")
        return errors

    def value(self, v, d, where, profiles):
        if d.get("is_array"):
            if not isinstance(v, list):
                return [f"{where}: expected an array"]
            out = []
            for i, item in enumerate(v):
                out += self.scalar(item, d, f"{where}[{i}]", profiles)
            return out
        return self.scalar(v, d, where, profiles)

    def scalar(self, v, d, where, profiles):
        t = d.get("type")
        if t is None:
            return [f"{where}: attribute has no type in the dictionary"]
        base = self.s.base_type(t)
        if base == "object_t" or t in self.s.raw_objects:
            obj = self.s.object(d.get("object_type") if base == "object_t" else t)
            if obj is None:
                return [f"{where}: unknown object type {d.get('object_type')!r}"]
            if obj["name"] == "object":
                return [] if isinstance(v, dict) else [f"{where}: expected an object"]
            return self.attributes(v, obj["attributes"], obj["constraints"], where, profiles)
        ok = {
            "string_t": lambda x: isinstance(x, str),
            "integer_t": lambda x: isinstance(x, int) and not isinstance(x, bool) and -(2**31) <= x < 2**31,
            "long_t": lambda x: isinstance(x, int) and not isinstance(x, bool),
            "float_t": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
            "boolean_t": lambda x: isinstance(x, bool),
            "json_t": lambda x: True,
        }.get(base)
        if ok is None:
            return [f"{where}: unknown type {t}"]
        if not ok(v):
            return [f"{where}: {v!r} is not {t}"]
        errors = []
        tdef = self.s.types.get(t, {})
        if "regex" in tdef and isinstance(v, str) and not re.fullmatch(tdef["regex"], v):
            errors.append(f"{where}: {v!r} does not match {t}")
        if "max_len" in tdef and isinstance(v, str) and len(v) > tdef["max_len"]:
            errors.append(f"{where}: longer than {tdef['max_len']}")
        if "range" in tdef and isinstance(v, int) and not tdef["range"][0] <= v <= tdef["range"][1]:
            errors.append(f"{where}: {v} outside {tdef['range']}")
        enum = d.get("enum")
        # The uids that name the class are checked against the class itself (see `event`).
        if where.count(".") == 1 and where.rsplit(".", 1)[1] in ("class_uid", "category_uid", "type_uid"):
            enum = None
        if enum and str(v) not in enum:
            errors.append(f"{where}: {v!r} is not one of {sorted(enum, key=str)}")
        return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schema", default=os.path.join(HERE, "schema-1.1.0"))
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    validator = Validator(Schema(args.schema))
    streams = [open(f, encoding="utf-8") for f in args.files] or [sys.stdin]
    bad = total = 0
    for stream in streams:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            total += 1
            try:
                ev = json.loads(line)
            except ValueError as e:
                print(f"{stream.name}:{n}: not JSON: {e}")
                bad += 1
                continue
            errors = validator.event(ev)
            if errors:
                bad += 1
                for e in errors:
                    print(f"{stream.name}:{n}: {e}")
    print(f"{total - bad} of {total} events valid against OCSF {validator.s.version}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
