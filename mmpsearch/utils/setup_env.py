# Copyright (c) mmpsearch contributors. All rights reserved.
import datetime
import warnings

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Register all modules of mmpsearch (and mmdet's) into the registries.

    Nothing else of mmengine changes: safe checkpoint loading is an explicit
    call of the entry points
    (:func:`~mmpsearch.utils.safe_load.safe_checkpoint_loading`).

    Args:
        init_default_scope (bool): Whether to set the default scope to
            ``mmpsearch``, so that ``type='X'`` in a config resolves our
            registries first and mmdet's / mmengine's next.
    """
    from mmdet.utils import register_all_modules as register_mmdet_modules

    # mmdet's registration imports its modules and, with True, would set
    # the default scope to 'mmdet'; we set ours below instead.
    register_mmdet_modules(init_default_scope=False)

    import mmpsearch.datasets  # noqa: F401,F403
    import mmpsearch.engine  # noqa: F401,F403
    import mmpsearch.evaluation  # noqa: F401,F403
    import mmpsearch.models  # noqa: F401,F403
    import mmpsearch.visualization  # noqa: F401,F403

    if init_default_scope:
        never_created = DefaultScope.get_current_instance() is None \
            or not DefaultScope.check_instance_created('mmpsearch')
        if never_created:
            DefaultScope.get_instance('mmpsearch', scope_name='mmpsearch')
            return
        current_scope = DefaultScope.get_current_instance()
        if current_scope.scope_name != 'mmpsearch':
            warnings.warn('The current default scope '
                          f'"{current_scope.scope_name}" is not "mmpsearch", '
                          '`register_all_modules` will force the current '
                          'default scope to be "mmpsearch".')
            # avoid name conflicts with existing scope instances
            new_instance_name = f'mmpsearch-{datetime.datetime.now()}'
            DefaultScope.get_instance(
                new_instance_name, scope_name='mmpsearch')
