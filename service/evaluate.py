"""``python -m service.evaluate``: kept because the shipped model cards and the README record it; the
command is ``service.offline.evaluate``, which the server never imports."""

from __future__ import annotations

if __name__ == "__main__":
    from service.offline.evaluate import main

    main()
