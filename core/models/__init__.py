"""Model bundles: manifests, shared backbones, preprocessing, registry and loading."""
