"""VoxelPrompt: a vision-language agent for 3D brain MRI and CT, and the study pipeline around it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voxelprompt")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
