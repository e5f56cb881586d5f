"""MetaSegNet: metadata-collaborative vision-language segmentation of remote-sensing tiles.

The package root stays light: importing `metaseg` must not import torch. Heavy modules
(`metaseg.models`, `metaseg.inference`) are imported where they are used.
"""

__version__ = "0.1.0"
