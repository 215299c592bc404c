# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff's diffusion settings, read by the noise transform and the model."""
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Tuple


@dataclass(frozen=True)
class DiffusionSettings:
    """The settings the training-time noising (PSDiff eq. 10, the
    ``DualNoiseGenerator`` transform) and the sampling (Alg. 2, the
    ``PSDiffHead``) must share.

    Written once in a config (the ``diffusion`` dict of
    ``configs/_base_/models/psdiff_r50_fpn.py``) and given to both, so the
    pipeline and the model cannot disagree unless a leaf overrides one of
    them alone.

    Args:
        num_timesteps (int): T. Defaults to 1000.
        beta_schedule (str): ``'cosine'`` (PSDiff, DiffusionDet) or
            ``'linear'``. Defaults to ``'cosine'``.
        box_snr_scale (float): s1, the signal scale of the boxes.
            Defaults to 2.0.
        embed_snr_scale (float): s2, the signal scale of the ReID
            embeddings. Defaults to 3.0.
        num_proposals (int): N_train, the noisy boxes per training image;
            also N_test unless ``test_cfg.num_proposals`` says otherwise.
            Defaults to 300.
        embed_dims (int, optional): D, the width of the ReID teacher's
            embeddings (the denoiser's ``embed_dims``). None: not checked.
    """
    num_timesteps: int = 1000
    beta_schedule: str = 'cosine'
    box_snr_scale: float = 2.0
    embed_snr_scale: float = 3.0
    num_proposals: int = 300
    embed_dims: Optional[int] = None

    def __post_init__(self) -> None:
        for key in ('num_timesteps', 'num_proposals', 'embed_dims'):
            value = getattr(self, key)
            if value is None and key == 'embed_dims':
                continue
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f'diffusion.{key} must be a whole number '
                                 f'>= 1, got {value!r}')
            object.__setattr__(self, key, int(value))
        for key in ('box_snr_scale', 'embed_snr_scale'):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not float(value) > 0:
                raise ValueError(f'diffusion.{key} must be a number > 0, '
                                 f'got {value!r}')
            object.__setattr__(self, key, float(value))

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_cfg(cls,
                 cfg: Optional[Mapping[str, Any]],
                 owner: str = 'diffusion') -> 'DiffusionSettings':
        """From a config dict; unknown keys are an error that names
        ``owner`` (where the dict was given)."""
        if isinstance(cfg, cls):
            return cfg
        cfg = dict(cfg or {})
        known = list(cls.keys())
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise KeyError(f'{owner} has unknown keys {unknown}; known: '
                           f'{known}')
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)
