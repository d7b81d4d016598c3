"""Installation of visionkd."""
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))


class BuildPyWithConfigs(build_py):
    """Also install ``configs/`` as ``visionkd/.mim/configs`` (like mmdet).

    ``_base_ = ['visionkd::kd/x.py']`` then resolves in a wheel / a
    non-editable install; an editable install or a checkout on PYTHONPATH
    reads ``configs/`` beside the package (visionkd.utils.config_scope).
    """

    def run(self) -> None:
        super().run()
        src = osp.join(HERE, 'configs')
        if self.dry_run or not osp.isdir(src):
            return
        dst = osp.join(self.build_lib, 'visionkd', '.mim', 'configs')
        if osp.isdir(dst):
            shutil.rmtree(dst)
        shutil.copytree(
            src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


def read_requirements(name: str) -> list:
    """Requirement lines of requirements/<name>.txt without comments."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(HERE, 'visionkd', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='visionkd',
    version=read_version(),
    description='Knowledge distillation for object detection and semantic '
    'segmentation on OpenMMLab 2.x (mmdet 3.x, mmseg 1.x)',
    long_description=long_description,
    long_description_content_type='text/markdown',
    author='visionkd contributors',
    license='Apache-2.0',
    keywords='knowledge distillation, object detection, semantic '
    'segmentation, mmdetection, mmsegmentation',
    packages=find_packages(
        exclude=('tests', 'tests.*', 'configs', 'configs.*', 'tools',
                 'tools.*', 'projects', 'projects.*')),
    cmdclass={'build_py': BuildPyWithConfigs},
    include_package_data=True,
    python_requires='>=3.9',
    install_requires=read_requirements('runtime'),
    extras_require={'tests': read_requirements('tests'),
                    'cluster': read_requirements('cluster')},
    classifiers=[
        'Development Status :: 3 - Alpha',
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
