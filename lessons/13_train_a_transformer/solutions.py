"""Lesson 13 reference solutions: Adam, a finite-difference gradient check, per-position loss.

The reference implementations are minillm's own, in minillm/course/training.py (read them
there): the lesson's training loop falls back to them while an exercise is unsolved, also
in a student's handout, which has no solutions.py.
"""

from minillm.course.training import adam_step, finite_difference, per_position_loss

__all__ = ["adam_step", "finite_difference", "per_position_loss"]
