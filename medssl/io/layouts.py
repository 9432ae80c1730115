"""Dataset layouts (filled by medssl.io.layouts)."""
