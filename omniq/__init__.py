"""OmniQ."""
