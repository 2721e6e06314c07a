"""Measuring memory: LoCoMo evidence recall of the search the agent uses, and question answering."""
