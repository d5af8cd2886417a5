"""brsm: backup and restore for Nebula Graph clusters."""

__version__ = "0.1.0"
