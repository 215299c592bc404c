# Copyright (c) mmpsearch contributors. All rights reserved.
import os
import subprocess
import sys

PROBE = '''\
import matplotlib
before = matplotlib.get_backend()
from mmpsearch.visualization.pyplot import headless_pyplot
plt = headless_pyplot()
import matplotlib.pyplot
assert plt is matplotlib.pyplot
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
print(before, matplotlib.get_backend())
'''


def test_headless_pyplot_uses_agg():
    # a user's MPLBACKEND (here svg) is replaced: the tools write PNG files
    proc = subprocess.run([sys.executable, '-c', PROBE],
                          env=dict(os.environ, MPLBACKEND='svg'),
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.lower().split() == ['svg', 'agg']
