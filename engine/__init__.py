"""gridctl engine package."""
