"""Build and run tooling for developers (`make` calls these); not imported by the product."""
