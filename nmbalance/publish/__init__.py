"""What the daemon tells the world: hooks, mail, systemd."""
