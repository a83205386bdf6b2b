"""The mipart scheduler extender, admission webhook and controller (cluster side)."""
