"""ocr-graph's HTTP side: settings, contract, validation, composition. Never imports torch."""
