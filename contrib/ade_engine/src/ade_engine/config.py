"""Config packages: the registry they fill in and the loader that finds them.

A config package is a plain Python package (normally ``ade_config``).  The
loader does not need it to be installed: it locates the package on disk,
imports every module under ``columns/``, ``row_detectors/`` and ``hooks/``
that defines a top-level ``register(registry)`` function, and calls those
functions in sorted module-name order.

Inside ``register`` a module declares fields and hooks::

    def register(registry):
        registry.field(
            "email",
            label="Email",
            aliases=["email", "e_mail", "email_address"],
            pattern=r"[^@\\s]+@[^@\\s]+\\.[A-Za-z]{2,}",
            validator=lambda value: None if "@" in value else "not an email",
            transform=str.lower,
            severity="warning",
        )
        registry.hook("on_table_written", my_hook)
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable

SEVERITIES = ("info", "warning", "error")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
HOOK_STAGES = (
    "on_workbook_start",
    "on_sheet_start",
    "on_table_mapped",
    "on_table_validated",
    "on_table_written",
    "on_workbook_before_save",
)
PLUGIN_FOLDERS = ("columns", "row_detectors", "hooks")
DEFAULT_PACKAGE = "ade_config"

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def normalize_header(value: str | None) -> str | None:
    """Lowercase; every run of non-alphanumerics becomes ``_``; trimmed."""
    if value is None:
        return None
    return _NON_ALNUM.sub("_", value.strip().lower()).strip("_")


class ConfigError(Exception):
    """The config package could not be found, imported or registered."""


@dataclass
class FieldSpec:
    name: str
    label: str | None = None
    aliases: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    validator: Callable[[str], Any] | None = None
    transform: Callable[[str], Any] | None = None
    severity: str = "error"


@dataclass
class Registry:
    fields: dict[str, FieldSpec] = dc_field(default_factory=dict)
    hooks: dict[str, list[Callable[..., Any]]] = dc_field(
        default_factory=lambda: {stage: [] for stage in HOOK_STAGES}
    )

    def field(
        self,
        name: str,
        *,
        label: str | None = None,
        aliases: list[str] | tuple[str, ...] = (),
        pattern: str | None = None,
        validator: Callable[[str], Any] | None = None,
        transform: Callable[[str], Any] | None = None,
        severity: str = "error",
    ) -> FieldSpec:
        """Declare a target field.

        ``aliases`` are compared with the normalised column header (the field
        name itself always counts).  ``pattern`` is a regular expression that
        whole cell values are matched against when no alias matches.
        ``validator`` gets each non-empty (transformed) value and returns
        ``None`` when it is fine, a message, or ``(severity, message)``.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("field name must be a non-empty string")
        if name in self.fields:
            raise ConfigError(f"field {name!r} is registered twice")
        if severity not in SEVERITIES:
            raise ConfigError(f"field {name!r}: severity must be one of {', '.join(SEVERITIES)}")
        for fn, what in ((validator, "validator"), (transform, "transform")):
            if fn is not None and not callable(fn):
                raise ConfigError(f"field {name!r}: {what} is not callable")
        normalized = []
        for alias in (name, *aliases):
            key = normalize_header(str(alias))
            if key and key not in normalized:
                normalized.append(key)
        for other in self.fields.values():
            shared = set(normalized) & set(other.aliases)
            if shared:
                raise ConfigError(
                    f"fields {other.name!r} and {name!r} share the alias {sorted(shared)[0]!r}"
                )
        compiled = None
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"field {name!r}: bad pattern: {exc}") from exc
        spec = FieldSpec(name, label, tuple(normalized), compiled, validator, transform, severity)
        self.fields[name] = spec
        return spec

    def hook(self, stage: str, fn: Callable[..., Any] | None = None):
        """Attach ``fn(context)`` to a hook stage; usable as a decorator."""
        if stage not in HOOK_STAGES:
            raise ConfigError(f"unknown hook stage {stage!r}")

        def attach(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                raise ConfigError(f"hook for {stage!r} is not callable")
            self.hooks[stage].append(func)
            return func

        return attach(fn) if fn is not None else attach

    def counts(self) -> dict[str, int]:
        specs = list(self.fields.values())
        return {
            "fields": len(specs),
            # every field detects by header; a pattern adds a value detector
            "detectors": len(specs) + sum(1 for s in specs if s.pattern is not None),
            "transforms": sum(1 for s in specs if s.transform is not None),
            "validators": sum(1 for s in specs if s.validator is not None),
            "hooks": sum(len(v) for v in self.hooks.values()),
        }


@dataclass
class ConfigPackage:
    path: Path
    package_name: str
    package_dir: Path
    modules: list[str]
    registry: Registry

    @property
    def fields(self) -> list[FieldSpec]:
        return list(self.registry.fields.values())


def locate_package(path: Path) -> tuple[Path, str, Path]:
    """Return (import root, package name, package dir) for a config dir."""
    path = path.resolve()
    if not path.is_dir():
        raise ConfigError(f"config package directory not found: {path}")
    if (path / "__init__.py").is_file():
        return path.parent, path.name, path
    src = path / "src"
    if (src / DEFAULT_PACKAGE / "__init__.py").is_file():
        return src, DEFAULT_PACKAGE, src / DEFAULT_PACKAGE
    if src.is_dir():
        for child in sorted(src.iterdir()):
            if child.is_dir() and (child / "__init__.py").is_file() and child.name.isidentifier():
                return src, child.name, child
    if (path / DEFAULT_PACKAGE / "__init__.py").is_file():
        return path, DEFAULT_PACKAGE, path / DEFAULT_PACKAGE
    raise ConfigError(
        f"no config package found in {path} "
        f"(expected src/{DEFAULT_PACKAGE}/__init__.py, {DEFAULT_PACKAGE}/__init__.py "
        "or a package directory)"
    )


def _defines_register(source_file: Path) -> bool:
    try:
        tree = ast.parse(source_file.read_text(encoding="utf-8"), str(source_file))
    except (SyntaxError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"cannot parse {source_file.name}: {exc}") from exc
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "register"
        for node in tree.body
    )


