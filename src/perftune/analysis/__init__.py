"""Answers to the research questions: RQ1 effects, RQ2 savings."""
