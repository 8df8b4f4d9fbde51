"""nerfstudio DataParsers. ``specs`` is the entry-point leaf module (imports no other plugin module)."""
