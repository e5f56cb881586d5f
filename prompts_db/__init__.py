"""prompts_db package."""
