"""Does the output follow its driver? The motion check: the output's faces and their drivers through the pack's own
face pipeline, then per-person errors of head pose, eyes and expression (on motion relative to the first frame, so
identity does not count), mouth-opening correlation, jitter, the best time offset, the leakage matrix between faces
and drivers, and, against a self-reenactment reference, the paper's landmark distance with PSNR and SSIM.

Modules along the data flow: ``motion`` (per-face numbers), ``reference`` (ground-truth scores), ``identity``
(ArcFace similarity), ``report`` (matching faces to drivers, the report and its text), ``clips`` (files and frames
in, report out), ``plot`` (the report's picture)."""
