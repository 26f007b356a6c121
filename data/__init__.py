"""gridctl data package."""
