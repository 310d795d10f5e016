"""Internet On-Demand: connections and bandwidth on demand, executed for real."""

__version__ = "0.1.0"
