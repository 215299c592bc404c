# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's test and train settings, typed: the keys of ``model.test_cfg``
and ``model.train_cfg``, their defaults and their checks, written once.

The configs keep plain dicts (mmengine merges ``--cfg-options`` into
dicts); :class:`PSDiffHead` fills in the defaults from here, checks a dict
with :meth:`PSDiffTestSettings.from_cfg`, and the config-key checker
(``mmpsearch.utils.cfg_signature``) reads the key names from here through
``PSDiffHead.CFG_KEYS``.
"""
import difflib
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

from mmpsearch.diffusion import DDIMSampler, DiffusionSampler
from mmpsearch.registry import TASK_UTILS
from mmpsearch.utils.cfg_signature import ConfigKeyError
from mmpsearch.utils.thresholds import check_cfg_thresholds


def _refuse_unknown_keys(cfg: Mapping[str, Any], known: Tuple[str, ...],
                         owner: str) -> None:
    """ConfigKeyError naming every key of ``cfg`` not in ``known``, the
    closest known key of each, and the known keys."""
    unknown = sorted(str(k) for k in cfg if k not in known)
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(
            f'{key!r} (did you mean {close[0]!r}?)' if close else repr(key))
    raise ConfigKeyError(
        f'{owner} has unknown key{"s" if len(unknown) > 1 else ""} '
        f'{", ".join(parts)}; known: {sorted(known)}')


class _Settings:
    """What the two settings classes share: key names, defaults as a dict,
    and ``from_cfg``."""

    #: Where the dict is given in a config, for the messages.
    OWNER: ClassVar[str] = ''

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The keys of the config dict, in the order of the fields."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """The defaults as a new dict (nested dicts new too)."""
        default = cls()
        return {key: getattr(default, key) for key in cls.keys()}

    @classmethod
    def from_cfg(cls, cfg: Optional[Mapping[str, Any]]):
        """From a config dict (missing keys take their defaults); an unknown
        key is a :class:`ConfigKeyError` naming it, the closest known key
        and the known ones, a bad value the error of the field's check
        (``__post_init__``)."""
        cfg = dict(cfg or {})
        _refuse_unknown_keys(cfg, cls.keys(), cls.OWNER)
        return cls(**cfg)


def _whole_number(value: Any, name: str, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(
            value, (int, float)) or value != int(value) or value < 1:
        raise ValueError(f'{name} must be a whole number >= 1, got '
                         f'{value!r}')


@dataclass
class PSDiffTestSettings(_Settings):
    """``model.test_cfg`` of :class:`PSDiffHead` (PSDiff's Alg. 2 and the
    post-processing): the keys, their defaults (what ``test_cfg`` holds when
    the config says nothing) and their checks.

    Built from a dict with :meth:`from_cfg`; the values are checked as they
    are given (a whole float such as ``2.0`` stays a float), not converted.
    """

    #: N_test, the random proposals per image. None: the head's
    #: ``diffusion.num_proposals`` (N_test = N_train). A whole number >= 1.
    num_proposals: Optional[int] = None
    #: k, the sampling steps (between 1 and T). A whole number >= 1.
    sampling_steps: int = 8
    #: CDL passes per sampling step, chained as in training. None: as many
    #: as ``train_cfg.num_passes``. A whole number >= 1 or None.
    num_passes: Optional[int] = None
    #: The reverse-process sampler: a registered
    #: :class:`~mmpsearch.diffusion.DiffusionSampler` by name (``'ddim'``,
    #: ``'dpm-solver++'``...) or class, or a dict with its ``type`` and
    #: options.
    sampler: Union[str, type, dict] = field(
        default_factory=lambda: dict(type=DDIMSampler, eta=1.0))
    #: Each image's noise is drawn from a generator seeded from ``seed`` and
    #: its ``img_id``; None: torch's global generator.
    seed: Optional[int] = 0
    #: Detections scoring below it are dropped. A number in [0, 1].
    score_thr: float = 0.5
    #: torchvision's batched NMS, ``dict(type='nms', iou_threshold=...)``
    #: (the threshold in [0, 1]), or None for no NMS.
    nms: Optional[dict] = field(
        default_factory=lambda: dict(type='nms', iou_threshold=0.5))
    #: The most detections kept per image.
    max_per_img: int = 100
    #: DiffusionDet's box renewal: proposals scoring below ``renewal_thr``
    #: restart from noise after each step (DDIM only).
    box_renewal: bool = False
    #: The score below which a proposal is renewed. A number in [0, 1].
    renewal_thr: float = 0.5
    #: Merge the predictions of every step before the NMS (DiffusionDet's
    #: step ensembling); False: the last step's only.
    use_ensemble: bool = False

    OWNER: ClassVar[str] = 'model.test_cfg'

    def __post_init__(self) -> None:
        """Refuse values that would silently run something else: a proposal
        or step count that is not a positive whole number (``int(2.5)``
        would quietly run 2 steps), a sampler that is not a registered
        diffusion sampler, a threshold outside [0, 1] (NaN or 5 would drop,
        or keep, every box and print zeros), an NMS other than
        torchvision's."""
        owner = self.OWNER
        _whole_number(
            self.num_proposals, f'{owner}.num_proposals', allow_none=True)
        _whole_number(self.sampling_steps, f'{owner}.sampling_steps')
        _whole_number(self.num_passes, f'{owner}.num_passes', allow_none=True)
        sampler = self.sampler
        kind = sampler if isinstance(sampler, str) else (
            sampler.get('type') if isinstance(sampler, dict) else None)
        cls = TASK_UTILS.get(kind) if isinstance(kind, str) else kind
        if not (isinstance(cls, type) and issubclass(cls, DiffusionSampler)):
            known = sorted(
                k for k, v in TASK_UTILS.module_dict.items()
                if isinstance(v, type) and issubclass(v, DiffusionSampler))
            raise KeyError(f'{owner}.sampler {sampler!r} is not a '
                           f'diffusion sampler; known: {known}')
        # score_thr, nms.iou_threshold, renewal_thr
        check_cfg_thresholds({k: getattr(self, k) for k in self.keys()}, owner)
        nms = self.nms
        if nms is not None and (not isinstance(nms, dict) or nms.get(
                'type', 'nms') != 'nms' or 'iou_threshold' not in nms
                                or set(nms) - {'type', 'iou_threshold'}):
            raise ValueError(
                f'{owner}.nms must be None or dict(type="nms", '
                f'iou_threshold=...) (torchvision\'s batched NMS), got '
                f'{nms!r}')


