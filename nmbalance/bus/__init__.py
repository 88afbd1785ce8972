"""D-Bus: talking to NetworkManager and networkd, and our own exported service."""
