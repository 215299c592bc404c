# Copyright (c) mmpsearch contributors. All rights reserved.
"""Loading pretrained weights that must fit exactly."""
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info

from mmpsearch.registry import WEIGHT_INITIALIZERS


@WEIGHT_INITIALIZERS.register_module(name='StrictPretrained')
class StrictPretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` init with ``strict=True``.

    mmengine loads ``init_cfg=dict(type='Pretrained', ...)`` non-strictly:
    a checkpoint of another width only logs its size mismatches, and the
    module silently keeps its random weights. Where the weights are part of
    the recipe (the synthetic PSDiff backbone starts from the ReID teacher's
    backbone), a missing, unexpected or mis-shaped key is an error instead.
    Checkpoints go through mmengine's loader, i.e. mmpsearch's safe one.

    Args: as ``PretrainedInit`` (``checkpoint``, ``prefix``,
    ``map_location``).
    """

    def __call__(self, module) -> None:
        from mmengine.runner.checkpoint import (_load_checkpoint_with_prefix,
                                                load_checkpoint,
                                                load_state_dict)
        where = f' {self.prefix} in' if self.prefix else ''
        print_log(f'load{where} model from: {self.checkpoint} (strict)',
                  logger='current')
        try:
            if self.prefix is None:
                load_checkpoint(module, self.checkpoint,
                                map_location=self.map_location, strict=True,
                                logger='current')
            else:
                state_dict = _load_checkpoint_with_prefix(
                    self.prefix, self.checkpoint,
                    map_location=self.map_location)
                load_state_dict(module, state_dict, strict=True,
                                logger='current')
        except RuntimeError as err:
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            more = len(lines) - 6
            detail = '\n'.join(lines[:6])
            if more > 0:
                detail += f'\n... ({more} more)'

            raise RuntimeError(
                f'init_cfg StrictPretrained: {self.checkpoint}'
                f'{" (prefix " + self.prefix + ")" if self.prefix else ""} '
                f'does not fit {type(module).__name__}:\n{detail}') from None
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