def discover_modules(package_name: str, package_dir: Path) -> list[str]:
    found = []
    for folder in PLUGIN_FOLDERS:
        base = package_dir / folder
        if not base.is_dir():
            continue
        for source in base.rglob("*.py"):
            rel = source.relative_to(package_dir)
            if source.name.startswith("_"):
                continue
            if any(part == "tests" or part.startswith((".", "_")) for part in rel.parts[:-1]):
                continue
            if _defines_register(source):
                found.append(".".join((package_name, *rel.with_suffix("").parts)))
    return sorted(found)


def load_config_package(path: Path | str) -> ConfigPackage:
    """Import a config package and run its ``register`` functions."""
    import_root, package_name, package_dir = locate_package(Path(path))
    modules = discover_modules(package_name, package_dir)
    if not modules:
        raise ConfigError(
            f"config package {package_name!r} has no module defining register(registry) "
            f"under {', '.join(f + '/' for f in PLUGIN_FOLDERS)}"
        )

    for name in [m for m in sys.modules if m == package_name or m.startswith(package_name + ".")]:
        del sys.modules[name]

    registry = Registry()
    root = str(import_root)
    sys.path.insert(0, root)
    saved_bytecode_flag = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # keep the (possibly shared) config dir clean
    try:
        importlib.invalidate_caches()
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # noqa: BLE001 - config code may raise anything
                raise ConfigError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
            register = getattr(module, "register", None)
            if not callable(register):
                raise ConfigError(f"{module_name}.register is not callable")
            try:
                register(registry)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"{module_name}.register failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.dont_write_bytecode = saved_bytecode_flag
        try:
            sys.path.remove(root)
        except ValueError:
            pass
    return ConfigPackage(Path(path).resolve(), package_name, package_dir, modules, registry)
