"""Traffic telemetry: each connection's byte and packet counters sampled on the network
(edge agents, the in-process drivers), kept as a time series, and answered as bits per
second with peak, 95th percentile and utilisation (docs/network.md, "Traffic")."""
