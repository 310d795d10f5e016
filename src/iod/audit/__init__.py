"""The audit log: who changed what, when and from where (`service`, `repository`, and the
events subscriber that records the connections' changes, `subscribers`)."""
