"""Residency: our models' VRAM against the LLM's.

profiles.py  the profiles of config/profiles.yaml
monitors.py  what each GPU holds (NVML, a fake GPU beside Ollama, scenario replay)
policy.py    the pure policy: VRAM, profile, placements, time -> decisions
controller.py  the polling state machine and the ResidencyController deployment
"""
