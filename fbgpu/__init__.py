"""fbgpu: full-band volume-price stock selection on GPU and CPU.

Layers import only downward: ``data`` -> ``engine`` -> ``factors`` -> ``panel`` -> ``evaluate``
-> ``models`` -> ``portfolio`` -> ``report``, with ``cli`` and ``pipeline`` on top.
"""

__version__ = "0.1.0"
