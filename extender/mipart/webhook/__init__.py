"""mipart-webhook, the admission webhook: turns mipart.io annotations into the pod changes."""
