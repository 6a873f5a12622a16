"""Configs read from files a user is handed are data: only plainly registered types build.

mmengine 0.10.7's ``Registry.get`` imports any dotted name it does not know
(``get_object_from_string``), so ``dict(type='os.system', command=...)`` built by any registry
runs that function. Index manifests (``resolved_config``, ``cfg_options``) and export folders
(``video_pipeline``) carry configs that tools build; :func:`checked_file_config` is the one
gate every such value passes first. Configs a user names on the command line are Python the
user chose to run and keep mmengine's behaviour.
"""
from typing import Any, FrozenSet, Iterator, Tuple

__all__ = ['UnsafeFileConfigError', 'checked_file_config', 'registered_names']

#: Scopes a file may name with ``_scope_``: the registries this project builds from.
ALLOWED_SCOPES = frozenset({'mmaction', 'mmengine'})
#: Top-level keys that make mmengine import modules when a config is processed.
IMPORTING_KEYS = frozenset({'custom_imports', '_base_'})
#: The one ``custom_imports`` a file may carry: this project's own (every config has it).
OWN_IMPORTS = dict(imports=['projects.tempme'], allow_failed_imports=False)


class UnsafeFileConfigError(ValueError):
    """A config read from a file names something other than a registered component."""


def registered_names() -> FrozenSet[str]:
    """Every name registered in mmaction2's and mmengine's registries, this project's too.

    Each registry's ``locations`` are imported first (what mmengine does lazily on the first
    build), so the answer does not depend on what happened to be built before.
    """
    from mmaction import registry as mmaction_registry
    from mmengine.registry import Registry
    names = set()
    for value in vars(mmaction_registry).values():
        if not isinstance(value, Registry):
            continue
        try:
            value.import_from_location()
        except ImportError:  # mmaction2 1.2.0's FUNCTION registry names a module it lacks
            pass
        registry = value
        while registry is not None:
            names.update(registry.module_dict)
            registry = registry.parent
    return frozenset(names)


def _walk(value: Any, key: str) -> Iterator[Tuple[str, Any, Any]]:
    """``(key path, dict, its 'type' or '_scope_' value)`` for every dict in ``value``."""
    if isinstance(value, dict):
        for name in ('type', '_scope_'):
            if name in value:
                yield f'{key}.{name}' if key else name, name, value[name]
        for name, item in value.items():
            yield from _walk(item, f'{key}.{name}' if key else str(name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f'{key}.{i}' if key else str(i))


def checked_file_config(value: Any, source: str, key: str = '', flat: bool = False) -> Any:
    """``value`` unchanged once every ``type`` in it is a plainly registered name.

    Walks dicts and lists recursively (pipeline steps, nested components). A ``type`` must be
    a string without dots that some registry of mmaction2 / mmengine / this project holds;
    ``_scope_`` must be one of :data:`ALLOWED_SCOPES`; ``_base_`` and any ``custom_imports``
    but :data:`OWN_IMPORTS` are refused at the top. ``flat=True`` reads ``value`` as
    ``--cfg-options``-style dotted keys (``model.video_encoder.type``). Raises
    :class:`UnsafeFileConfigError` with one line naming ``source`` (the file) and the key.
    """
    if value is None:
        return value
    entries = list(_walk(value, key))
    if isinstance(value, dict):
        for name, item in value.items():
            path = f'{key}.{name}' if key else str(name)
            first, last = str(name).split('.')[0], str(name).rsplit('.', 1)[-1]
            if first in IMPORTING_KEYS and not (name == 'custom_imports'
                                                and item == OWN_IMPORTS):
                raise UnsafeFileConfigError(
                    f'{source}: {path} would import modules; a config read from a file may '
                    f'import {OWN_IMPORTS["imports"]} only')
            if flat and last in ('type', '_scope_'):
                entries.append((path, last, item))
    names = None
    for path, kind, name in entries:
        if kind == '_scope_':
            if name not in ALLOWED_SCOPES:
                raise UnsafeFileConfigError(
                    f'{source}: {path}={name!r} is not one of the scopes '
                    f'{sorted(ALLOWED_SCOPES)}')
            continue
        if not isinstance(name, str) or '.' in name or not name:
            raise UnsafeFileConfigError(
                f'{source}: {path}={name!r} is not a plain registered name (dotted names and '
                'objects are refused in configs read from files)')
        names = registered_names() if names is None else names
        if name not in names:
            raise UnsafeFileConfigError(
                f'{source}: {path}={name!r} is not registered by this project, mmaction2 or '
                'mmengine')
    return value
