"""Engines, grouped by capability: ocr/, segmentation/, embedding/, rerank/.

Every engine is built the same way, `Engine(spec, settings, device)`: its catalog entry,
the service settings and the device it starts on ("cpu" or "cuda"); every engine can
`move(device)`. Each capability's `__init__` holds its registry, the one place that says
which engines exist.
"""
