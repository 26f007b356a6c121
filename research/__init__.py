"""gridctl research package."""
