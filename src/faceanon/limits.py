"""Bounds on the work and memory that an input file (image, metadata, key file) can ask for.

Every file faceanon reads may come from anyone; these limits keep a hostile file from making a
run take hours or exhaust memory. Each violation is reported as one line naming the file.
"""

from __future__ import annotations

MAX_PIXELS = 50_000_000  # images: refused before decoding (a 20000x20000 bomb is 400 MP)
MIN_DISPLAY = 0.5  # the denoised display's noise level (alpha-bar): below, a guess, not the face
MAX_COLOUR = 0.95  # the tone shift's share: its undo scales rounding by 1 / (1 - share)
MAX_STEPS = 1000  # DDIM steps (the schedules have 1000 training levels)
MAX_FACES = 1000  # faces per photo, whatever its size
MIN_FACE_AREA = 256  # and at most one face per 16x16 pixels of the photo
MAX_METADATA_CHARS = 1 << 20  # faceanon metadata JSON (a 1000-face photo needs ~400 kB)
MAX_JSON_DEPTH = 8  # the format nests 4 levels deep
MAX_SCRYPT_BYTES = 1 << 30  # passphrase keys: scrypt memory 128 * r * N (default 128 MiB)
MAX_SCRYPT_P = 4  # and parallel passes (time grows linearly with p)
