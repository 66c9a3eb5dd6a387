"""Training techniques, one module each: its config check, its numpy reference and its realisation in
each framework, which the engines call (clsf.techniques.class_weights first; see docs/architecture.md)."""
