"""The shared kernel: what the ingress and the deployments both need.

Settings, errors, the page model, documents, formats, geometry and the rule that picks
an OCR engine. Modules here import each other and libraries, never `serve_app`'s HTTP
side nor `deployments` (tests/unit/test_imports.py holds them to it).
"""
