"""YAML -> dataclass configs, the one loader of both trainers (unipose-train, unipose-train-refiner).

* Inheritance (as MMPose): `_base_: fly_demo.yaml` (or a list of files) loads those first and
  merges this file on top, mappings recursively, everything else (lists included) replaced; a
  mapping with `_delete_: true` replaces the base's mapping whole.
  A base is looked up beside the file, then among the shipped configs.
* `a.b.c=value` overrides (values parsed as YAML) on top of the files.
* Unknown keys are errors (a typo must not be ignored); numbers written as YAML strings ('2e-4'
  is a string in YAML 1.1) become the field's number type.
* Label source paths (`data.train` / `data.val`: `ann`, `images`) are resolved against the folder
  of the file that names them; `$UNIPOSE_DATA_ROOT` in them is the data root (`--data-root`, the
  UNIPOSE_DATA_ROOT variable, else the checkout's `../shared` where it exists).
* A config named without a path (`own_labels`) is a shipped one (unipose_train/configs/).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
DATA_ROOT_VAR = "UNIPOSE_DATA_ROOT"
# the data folder beside a checkout (shared/ next to the repository), the default data root
CHECKOUT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared"
SOURCE_LISTS = ("train", "val")   # data.<name>: lists of label sources
SOURCE_PATH_KEYS = ("ann", "images")


# ---------------------------------------------------------------------------- finding files

def shipped_config_names() -> List[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def find_config(name_or_path: str | os.PathLike, beside: Optional[Path] = None) -> Path:
    """A config file: the path as given (or beside `beside`, for a `_base_`), else the shipped
    config of that name (`own_labels` or `own_labels.yaml`)."""
    path = Path(os.path.expanduser(str(name_or_path)))
    candidates = [beside / path] if beside is not None and not path.is_absolute() else []
    candidates.append(path)
    if len(path.parts) == 1:
        candidates.append(SHIPPED_CONFIGS / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"))
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"config {str(name_or_path)!r} not found (neither a file nor a shipped config: "
                            f"{', '.join(shipped_config_names())})")


# ---------------------------------------------------------------------------- data root

def data_root(explicit: Optional[str] = None) -> Tuple[Optional[Path], str]:
    """(data root or None, where it came from)."""
    if explicit:
        return Path(os.path.expanduser(explicit)).resolve(), "--data-root"
    if os.environ.get(DATA_ROOT_VAR):
        return Path(os.path.expanduser(os.environ[DATA_ROOT_VAR])).resolve(), DATA_ROOT_VAR
    if CHECKOUT_DATA_ROOT.is_dir():
        return CHECKOUT_DATA_ROOT, "the checkout's ../shared"
    return None, "none"


def resolve_path(p: str, base: Path, root: Optional[str] = None) -> str:
    """`$UNIPOSE_DATA_ROOT/...` under the data root; `~` and $VARS expanded; relative to `base`."""
    for token in (f"${{{DATA_ROOT_VAR}}}", f"${DATA_ROOT_VAR}"):
        if p.startswith(token):
            folder, _ = data_root(root)
            if folder is None:
                raise ValueError(f"{p} needs a data root: pass --data-root DIR or set {DATA_ROOT_VAR}=DIR "
                                 f"(the folder that holds data/)")
            p = str(folder) + p[len(token):]
            break
    p = os.path.expandvars(os.path.expanduser(p))
    return p if os.path.isabs(p) else str((base / p).resolve())


def check_source_paths(sources, root: Optional[str] = None, where: str = "data") -> None:
    """One clear error for a label source whose file is missing (before any loading starts)."""
    folder, origin = data_root(root)
    for i, src in enumerate(sources):
        for key in SOURCE_PATH_KEYS:
            p = getattr(src, key)
            if p is None or Path(p).exists():
                continue
            hint = (f" (data root {folder}, from {origin}: pass --data-root DIR or set {DATA_ROOT_VAR}=DIR)"
                    if folder is not None and p.startswith(str(folder)) else "")
            raise ValueError(f"{where}[{i}].{key}: {p} not found{hint}")


def _resolve_sources(raw: Dict, base: Path, root: Optional[str]) -> None:
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for name in SOURCE_LISTS:
        for src in data.get(name) or ():
            if isinstance(src, dict):
                for key in SOURCE_PATH_KEYS:
                    if isinstance(src.get(key), str):
                        src[key] = resolve_path(src[key], base, root)


# ---------------------------------------------------------------------------- raw YAML

def read_tree(path: Path, root: Optional[str] = None, _chain: Tuple[Path, ...] = ()) -> Dict:
    """The file's mapping with its `_base_` files merged under it and source paths resolved."""
    import yaml

    path = path.resolve()
    if path in _chain:
        raise ValueError(f"config inheritance loops: {' -> '.join(p.name for p in _chain + (path,))}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]}; "
                         f"{getattr(e, 'problem_mark', '') or ''})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config is a mapping of sections, got {type(raw).__name__}")
    _resolve_sources(raw, path.parent, root)
    bases = raw.pop("_base_", None)
    merged: Dict = {}
    for b in [bases] if isinstance(bases, str) else (bases or []):
        merged = deep_merge(merged, read_tree(find_config(b, beside=path.parent), root, _chain + (path,)))
    return deep_merge(merged, raw)


