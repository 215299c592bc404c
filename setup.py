#!/usr/bin/env python
# Copyright (c) mmpsearch contributors. All rights reserved.
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    scope: dict = {}
    with open('mmpsearch/version.py', encoding='utf-8') as f:
        exec(compile(f.read(), 'mmpsearch/version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Read a requirements file, following ``-r`` includes."""
    reqs = []
    with open(fname, encoding='utf-8') as f:
        for line in f:
            line = line.split('#')[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(
                    osp.join(osp.dirname(fname), line[3:].strip()))
            else:
                reqs.append(line)
    return reqs


def add_mim_extension() -> None:
    """Expose tools/ and configs/ inside the package as ``mmpsearch/.mim``,
    which is how ``mim train mmpsearch CONFIG`` finds them.

    Editable installs get symlinks, normal installs get copies.
    """
    if 'develop' in sys.argv or any('editable' in a for a in sys.argv):
        mode = 'symlink'
    elif 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        mode = 'copy'
    else:
        mode = 'symlink'
    repo = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(repo, 'mmpsearch', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in [
            'tools', 'configs', 'demo', 'requirements', 'setup.py',
            'model-index.yml'
    ]:
        src = osp.join(repo, name)
        tar = osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.islink(tar) or osp.isfile(tar):
            os.remove(tar)
        elif osp.isdir(tar):
            shutil.rmtree(tar)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, osp.dirname(tar)), tar)
        else:
            if osp.isdir(src):
                shutil.copytree(src, tar)
            else:
                shutil.copyfile(src, tar)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmpsearch',
        version=get_version(),
        description='Diffusion-based person search (PSDiff, DiffPS) '
        'for OpenMMLab',
        long_description=readme(),
        long_description_content_type='text/markdown',
        keywords='person search, re-identification, detection, diffusion',
        packages=find_packages(
            exclude=('configs', 'configs.*', 'tools', 'tools.*', 'demo',
                     'demo.*', 'tests', 'tests.*')),
        include_package_data=True,
        python_requires='>=3.10',
        license='Apache License 2.0',
        install_requires=parse_requirements('requirements/runtime.txt'),
        extras_require={
            'tests': parse_requirements('requirements/tests.txt'),
            'mim': parse_requirements('requirements/mminstall.txt'),
            'optional': parse_requirements('requirements/optional.txt'),
        },
        zip_safe=False)
