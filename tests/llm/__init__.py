"""Small decoder LLMs (optimum text-generation-with-past exports) for the dynamic-shape
and LLM-decode tests."""
