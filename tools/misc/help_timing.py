# Copyright (c) mmpsearch contributors. All rights reserved.
"""Print the wall time of ``--help`` of every Python tool, each in a fresh
interpreter, and whether it imported torch before answering::

    python tools/misc/help_timing.py [--repeat 3]

The tools are every ``tools/**/*.py`` and ``demo/*.py``: each parses its
arguments before it imports torch / mmcv / mmdet / mmengine's runner (the
parser comes from the light :mod:`mmpsearch.utils.cli_args`), so that
``--help`` (and a usage error) answers in well under 2 s.
tests/test_tools/test_help_is_light.py checks the imports, untimed; this
script is the stopwatch.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Run a tool's ``--help`` in this interpreter and report whether torch was
#: imported (the same probe as tests/test_tools/test_help_is_light.py).
PROBE = '''\
import runpy, sys
sys.argv = [sys.argv[1], '--help']
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit:
    pass
sys.stdout.flush()
print('\\ntorch imported:', 'torch' in sys.modules)
'''


def tools() -> list:
    """Repository-relative paths of every Python tool."""
    files = sorted((REPO / 'tools').rglob('*.py')) + sorted(
        (REPO / 'demo').glob('*.py'))
    return [p.relative_to(REPO).as_posix() for p in files]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Print the --help wall time of every Python tool.')
    parser.add_argument(
        '--repeat',
        type=int,
        default=3,
        help='runs per tool; the fastest is printed (the first run of a '
        'tool also pays for a cold file cache)')
    parser.add_argument(
        '--limit',
        type=float,
        default=2.0,
        help='seconds; a tool slower than this is marked SLOW and the '
        'script exits with 1')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO),
                                         env.get('PYTHONPATH',
                                                 '')]).rstrip(os.pathsep)
    slow = 0
    names = tools()
    width = max(len(n) for n in names)
    print(f'{"tool":<{width}} {"--help (s)":>10}  torch imported')
    for rel in names:
        best, torch_loaded = float('inf'), None
        for _ in range(max(args.repeat, 1)):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, '-c', PROBE, rel],
                                  cwd=REPO,
                                  env=env,
                                  capture_output=True,
                                  text=True)
            best = min(best, time.perf_counter() - start)
            torch_loaded = 'torch imported: True' in proc.stdout
        mark = ''
        if proc.returncode != 0 or 'usage:' not in proc.stdout:
            mark = '  FAILED: ' + (proc.stderr.strip().splitlines()
                                   or ['no usage printed'])[-1]
            slow += 1
        elif best > args.limit:
            mark = '  SLOW'
            slow += 1
        print(f'{rel:<{width}} {best:10.2f}  '
              f'{"yes" if torch_loaded else "no"}{mark}')
    return 1 if slow else 0


if __name__ == '__main__':
    sys.exit(main())
