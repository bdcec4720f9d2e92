"""VCR: loader, object-reference rendering, Q->A / QA->R / Q->AR."""
