"""gridctl live_bridge package."""
