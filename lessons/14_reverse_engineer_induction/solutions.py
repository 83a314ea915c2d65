"""Lesson 14 reference solutions: find and confirm the induction circuit in a trained model.

The reference implementations are minillm's own, in minillm/course/circuits.py (read them
there): the lesson script falls back to them while an exercise is unsolved, also in a
student's handout, which has no solutions.py.
"""

from minillm.course.circuits import ablation_effect, composition_score, head_scores, k_composition

__all__ = ["ablation_effect", "composition_score", "head_scores", "k_composition"]
