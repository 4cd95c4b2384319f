"""The `keywatch` command line."""
