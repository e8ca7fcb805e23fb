"""Closing the loop: retraining policy, champion vs challenger, probation and rollback."""
