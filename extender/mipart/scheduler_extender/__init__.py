"""mipart-extender, the kube-scheduler extender: filter, prioritize, bind and preempt."""
