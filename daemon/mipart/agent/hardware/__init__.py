"""The hardware edge of the daemon: a port the partition manager drives, and its amdsmi adapter."""
