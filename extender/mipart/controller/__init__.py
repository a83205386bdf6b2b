"""``mipart-controller``: the QoS queue (releases gated pods in class order when they fit)."""
