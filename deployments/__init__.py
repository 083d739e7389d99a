"""The Ray Serve side: one module per model deployment and what they share.

ocr.py, segmentation.py, embedding.py, rerank.py  the deployments, one class each
replica.py    the base of every model replica: device, GPU cap, placement, report
models.py     the model catalog (config/models.yaml) and where each model's weights are
engines/      the engines the deployments run, grouped by capability, one registry each
residency/    VRAM against the LLM: profiles, monitors, the policy, the controller
"""
