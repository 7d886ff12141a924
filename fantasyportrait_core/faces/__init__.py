"""Faces: the released detector, 222 landmarks and their smoother, multi-face tracking with stable ids, and the
224x224 alignment the motion encoder sees."""
