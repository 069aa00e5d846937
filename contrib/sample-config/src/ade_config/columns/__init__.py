"""Column definitions; each module here has a register(registry) function."""