def deep_merge(a: Dict, b: Dict) -> Dict:
    """`b` over `a`, mappings merged recursively; a mapping of `b` with `_delete_: true` replaces
    the one of `a` instead (MMPose's rule: drop what the base set there)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and v.get("_delete_"):
            out[k] = {kk: vv for kk, vv in v.items() if kk != "_delete_"}
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(data: Dict, overrides: Sequence[str]) -> Dict:
    """`a.b.c=value` strings (value parsed as YAML) into a nested dict."""
    import yaml
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. optim.lr=2e-4)")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p, nxt in zip(parts[:-1], parts[1:]):
            if isinstance(node, list):   # data.train.0.ann=...: an index into a list of sources
                node = node[int(p)]
            elif isinstance(node, dict):
                node = node.setdefault(p, [] if nxt.isdigit() else {})
            else:
                raise ValueError(f"override {item!r}: {p} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            i = int(last)
            node.extend([{}] * (i + 1 - len(node)))
            node[i] = yaml.safe_load(value)
        else:
            node[last] = yaml.safe_load(value)
    return data


# ---------------------------------------------------------------------------- dataclasses

def build(cls, data: Any, where: str = ""):
    """Nested dataclass from plain data, by the fields' types (nested dataclasses and lists of
    them); unknown keys are errors."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) in {where or '<root>'}: {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        here = f"{where}.{name}".lstrip(".")
        hint = hints[name]
        item = _list_item(hint)
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, here)
        elif item is not None and dataclasses.is_dataclass(item):
            kwargs[name] = [build(item, v, f"{here}[{i}]") for i, v in enumerate(value or [])]
        else:
            kwargs[name] = _coerce(hint, value, here)
    return cls(**kwargs)


def _list_item(hint):
    return typing.get_args(hint)[0] if typing.get_origin(hint) in (list, List) and typing.get_args(hint) else None


def _number_type(hint):
    """int or float for `int`, `float`, `Optional[int]`, `Optional[float]`; else None."""
    if hint in (int, float):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1 and args[0] in (int, float):
        return args[0]
    return None


def _coerce(hint, value: Any, where: str) -> Any:
    kind = _number_type(hint)
    if kind is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value) if kind is float else int(value)
        except ValueError:
            raise ValueError(f"config {where}: expected a number, got {value!r}") from None
    if isinstance(value, int) and kind is float:
        return float(value)
    return value


def load(cls, path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = (),
         data: Optional[Dict] = None, root: Optional[str] = None):
    """A `cls` config: file(s) (by path or shipped name) + `data` merged + overrides. Relative
    source paths given in `data` or overrides resolve against the config's folder (or the
    working directory without a file)."""
    raw: Dict = {}
    base = Path.cwd()
    if path is not None:
        found = find_config(path)
        raw, base = read_tree(found, root), found.resolve().parent
    if data:
        raw = deep_merge(raw, data)
    raw = apply_overrides(raw, overrides)
    _resolve_sources(raw, base, root)
    return build(cls, raw)
