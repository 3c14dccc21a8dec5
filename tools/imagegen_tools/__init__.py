"""imagegen_tools: build tools of the repository, run from a checkout (`make crds`, `make lint`)
and never shipped in the wheel.

crdgen.py   crds/*.yaml and manifests/install/crds/*.yaml from the spec models (imagegen_api.specs)
docgen.py   docs/reference.md, the field reference, from the same CRDs

Both take the repository root as --root (default: the current directory) or explicit outputs.
"""
