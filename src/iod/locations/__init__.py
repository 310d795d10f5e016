"""The location catalog: buildings, their port capacity and the tiers they offer."""
