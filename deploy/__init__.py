"""Deployment: the files that describe the product's images, compose replicas and Kubernetes objects, and
beside them the renderers that build or fill them (`image`, `compose`, `manifests`). They import the
runtime (ops/) and the build steps (tools/); nothing in the runtime imports them.
"""