def check_resolved_test_cfg(cfg: Mapping[str, Any]) -> None:
    """The check of :class:`PSDiffHead`'s live ``test_cfg`` (run when it is
    set and after every change, by
    :class:`~mmpsearch.utils.checked_config.CheckedConfigDict`): the
    checks of :class:`PSDiffTestSettings`, and ``num_proposals`` resolved
    (the head has put ``diffusion.num_proposals`` in place of None)."""
    owner = PSDiffTestSettings.OWNER
    missing = [k for k in PSDiffTestSettings.keys() if k not in cfg]
    if missing:
        raise KeyError(f'{owner} lacks {missing}: PSDiffHead reads every '
                       'key (change a value instead of removing its key)')
    PSDiffTestSettings.from_cfg(cfg)
    _whole_number(cfg['num_proposals'], f'{owner}.num_proposals')


@dataclass
class PSDiffTrainSettings(_Settings):
    """``model.train_cfg`` of :class:`PSDiffHead` (PSDiff's Alg. 1): the
    keys, their defaults and their checks."""

    #: How many times the CDL is applied per training image, each pass
    #: starting from the previous pass's (detached) boxes and embeddings at
    #: the same t, every pass scored by the criterion (DiffusionDet's
    #: cascade); 1 in the paper. >= 1.
    num_passes: int = 1

    OWNER: ClassVar[str] = 'model.train_cfg'

    def __post_init__(self) -> None:
        if int(self.num_passes) < 1:
            raise ValueError(f'{self.OWNER}.num_passes must be >= 1, got '
                             f'{self.num_passes}')
