"""SNLI-VE: loader and accuracy."""
