"""What this project's tools show on the console: progress and results, not dumps.

mmengine's runner logs the system environment, the whole config and the hook order
(250-360 lines) before its first step, and its file I/O logs two deprecation notices
about backends none of our code chooses. The tools keep these in the run's log file only
and print one line saying where they are. Nothing here runs at import: the filters are
attached by the tools to the loggers they create.
"""
import contextlib
import logging
import re
from typing import ContextManager, Iterator, Optional, Pattern, Tuple, Type

from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from projects.tempme_cli import UserError

__all__ = ['FILE_ONLY_MESSAGES', 'FileOnly', 'quiet_console', 'build_quiet_runner',
           'drop_root_messages', 'random_weights_expected', 'QUANTIZATION_ADVICE']

#: Log messages written to the log file only (regexes, searched in the message):
#: - the runner's environment, config and hook-order dumps, its SyncBN notice and the
#:   optimizer's four lines per parameter with its own settings (paramwise_cfg);
#: - mmengine 0.10's notices that ``FileClient`` / ``HardDiskBackend`` will be deprecated,
#:   logged whenever mmaction2's decord reader or mmengine's checkpoint hook opens a file.
FILE_ONLY_MESSAGES: Tuple[Pattern[str], ...] = (
    re.compile(r'\A\s*-+\s*System environment:'),
    re.compile(r'\AConfig:\n'),
    re.compile(r'\AHooks will be executed in the following order'),
    re.compile(r'\ADistributed training is not used, all SyncBatchNorm'),
    re.compile(r'\Aparamwise_options -- '),
    re.compile(r'"FileClient" will be deprecated in future'),
    re.compile(r'"HardDiskBackend" is the alias of "LocalBackend"'),
)


class FileOnly(logging.Filter):
    """Drops :data:`FILE_ONLY_MESSAGES` from the handler it is attached to."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in FILE_ONLY_MESSAGES)


def quiet_console(logger: Optional[logging.Logger] = None) -> logging.Logger:
    """Attach :class:`FileOnly` to the console handlers of ``logger`` (default: mmengine's
    current logger, created if none exists); file handlers keep every message."""
    logger = logger if logger is not None else MMLogger.get_current_instance()
    for handler in logger.handlers:
        console = isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler)
        if console and not any(isinstance(f, FileOnly) for f in handler.filters):
            handler.addFilter(FileOnly())
    return logger


def _quiet(runner_cls: Type[Runner]) -> Type[Runner]:
    """``runner_cls`` whose logger keeps the dumps out of the console from the start."""

    def build_logger(self, *args, **kwargs) -> MMLogger:
        return quiet_console(runner_cls.build_logger(self, *args, **kwargs))

    namespace = dict(build_logger=build_logger, __module__=runner_cls.__module__)
    return type(runner_cls.__name__, (runner_cls, ), namespace)


def build_quiet_runner(cfg: Config, config: Optional[str] = None) -> Runner:
    """The config's runner, as :func:`projects.tempme.engine.runtime.build_runner` builds
    it, with the environment, config and hook dumps in its log file only (one console line
    names the file).

    Building the runner builds the model, hooks and optimizer from the config, so a
    ``ValueError``, ``TypeError`` or ``KeyError`` raised meanwhile is a config error: it
    is raised as a :class:`~projects.tempme_cli.UserError` naming ``config``.
    """
    try:
        return _build_quiet_runner(cfg)
    except (ValueError, TypeError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise UserError(f'{config or "config"}: {type(err).__name__}: {message}') from err


def _build_quiet_runner(cfg: Config) -> Runner:
    from .engine.runtime import adapt_to_device

    cfg = adapt_to_device(cfg)
    runner_type = cfg.get('runner_type', 'Runner')
    with RUNNERS.switch_scope_and_registry(cfg.get('_scope_')) as registry:
        runner_cls = registry.get(runner_type) if isinstance(runner_type, str) else runner_type
        if runner_cls is None:
            raise KeyError(f'runner_type {runner_type!r} is not registered')
        runner = _quiet(runner_cls).from_cfg(cfg)
    runner.logger.info(f'environment, config and hook order: {runner.logger.log_file}')
    return runner


class _DropMessages(logging.Filter):
    def __init__(self, patterns: Tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


@contextlib.contextmanager
def drop_root_messages(*patterns: str) -> Iterator[None]:
    """Inside the block, root-logger records matching any of ``patterns`` (regexes) are
    dropped: third-party notices logged with ``logging.warning`` that a tool has answered."""
    notice = _DropMessages(patterns)
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def random_weights_expected() -> ContextManager[None]:
    """Drop open_clip's warning that a model is randomly initialised: for tools that build
    random-weight models on purpose (the benchmark builds a dozen) and say so themselves."""
    return drop_root_messages(r'^No pretrained weights loaded for model')


#: ONNX Runtime's advice for static quantization of convolutional graphs, logged for every
#: graph: the int8 export quantizes matrix products dynamically (README "Deploy").
QUANTIZATION_ADVICE = r'^Please consider to run pre-processing before quantization'
