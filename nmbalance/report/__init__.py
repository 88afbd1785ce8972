"""What the command line shows of a running system: status, explain,
connections, doctor. Read-only: nothing here changes the kernel."""
