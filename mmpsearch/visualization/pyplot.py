# Copyright (c) mmpsearch contributors. All rights reserved.
"""matplotlib for the tools that write plots."""
from types import ModuleType


def headless_pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend: the tools write PNG files
    and need no display (on a server or in CI an interactive backend may
    not start)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt
