"""magtek-bridge: MagTek MMS card readers over USB-HID, bridged to MQTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("magtek-bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
