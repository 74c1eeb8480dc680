"""Deployments of a fleet (docs/fleet.md): the Docker Swarm stack (`swarm`) and the Kubernetes
manifests (`k8s`). Pure generators: they read the fleet model and never a secret value, Docker or
the network; the commands layer gives them what they need (image tags, secret versions)."""
