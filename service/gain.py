"""``python -m service.gain``: kept because the shipped model cards and the README record it; the
command is ``service.offline.gain_fit``, which the server never imports."""

from __future__ import annotations

if __name__ == "__main__":
    from service.offline.gain_fit import main

    main()
