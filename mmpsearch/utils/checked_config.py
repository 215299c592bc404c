# Copyright (c) mmpsearch contributors. All rights reserved.
"""Settings checked where they change, not where they are read."""
import copy
from functools import partial
from typing import Any, Callable, Optional

from mmengine.config import ConfigDict

from .thresholds import check_cfg_thresholds


def _rebuild(items: dict, check: Optional[Callable]) -> 'CheckedConfigDict':
    return CheckedConfigDict(items, check=check)


class CheckedConfigDict(ConfigDict):
    """A ``ConfigDict`` that checks itself when it is made and whenever it
    changes.

    ``check(cfg)`` runs once on the new dict (the build-time check) and
    again after every write to it or to a dict nested in it
    (``cfg.score_thr = x``, ``cfg['nms']['iou_threshold'] = y``,
    ``cfg.update(...)``, ``del cfg[k]``); a write that the check refuses is
    undone before its error is raised, so the dict never holds a value the
    model would refuse and the model need not check its settings again on
    every run. A copy (``copy``, ``deepcopy``, pickling) keeps the check.

    Args:
        *args, **kwargs: As for ``ConfigDict``.
        check (callable, optional): Raises on a value it refuses; a
            module-level function or a ``functools.partial`` of one, so that
            the dict pickles. None: a plain ``ConfigDict`` (how the nested
            dicts start, before they are attached to the checked one).
    """

    def __init__(self, *args, check: Optional[Callable] = None, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in dict.items(self):
            value = self._adopt(value)
            self._link(value, self)
            dict.__setitem__(self, key, value)
        if check is not None:
            check(self)
            object.__setattr__(self, '_check', check)

    # ------------------------------------------------------------ helpers
    @classmethod
    def _adopt(cls, value: Any) -> Any:
        """``value`` with every dict in it a :class:`CheckedConfigDict`
        (ConfigDict keeps a nested ConfigDict as it is)."""
        if isinstance(value, dict) and not isinstance(value, cls):
            return cls(dict(dict.items(value)))
        if isinstance(value, (list, tuple)):
            return type(value)(cls._adopt(v) for v in value)
        return value

    def _link(self, value: Any, root: 'CheckedConfigDict') -> None:
        """Point every dict nested in ``value`` at ``root``."""
        if isinstance(value, CheckedConfigDict):
            object.__setattr__(value, '_root', root)
            for v in dict.values(value):
                self._link(v, root)
        elif isinstance(value, (list, tuple)):
            for v in value:
                self._link(v, root)

    def _root_and_check(self):
        root = self.__dict__.get('_root') or self
        return root, root.__dict__.get('_check')

    def _checked(self, write: Callable[[], None],
                 undo: Callable[[], None]) -> None:
        root, check = self._root_and_check()
        write()
        if check is None:
            return
        try:
            check(root)
        except Exception:
            undo()
            raise

    # ------------------------------------------------------------- writes
    def __setitem__(self, name, value):
        value = self._adopt(self._hook(value))
        if '_check' not in self.__dict__ and '_root' not in self.__dict__:
            # being filled by __init__ (or not attached yet): no check
            return super().__setitem__(name, value)
        root, _ = self._root_and_check()
        self._link(value, root)
        had = dict.__contains__(self, name)
        old = dict.get(self, name)

        def undo():
            if had:
                dict.__setitem__(self, name, old)
            else:
                dict.__delitem__(self, name)

        self._checked(
            lambda: super(CheckedConfigDict, self).__setitem__(name, value),
            undo)

    def __delitem__(self, name):
        old = dict.__getitem__(self, name)
        self._checked(lambda: dict.__delitem__(self, name),
                      lambda: dict.__setitem__(self, name, old))

    def __delattr__(self, name):
        self.__delitem__(name)

    # ------------------------------------------------------------- copies
    def _plain_items(self) -> dict:
        return dict(dict.items(self))

    def __copy__(self):
        return CheckedConfigDict(
            self._plain_items(), check=self.__dict__.get('_check'))

    copy = __copy__

    def __deepcopy__(self, memo):
        return CheckedConfigDict(
            copy.deepcopy(self._plain_items(), memo),
            check=self.__dict__.get('_check'))

    def __reduce_ex__(self, proto):
        return (_rebuild, (self._plain_items(), self.__dict__.get('_check')))


def check_thresholds_when_changed(detector: Any, prefix: str) -> None:
    """Make an mmdet detector's ``test_cfg`` a :class:`CheckedConfigDict`
    that refuses a ``score_thr`` / ``iou_threshold`` outside [0, 1]
    (:func:`~mmpsearch.utils.thresholds.check_cfg_thresholds`; NaN would
    drop every detection), now and whenever a tool changes it.

    mmdet hands ``test_cfg.rpn`` / ``test_cfg.rcnn`` (or the whole
    ``test_cfg``, single-stage) to the heads as the same objects; the heads
    get the checked ones in their place, so that a change through either
    path is checked and reaches the head. A head with a ``test_cfg`` of its
    own is checked on its own.

    Args:
        detector: The detector (its ``test_cfg`` and ``rpn_head``,
            ``roi_head``, ``bbox_head``).
        prefix (str): The path of ``detector.test_cfg`` in the config, for
            the messages, e.g. ``'model.test_cfg'``.
    """
    old = getattr(detector, 'test_cfg', None)
    new = None
    if isinstance(old, dict):
        new = CheckedConfigDict(
            old, check=partial(check_cfg_thresholds, prefix=prefix))
        detector.test_cfg = new
    for name, key in (('rpn_head', 'rpn'), ('roi_head', 'rcnn'), ('bbox_head',
                                                                  None)):
        head = getattr(detector, name, None)
        cfg = getattr(head, 'test_cfg', None)
        if not isinstance(cfg, dict):
            continue
        if new is not None and key is None and cfg is old:
            head.test_cfg = new
        elif new is not None and key is not None and \
                cfg is dict.get(old, key):
            head.test_cfg = dict.__getitem__(new, key)
        else:
            path = f'{prefix}.{key}' if key else prefix
            head.test_cfg = CheckedConfigDict(
                cfg, check=partial(check_cfg_thresholds, prefix=path))
