"""gridctl configs package."""
