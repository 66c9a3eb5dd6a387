"""Models: a framework-free spec (`spec`), a registry (`zoo`), builders (`keras`, `torch`) and
weight transfer between them (`transfer`)."""
