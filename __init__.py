"""gridctl: research platform and live bridge for hedge-grid trading on crypto perpetual futures.

The repository's top-level folders are this package's sub-packages once installed: ``gridctl.configs``,
``gridctl.data``, ``gridctl.engine``, ``gridctl.research``, ``gridctl.live_bridge`` and the command line
``gridctl.cli``. Nothing is imported here, so ``import gridctl`` costs nothing.
"""

__version__ = "0.1.0"
