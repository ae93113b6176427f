"""The files under deploy/: the image run for real, the manifests checked on their schemas."""
