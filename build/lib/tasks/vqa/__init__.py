"""VQA v2: loader, answer vocabulary, official accuracy."""
